// How the eventq command prints what the library returns: tables, JSON, Prometheus text.
#pragma once

#include <chrono>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "eventq/eventq.h"

namespace eventq::cli {

/// "2026-01-31T12:00:00.123Z", or "-" for nullopt.
std::string iso_time(std::optional<std::chrono::system_clock::time_point> t);

/// `s` safe for a terminal: control characters (C0, DEL, C1) and bytes that are not UTF-8
/// written as \xNN, a backslash as \\; printable UTF-8 kept.
std::string escaped(std::string_view s);

/// One event: a readable line (texts escaped), or a JSON object (dump it with
/// error_handler_t::replace: stored text need not be UTF-8). With `refusal`, the row is one
/// instances refuse: the line starts with "REFUSED (verdict: reason)", the object has
/// "verdict" and "reason" ("verdict": "ok" otherwise).
std::string event_line(const event_record& e, const std::optional<rejected_row>& refusal = {});
nlohmann::json event_json(const event_record& e, const std::optional<rejected_row>& refusal = {});

/// A registry row (eventq/registry.h): the line shows event id, raiser id and parameter; the
/// JSON object gets "event_id", "raiser_id" and "param" added.
std::string registry_line(const event_record& e, const event_notification& n);
void add_registry_fields(nlohmann::json& j, const event_notification& n);

nlohmann::json instance_json(const instance_info& i);
nlohmann::json stats_json(std::string_view backend, const queue_summary& s,
                          const std::vector<instance_info>& instances);

void print_instances_table(std::ostream& out, const std::vector<instance_info>& instances);
void print_stats_table(std::ostream& out, std::string_view backend, const queue_summary& s,
                       const std::vector<instance_info>& instances);

}  // namespace eventq::cli
