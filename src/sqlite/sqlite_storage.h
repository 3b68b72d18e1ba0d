// The SQLite backend: one database file shared by the processes of one host.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "eventq/options.h"
#include "eventq/storage.h"
#include "sqlite/change_watch.h"
#include "sqlite/sqlite_db.h"

namespace eventq::sqlite {

/// A stored SQLite cursor: "<Id>" (eventq before schema 7) or "<Id>;db=<incarnation>", the Id of
/// the last event processed and the incarnation of the file it was read from (Properties
/// 'EQIncarnation', created by migration 0007; another database has another one).
struct cursor_position {
  std::int64_t id = 0;
  std::string incarnation;  ///< "" in cursors from before schema 7
};

/// nullopt for anything format_cursor() does not write (a negative Id included).
std::optional<cursor_position> parse_cursor(std::string_view text);
/// "<id>;db=<incarnation>", or "<id>" when `incarnation` is "" (unknown).
std::string format_cursor(std::int64_t id, std::string_view incarnation);
/// `value` when it is an incarnation format_cursor() may write (1 to 64 of [0-9a-f]), else "".
std::string checked_incarnation(std::string_view value);

/// The columns of an event row, as the page statements read them (row_of() in sqlite_read.cpp).
inline constexpr const char* k_columns =
    "SELECT Id, EventType, InstanceData, InstanceName, RaiseLocally, RaiseGlobally, Created, "
    "KeyId, Signature FROM EventQueue ";
/// Scalar subqueries, so that a statement reads them in the snapshot of its other columns.
inline constexpr const char* k_sequence =
    "(SELECT seq FROM sqlite_sequence WHERE name = 'EventQueue')";
inline constexpr const char* k_incarnation =
    "(SELECT Value FROM Properties WHERE Key = 'EQIncarnation')";

/// storage over an SQLite file in WAL mode. Two connections: the writer (raises, cleanup,
/// migrations), and the reader (the poller's reads, cursor stores and change checks; the
/// poller's own cursor writes then do not look like another process's commit).
class sqlite_storage final : public storage {
 public:
  /// Opens or creates `path` and applies pending migrations. Throws eventq::error. `watch`:
  /// wake the poller when another process or queue object commits (inotify on the WAL, or
  /// `PRAGMA data_version` checks); false: polling only (URL parameter watch=off).
  sqlite_storage(const std::string& path, const options& opts, bool watch = true);
  ~sqlite_storage() override;

  std::string_view backend_name() const override { return "sqlite"; }
  std::vector<std::int64_t> append(std::span<const event_record> events) override;
  std::string head_cursor() override;
  std::string oldest_cursor() override;
  std::optional<std::string> load_cursor(std::string_view instance) override;
  void store_cursor(std::string_view instance, std::string_view cursor) override;
  bool store_cursor_fenced(std::string_view instance, std::string_view token,
                           std::string_view cursor) override;
  std::string get_or_insert_property(std::string_view key, std::string_view value) override;
  read_result read(std::string_view cursor, std::size_t limit) override;
  /// Reads the filtered types through the index EventQueue_Type (migration 0009); rows left
  /// out are passed by the cursor, counted in read_result::skipped, and deletions among them
  /// still give Missed.
  read_result read(std::string_view cursor, std::size_t limit, const type_filter& filter) override;
  bool wait_for_change(std::chrono::milliseconds timeout) override;
  void interrupt() override;

  // Operations (sqlite_operations.cpp).
  int schema_version() override;
  void register_instance(const instance_registration& who,
                         std::chrono::milliseconds lease) override;
  bool take_over_instance(const instance_registration& who, std::int64_t dead_pid,
                          std::chrono::milliseconds lease) override;
  bool renew_instance(std::string_view name, std::string_view token,
                      std::chrono::milliseconds lease) override;
  void release_instance(std::string_view name, std::string_view token) override;
  bool renew_instance(std::string_view name, std::string_view token,
                      std::chrono::milliseconds lease, const metrics& counters) override;
  std::int64_t add_control_request(const control_request& request) override;
  std::vector<control_request> take_control_requests(std::string_view name,
                                                     std::string_view token) override;
  void complete_control_request(std::int64_t id, std::string_view result) override;
  std::vector<control_request> control_requests(std::size_t recent) override;
  std::string cursor_before(std::chrono::system_clock::time_point since) override;
  std::vector<instance_info> instances() override;
  queue_summary summary() override;
  std::vector<std::int64_t> events_per_minute(std::chrono::system_clock::time_point from,
                                              int minutes) override;
  bool acquire_task(std::string_view task, std::string_view holder,
                    std::chrono::milliseconds length,
                    std::chrono::milliseconds min_interval) override;
  void release_task(std::string_view task, std::string_view holder, bool completed,
                    std::string_view result) override;
  std::size_t count_expired(const expiry& bounds) override;
  std::size_t delete_expired(const expiry& bounds, std::size_t max_rows) override;
  std::size_t remove_dead_instances(const expiry& bounds) override;
  void record_failures(std::span<const failure_record> failures) override;
  std::vector<failure_record> failures(std::size_t limit, std::string_view instance) override;
  std::size_t delete_old_failures(const expiry& bounds, bool dry_run) override;
  std::int64_t failure_count() override;

