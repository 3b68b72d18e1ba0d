// How `eventq tail` shows registry rows (eventq/registry.h).
#include "output.h"

namespace eventq::cli {

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
