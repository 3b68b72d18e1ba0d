// Small helpers shared by the core and the backends.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace eventq::detail {

/// "YYYY-MM-DD HH:MM:SS.mmm", UTC: the Created format on SQLite (same as SQLite's
/// strftime('%Y-%m-%d %H:%M:%f')), sortable as text.
std::string format_utc(std::chrono::system_clock::time_point t);

/// Parses format_utc's output (fractional digits optional, 'T' accepted for ' '); nullopt
/// also for years outside 1678..2261, which system_clock cannot hold.
std::optional<std::chrono::system_clock::time_point> parse_utc(std::string_view text);

/// Parses a whole decimal int64; nullopt on anything else (sign, spaces, overflow included).
std::optional<std::int64_t> parse_int64(std::string_view text);

/// The smallest text above every text that starts with `prefix`, bytewise (SQLite's BINARY
/// collation, PostgreSQL's "C"): its last byte incremented ("media." -> "media/"). "" when the
/// last byte is not ASCII below 0x7f (the result might be no UTF-8): read such a prefix unfiltered.
std::string prefix_end(std::string_view prefix);

/// The Properties key of an instance's cursor: "EQStamp_<instance>".
std::string cursor_key(std::string_view instance);

/// How the value of a cursor that cleanup removed starts: cleanup replaces the cursor of an
/// instance dead for longer than the hard maximum age by "removed;at=<UTC time>", so that the
/// instance, if it comes back, knows it missed events (it reports Missed and reads from the
/// oldest retained event) instead of starting over as a new instance would.
inline constexpr std::string_view k_removed_cursor = "removed;at=";

/// The message of errc::instance_name_in_use: who holds the name, how long until its lease
/// expires (`expires_in_s`, by the database's clock) and what to do.
std::string name_in_use_message(std::string_view name, std::string_view host, std::int64_t pid,
                                std::string_view heartbeat, std::string_view lease_until,
                                double expires_in_s);

}  // namespace eventq::detail

namespace eventq {
struct metrics;
}

namespace eventq::detail {

/// A queue's counters as a compact JSON object (EventQueueInstances.Counters), and back;
/// nullopt for text that is not such an object (a row edited by hand).
std::string metrics_to_text(const metrics& m);
/// The message of errc::instance_not_live.
std::string not_live_message(std::string_view instance);
std::optional<metrics> metrics_from_text(std::string_view text);

}  // namespace eventq::detail