  /// The statement of a filtered page for `names` exact types and `prefixes` prefixes (see
  /// filtered_statement() in the source); public for the tests' EXPLAIN QUERY PLAN.
  static std::string filtered_page_sql(std::size_t names, std::size_t prefixes);

  /// Called by another storage of this process on the same file after it committed events.
  void notify_change();

 private:
  // register_instance(), and take_over_instance() when dead_pid > 0: returns false (instead of
  // throwing instance_name_in_use) when a take-over finds another holder.
  bool claim_instance(const instance_registration& who, std::chrono::milliseconds lease,
                      std::int64_t dead_pid);
  void migrate();
  // The sequence (the newest Id ever given) and the file's incarnation, from one snapshot.
  std::pair<std::int64_t, std::string> head_locked();  // REQUIRES: m_read_mutex held
  bool data_version_changed();

  // What one page statement returned (read()).
  struct page_scan {
    std::vector<event_record> events;
    std::int64_t last = 0;    // the Id the next cursor names: the last row's, or the cursor's
    std::size_t rows = 0;     // rows of the page
    std::size_t total = 0;    // rows of any type in (cursor, last]: rows, unless filtered
    std::size_t skipped = 0;  // read_result::skipped
    std::int64_t seq = 0;     // the sequence (the newest Id ever given), if seq_seen
    bool seq_seen = false;
    std::string incarnation;      // the file's; "" when it has none (before schema 7)
    std::int64_t first_gap = -1;  // the first deleted Id inside the page
    std::int64_t gap_rows = 0;    // deleted Ids inside the page
  };
  // nullptr: every row. Takes m_read_mutex.
  read_result read_page(std::string_view cursor, std::size_t limit, const type_filter* filter);
  // REQUIRES: m_read_mutex held (the five below).
  statement& filtered_statement(std::size_t names, std::size_t prefixes);
  page_scan scan_page(std::int64_t cur, std::size_t limit);
  page_scan scan_filtered(std::int64_t cur, std::size_t limit, const type_filter& f);
  read_result foreign_cursor(std::string_view cursor, const cursor_position& c, page_scan& p);
  void judge_page(std::int64_t cur, page_scan& p, read_result& out);

  std::string m_path;
  std::chrono::milliseconds m_check_interval;
  log_function m_logger;  // what migrations report

  std::mutex m_write_mutex;
  connection m_writer;
  std::unique_ptr<statement> m_insert;  // one row
  // Multi-row INSERTs for batches and groups, largest first: (rows, statement).
  std::vector<std::pair<std::size_t, std::unique_ptr<statement>>> m_insert_chunks;

  std::mutex m_read_mutex;
  connection m_reader;
  std::unique_ptr<statement> m_select_page;       // the page and the sequence, one snapshot
  std::unique_ptr<statement> m_select_page_only;  // the page alone, while draining
  bool m_draining = false;                        // the latest page was full (m_read_mutex)
  // Filtered pages by (names, prefixes) of the filter (see filtered_statement()).
  std::map<std::pair<std::size_t, std::size_t>, std::unique_ptr<statement>> m_select_filtered;
  std::atomic<bool> m_filter_unavailable{false};  // EventQueue_Type dropped: read unfiltered
  std::unique_ptr<statement> m_select_head;       // the sequence and the incarnation
  std::unique_ptr<statement> m_select_oldest;     // min(Id), the sequence and the incarnation
  std::unique_ptr<statement> m_get_property;
  std::unique_ptr<statement> m_set_property;
  std::unique_ptr<statement> m_set_cursor_fenced;  // m_set_property while the token holds the name
  std::unique_ptr<statement> m_data_version;
  std::int64_t m_last_data_version = -1;

  std::mutex m_wait_mutex;
  std::condition_variable m_wait_cv;
  bool m_changed = false;
  bool m_interrupted = false;
  bool m_watching;                        // false: polling only (watch=off)
  std::unique_ptr<change_watch> m_watch;  // invalid: poll PRAGMA data_version; null: no watch
};

}  // namespace eventq::sqlite
