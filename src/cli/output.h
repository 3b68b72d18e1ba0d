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

/// One event: a readable line, or a JSON object.
std::string event_line(const event_record& e);
nlohmann::json event_json(const event_record& e);

nlohmann::json instance_json(const instance_info& i);
nlohmann::json stats_json(std::string_view backend, const queue_summary& s,
                          const std::vector<instance_info>& instances);

void print_instances_table(std::ostream& out, const std::vector<instance_info>& instances);
void print_stats_table(std::ostream& out, std::string_view backend, const queue_summary& s,
                       const std::vector<instance_info>& instances);

}  // namespace eventq::cli
