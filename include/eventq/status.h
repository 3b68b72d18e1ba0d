// eventq/status.h — the farm at a glance: what `eventq serve` shows on its status page, at
// /metrics and at /api/status, read from the database (registry, lag, rows per type, the last
// cleanup, refused rows, handler failures, events per minute).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "eventq/options.h"
#include "eventq/queue.h"
#include "eventq/storage.h"

namespace eventq {

/// Everything the status page shows, read at one moment. Plain data. Every string in it comes
/// from the database and may be hostile (event types, instance names): escape it for display.
struct farm_status {
  std::string backend;                          ///< "sqlite", "postgresql"
  std::string eventq_version;                   ///< the version of the library that read it
  std::chrono::system_clock::time_point taken;  ///< when it was read
  queue_summary summary;                        ///< rows, ages, rows per type, the last cleanup
  std::vector<instance_info> instances;         ///< the registry with lag, by name
  /// Rows created per minute, oldest minute first, starting at `chart_from`; empty when the
  /// backend cannot say (storage::events_per_minute).
  std::vector<std::int64_t> events_per_minute;
  std::chrono::system_clock::time_point chart_from;
  /// Rows instances refuse (find_rejected_rows), at most status_settings::max_rejected.
  std::vector<rejected_row> rejected;
  /// When `rejected` was computed (it is refreshed less often than the rest: it reads every
  /// retained row).
  std::chrono::system_clock::time_point rejected_checked;
  /// Operator requests (eventq resync / replay): the pending ones and the latest others,
  /// newest first.
  std::vector<control_request> control;
  /// Events sessions' listeners gave up on (storage::failures), newest first, at most
  /// status_settings::max_failures; empty when the backend keeps no failure records.
  std::vector<failure_record> failures;
  /// All rows of EventQueueFailures (storage::failure_count); nullopt when the backend keeps
  /// no failure records.
  std::optional<std::int64_t> failures_total;
};

/// How a status_reader reads.
struct status_settings {
  /// The chart covers this many minutes up to now.
  int chart_minutes = 60;
  /// Besides the pending operator requests, this many of the latest others are listed.
  std::size_t recent_requests = 20;
  /// At most this many refused rows are listed.
  std::size_t max_rejected = 50;
  /// At most this many of the latest handler failures are listed.
  std::size_t max_failures = 20;
  /// The refused-rows scan reads every retained row: it is repeated at most this often.
  std::chrono::seconds rejected_refresh{std::chrono::seconds(60)};
};

/// Reads farm_status from one database without being an instance (registers nothing, writes
/// nothing). Thread-safe: read() may be called from several threads (one read at a time runs).
class status_reader {
 public:
  /// Opens the database at `url` as open_storage() does (`opts`: keys to check signatures
  /// with, busy timeout, logger). Throws eventq::error as open_storage() does.
  status_reader(std::string_view url, const options& opts = {},
                const status_settings& settings = {});
  ~status_reader();
  status_reader(const status_reader&) = delete;
  status_reader& operator=(const status_reader&) = delete;

  /// The status now. Throws eventq::error when the database fails.
  farm_status read();

 private:
  struct impl;
  std::unique_ptr<impl> m_impl;
};

/// The status as JSON (what /api/status returns): times as ISO 8601 UTC strings, ages in
/// seconds, absent values null. Thread-safe (a pure function).
nlohmann::json status_json(const farm_status& status);

/// The status in the Prometheus text exposition format (what /metrics returns; the gauges
/// README lists under `eventq stats --prometheus`), every family with HELP and TYPE lines.
/// Thread-safe (a pure function).
void write_prometheus(std::ostream& out, const farm_status& status);

/// The same for the summary and the registry alone (what `eventq stats --prometheus` prints).
void write_prometheus(std::ostream& out, const queue_summary& summary,
                      const std::vector<instance_info>& instances);

}  // namespace eventq
