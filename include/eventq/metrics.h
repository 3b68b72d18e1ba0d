// eventq/metrics.h — counters of one queue object, read with queue::stats().
#pragma once

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <utility>
#include <vector>

namespace eventq {

/// A snapshot of a queue's counters since it was opened. Plain data.
struct metrics {
  std::uint64_t raised = 0;          ///< events written by this queue object
  std::uint64_t delivered = 0;       ///< events handed to at least one handler
  std::uint64_t handler_errors = 0;  ///< handler calls that threw
  std::uint64_t undecodable = 0;     ///< rows whose JSON did not parse or decode into the type
  std::uint64_t unauthentic = 0;     ///< rows skipped: signature missing or wrong, key unknown
  std::uint64_t oversized = 0;       ///< rows skipped: payload over options::max_payload_bytes
  /// Rows meant for this instance that no handler wanted. When the database filters by type
  /// (every listener names its types), the rows it left out count where the backend reports
  /// them (SQLite; PostgreSQL does not count them).
  std::uint64_t unknown_types = 0;
  std::uint64_t missed = 0;           ///< Missed notifications raised
  std::uint64_t polls = 0;            ///< poll cycles run (each reads one or more pages)
  std::uint64_t poll_errors = 0;      ///< poll cycles that failed (database unreachable...)
  std::uint64_t cleanup_deleted = 0;  ///< rows deleted by cleanups this object ran
  std::uint64_t cleanup_runs = 0;     ///< scheduled cleanups this object ran (options::cleanup_*)
  std::uint64_t cleanup_errors = 0;   ///< scheduled cleanups that failed (logged, retried)
  std::uint64_t lease_renewals = 0;   ///< successful renewals of the instance lease
  std::uint64_t lease_renewal_failures = 0;  ///< failed renewals (on_renewal_failed was called)
  /// Cursor writes the database refused because another process holds the instance name now
  /// (its lease had lapsed and the name was taken over): delivery stopped until it is held again.
  std::uint64_t cursor_writes_refused = 0;
  std::chrono::microseconds last_poll_duration{0};  ///< wall time of the latest poll cycle
};

/// Labels added to every sample, e.g. {{"instance", "web-01"}}: name and value, in order. Names
/// must be Prometheus label names ([a-zA-Z_][a-zA-Z0-9_]*); values are escaped.
using metric_labels = std::vector<std::pair<std::string, std::string>>;

/// Writes `m` in the Prometheus text exposition format (version 0.0.4), for applications that
/// serve their own /metrics: one counter per field (eventq_raised_total,
/// eventq_delivered_total, eventq_handler_errors_total, ...) and the gauge
/// eventq_last_poll_duration_seconds, each with its HELP and TYPE lines and `labels`.
/// Thread-safe (a pure function). Throws eventq::error(invalid_argument) for a label name that
/// Prometheus would reject, before writing anything; stream errors are the stream's.
void write_prometheus(std::ostream& out, const metrics& m, const metric_labels& labels = {});

}  // namespace eventq
