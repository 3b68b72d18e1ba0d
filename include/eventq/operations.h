// eventq/operations.h — what operators and their tools need besides a queue: a read-only
// follower, raising without opening an instance, and cleanup as a scheduler runs it. The eventq
// command (src/cli/) is a thin layer over these calls.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "eventq/event.h"
#include "eventq/options.h"
#include "eventq/queue.h"
#include "eventq/storage.h"

namespace eventq {

/// Reads events as they arrive without being an instance: no registration, no stored cursor,
/// nothing written to Properties. For diagnosing "is anything arriving?" (`eventq tail`). It
/// sees every row, whoever it is addressed to. Not thread-safe, except interrupt().
class follower {
 public:
  /// Opens the database at `url` (see queue::queue; pending migrations are applied) and starts
  /// after the newest event (start_position::now) or before the oldest retained one.
  follower(std::string_view url, start_position from, const options& opts = {});
  ~follower();
  follower(const follower&) = delete;
  follower& operator=(const follower&) = delete;

  /// The next rows after the follower's cursor, at most `limit`; when none are pending, waits
  /// up to `timeout` for some to arrive (an empty result on timeout or interrupt()).
  /// read_result::missed says when rows behind the cursor were deleted meanwhile.
  read_result next(std::chrono::milliseconds timeout, std::size_t limit = 500);

  /// Makes a next() in progress on another thread return promptly.
  void interrupt();

  /// What a queue opened with the follower's options would do with `row`: nullopt when it would
  /// deliver it (to those it is addressed to), else the verdict and reason it would refuse it
  /// with, as find_rejected_rows() says (verification always on). The keys come from the
  /// options as for a queue (secret, key_id, accepted_keys; else EVENTQ_SECRET, else the
  /// database's secret), loaded at the first call. Throws eventq::error if the database's
  /// secret cannot be read.
  std::optional<rejected_row> judge(const event_record& row);

  /// The cursor after the rows returned so far (kept in memory only).
  const std::string& cursor() const noexcept { return m_cursor; }

 private:
  struct checker;
  std::unique_ptr<storage> m_store;
  std::string m_cursor;
  options m_opts;
  std::unique_ptr<checker> m_checker;
};

/// Raises one event on `backend` as the instance `opts.instance_name` without opening a queue
/// (no registration, no cursor): what `eventq raise` does. Signs it as a queue would, with
/// `opts.secret` / `opts.key_id` (else EVENTQ_SECRET, else the database's secret); checks what
/// queue::raise_raw() checks (`opts.max_payload_bytes` included) and throws eventq::error the
/// same way. Returns the event's Id.
std::int64_t raise_as(storage& backend, const options& opts, std::string_view type,
                      const nlohmann::json& data, raise_mode mode);

/// Every retained row that a queue opened with `opts` would refuse (bad or missing signature,
/// unknown key, malformed or oversized payload), oldest first, at most `max_rows`: what
/// `eventq verify` prints. Keys come from `opts` as for a queue (secret, key_id,
/// accepted_keys; else EVENTQ_SECRET, else the database's secret). Reads only.
std::vector<rejected_row> find_rejected_rows(storage& backend, const options& opts,
                                             std::size_t max_rows = 1000);

/// How a cleanup runs (the fields mirror options::retention, cleanup_max_age, ...).
struct cleanup_settings {
  /// Rows younger than this are kept.
  std::chrono::seconds keep{std::chrono::hours(24)};
  /// Rows a live instance has not processed are kept up to this age; instances dead for
  /// longer are removed from the registry, their cursors replaced by a "removed" marker (such
  /// an instance reports Missed if it comes back; markers are deleted after ten times this).
  /// Failure records (EventQueueFailures) older than this are deleted.
  std::chrono::seconds max_age{std::chrono::hours(24 * 7)};
  std::size_t batch_size{2000};
  std::chrono::milliseconds pause{5};
  /// Count what would be deleted; change nothing.
  bool dry_run = false;
  /// When another process runs a cleanup, wait this long for it to finish (zero: skip at once).
  std::chrono::milliseconds wait_for_other{0};
  /// Skip the cleanup when the last completed one (by anyone) is more recent than this: what
  /// the instances' own schedule uses (options::cleanup_interval).
  std::chrono::milliseconds min_interval{0};
};

/// What a cleanup did.
struct cleanup_report {
  /// false: nothing was done, because another process held the cleanup lease or the last
  /// cleanup is more recent than cleanup_settings::min_interval
  bool ran = false;
  bool dry_run = false;
  bool completed = false;   ///< false when stopped early by the between-batches callback
  std::size_t deleted = 0;  ///< rows deleted (dry run: rows that would be deleted)
  std::size_t batches = 0;
  std::size_t instances_removed = 0;  ///< dead instances removed (dry run: would be)
  /// failure records (EventQueueFailures) older than the maximum age deleted (dry run: would be)
  std::size_t failures_removed = 0;
  std::chrono::milliseconds took{0};

  /// One line for a scheduler's log: "cleanup: deleted 1200 rows in 3 batches, removed 1 dead
  /// instance, 0.42 s".
  std::string summary() const;
};

/// Runs one cleanup on `backend` as `holder` (a name for the "cleanup" lease, e.g.
/// "web-01@host:pid"): one per database at a time, bounded batches with commits and pauses
/// between them (see storage::delete_expired for what is kept). `between_batches`, if given, is
/// called after each batch; returning false stops the cleanup early. Throws eventq::error when
/// the database fails (the lease is released first).
cleanup_report run_cleanup(storage& backend, const cleanup_settings& settings,
                           std::string_view holder,
                           const std::function<bool()>& between_batches = {});

/// Parses a duration such as "90s", "30m", "12h", "1d", "2w" (a whole number and a unit; "0"
/// alone is zero). Throws eventq::error(invalid_argument) naming the accepted forms.
std::chrono::seconds parse_duration(std::string_view text);

/// The eventq version ("0.1.0").
std::string_view version() noexcept;

}  // namespace eventq
