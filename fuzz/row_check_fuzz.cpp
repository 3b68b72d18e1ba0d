// libFuzzer target over what the poller does with a stored row: detail::check_row (size check,
// HMAC verification, name and payload checks, JSON parsing), the very function queue.cpp calls.
//
// Input layout: byte 0 picks the flags and whether to sign the row correctly (so that inputs
// also reach the decoder behind the signature check); the rest is split at the first three
// 0x1f bytes into event type, instance name and payload; what follows a fourth one is used as
// the stored signature. Built and run by scripts/fuzz.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "row_check.h"

namespace {

const eventq::detail::keyring& keys() {
  static const eventq::detail::keyring k{
      eventq::signing_key{"1", "fuzzing secret, 32 bytes long..."},
      {eventq::signing_key{"old", "an older secret, still accepted", {}}}};
  return k;
}

std::string_view next_field(std::string_view& rest) {
  auto sep = rest.find('\x1f');
  auto field = rest.substr(0, sep);
  rest = sep == std::string_view::npos ? std::string_view() : rest.substr(sep + 1);
  return field;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  if (size == 0) return 0;
  std::string_view in(reinterpret_cast<const char*>(bytes), size);
  const auto control = static_cast<unsigned char>(in[0]);
  in.remove_prefix(1);
  eventq::event_record row;
  row.id = 1;
  row.type = next_field(in);
  row.instance = next_field(in);
  row.data = next_field(in);
  row.signature = next_field(in);
  row.mode = static_cast<eventq::raise_mode>(control % 3);
  row.created = std::chrono::system_clock::time_point(std::chrono::milliseconds(control * 7919));
  switch ((control >> 2) % 4) {
    case 0:  // correctly signed: exercises the decoder
      row.key_id = "1";
      row.signature = eventq::sign(row, keys().signer);
      break;
    case 1:  // an expired older key
      row.key_id = "old";
      break;
    case 2:  // the signature from the input
      row.key_id = "1";
      break;
    default:  // unsigned, or an unknown key id
      row.key_id = (control & 0x40) ? std::string(row.signature.substr(0, 8)) : std::string();
      break;
  }
  eventq::detail::row_check_policy policy{&keys(), eventq::verify_mode::required, 64 * 1024,
                                          std::chrono::system_clock::now()};
  auto out = eventq::detail::check_row(row, policy);
  if (out.verdict == eventq::detail::row_verdict::ok) {
    if (!out.data.is_object() || !out.reason.empty()) std::abort();
    if (!eventq::detail::valid_utf8(out.data.dump())) std::abort();
  } else {
    if (out.reason.empty()) std::abort();
    for (unsigned char c : out.reason) {
      if (c < 0x20 || c >= 0x7f) std::abort();  // reasons go to logs: printable only
    }
  }
  return 0;
}
