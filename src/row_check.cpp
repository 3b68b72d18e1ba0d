#include "row_check.h"

#include "util.h"
#include "validation.h"

namespace eventq::detail {

const signing_key* keyring::find(std::string_view id) const {
  if (signer.id == id) return &signer;
  for (const auto& k : accepted) {
    if (k.id == id) return &k;
  }
  return nullptr;
}

std::string_view to_string(row_verdict v) noexcept {
  switch (v) {
    case row_verdict::ok:
      return "ok";
    case row_verdict::oversized:
      return "oversized";
    case row_verdict::unauthentic:
      return "unauthentic";
    case row_verdict::malformed:
      return "malformed";
  }
  return "unknown";
}

bool valid_utf8(std::string_view s) noexcept {
  std::size_t i = 0;
  const std::size_t n = s.size();
  while (i < n) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len;
    std::uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) {
      len = 2;
      cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3;
      cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (n - i < len) return false;
    for (std::size_t k = 1; k < len; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += len;
  }
  return true;
}

std::string printable(std::string_view s, std::size_t max) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < s.size() && i < max; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c >= 0x7f || c == '\\') {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > max) out += "...";
  return out;
}

namespace {

checked_row refuse(row_verdict v, std::string reason) {
  checked_row out;
  out.verdict = v;
  out.reason = std::move(reason);
  return out;
}

std::string verify_problem(const event_record& row, const row_check_policy& p) {
  if (row.key_id.empty() || row.signature.empty()) {
    return "unsigned (KeyId or Signature is empty or NULL)";
  }
  const signing_key* key = p.keys ? p.keys->find(row.key_id) : nullptr;
  if (!key) return "signed with unknown key id '" + printable(row.key_id, 64) + "'";
  if (key != &p.keys->signer && p.now >= key->accept_until) {
    return "signed with key '" + key->id + "', which was accepted only until " +
           format_utc(key->accept_until) + " UTC";
  }
  if (!signature_matches(row.signature, hmac_sha256(key->secret, canonical_form(row, key->id)))) {
    return "signature does not match its contents under key '" + key->id +
           "' (forged or altered row, or instances that disagree on this key's secret)";
  }
  return {};
}

}  // namespace

checked_row check_row(const event_record& row, const row_check_policy& p) {
  if (row.data.size() > p.max_payload_bytes) {
    return refuse(row_verdict::oversized,
                  "payload is " + std::to_string(row.data.size()) + " bytes; the limit is " +
                      std::to_string(p.max_payload_bytes) + " (options::max_payload_bytes)");
  }
  if (p.verify == verify_mode::required) {
    auto problem = verify_problem(row, p);
    if (!problem.empty()) return refuse(row_verdict::unauthentic, std::move(problem));
  }
  for (auto problem :
       {name_problem("event type", row.type), name_problem("instance name", row.instance)}) {
    if (!problem.empty()) return refuse(row_verdict::malformed, std::move(problem));
  }
  // JSON text never holds a raw NUL, and a parser that stops at one would hand handlers
  // less than what was signed.
  if (row.data.find('\0') != std::string::npos) {
    return refuse(row_verdict::malformed, "payload contains a NUL byte");
  }
  checked_row out;
  try {
    out.data = nlohmann::json::parse(row.data);
  } catch (const nlohmann::json::exception& e) {
    return refuse(row_verdict::malformed, "payload is not valid JSON: " + printable(e.what(), 200));
  }
  if (!out.data.is_object()) {
    return refuse(row_verdict::malformed,
                  std::string("payload is JSON but not an object: ") + out.data.type_name());
  }
  return out;
}

}  // namespace eventq::detail
