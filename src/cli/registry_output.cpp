// How `eventq tail` shows registry rows (eventq/registry.h).
#include "output.h"

namespace eventq::cli {

namespace {
// Instance names come from the table: control characters are shown escaped.
std::string escaped(std::string_view s) {
  static const char hex[] = "0123456789abcdef";
  std::string out;
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += ch;
    }
  }
  return out;
}
}  // namespace

std::string registry_line(const event_record& e, const event_notification& n) {
  // The parameter as JSON with non-ASCII escaped: one line, nothing a terminal interprets.
  return std::to_string(e.id) + ' ' + iso_time(e.created) + " event " + n.event_id.to_string() +
         " raiser " + n.raiser_id.to_string() + " param " +
         n.param.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace) + " from " +
         escaped(e.instance) + " (" + std::string(to_string(e.mode)) + ")";
}

void add_registry_fields(nlohmann::json& j, const event_notification& n) {
  j["event_id"] = n.event_id.to_string();
  j["raiser_id"] = n.raiser_id.to_string();
  j["param"] = n.param;
}

}  // namespace eventq::cli
