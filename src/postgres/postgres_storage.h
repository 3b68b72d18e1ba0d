// The PostgreSQL backend: one database shared by instances on many hosts.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <pqxx/connection>
#include <pqxx/except>
#include <pqxx/transaction_base>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "eventq/options.h"
#include "eventq/storage.h"
#include "postgres/postgres_config.h"
#include "postgres/postgres_cursor.h"
#include "postgres/postgres_pool.h"

namespace eventq::postgres {

/// True for SQLSTATEs that mean the server is unreachable or going away (retry on reconnect).
bool is_unavailable(const pqxx::sql_error& e);

/// Converts the exception in flight into eventq::error naming `what` was being done. Call only
/// from a catch block.
[[noreturn]] void rethrow_as_error(const config& cfg, const std::string& what);

/// storage over a PostgreSQL schema. It owns no connection: each call borrows one from the
/// process's pool for its server (postgres_pool.h), which every queue of the process shares,
/// and wake-ups come from the process's one LISTEN connection. Calls of one kind run one at a
/// time: raises (the write mutex), the poller's reads and cursor stores (the read mutex), the
/// operations (registry, leases, cleanup; the admin mutex; see postgres_operations.cpp) and the
/// NOTIFYs after raises commit (the notifier thread). A connection that broke is dropped and
/// another opened for the next call.
struct filter_arguments;  // a type_filter as the *_types statements take it

class postgres_storage final : public storage {
 public:
  /// Connects, creates the schema if missing and applies pending migrations. Throws eventq::error.
  postgres_storage(config cfg, const options& opts);
  ~postgres_storage() override;

  std::string_view backend_name() const override { return "postgresql"; }
  std::vector<std::int64_t> append(std::span<const event_record> events) override;
  std::string head_cursor() override;
  std::string oldest_cursor() override;
  std::optional<std::string> load_cursor(std::string_view instance) override;
  void store_cursor(std::string_view instance, std::string_view cursor) override;
  bool store_cursor_fenced(std::string_view instance, std::string_view token,
                           std::string_view cursor) override;
  std::string get_or_insert_property(std::string_view key, std::string_view value) override;
  read_result read(std::string_view cursor, std::size_t limit) override;
  /// Reads the filtered types through the index EventQueue_Type (migration 0009); the cursor
  /// passes the rows left out (read_result::skipped is not counted: 0).
  read_result read(std::string_view cursor, std::size_t limit, const type_filter& filter) override;
  bool wait_for_change(std::chrono::milliseconds timeout) override;
  void interrupt() override;  // wakes, and cancels the reader's call in flight
  void wake() override;       // wakes only

  // Operations (postgres_operations.cpp), on a connection of their own so that a cleanup batch
  // never holds up this process's raises.
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

 private:
  // register_instance(), and take_over_instance() when dead_pid > 0: returns false (instead of
  // throwing instance_name_in_use) when a take-over finds another holder.
  bool claim_instance(const instance_registration& who, std::chrono::milliseconds lease,
                      std::int64_t dead_pid);
  // Writes several rows with one statement whose fields are joined by a separator; nullopt
  // when a field holds it.
  std::optional<std::vector<std::int64_t>> insert_joined(pqxx::transaction_base& tx,
                                                         connection_pool::lease& c,
                                                         std::span<const event_record> events);
  void migrate(pqxx::connection& c);
  int schema_version(pqxx::transaction_base& tx) const;
  template <class F>
  auto on_admin(const char* what, F&& f);
  template <class F>
  auto on_reader(const char* what, F&& f);
  // Runs this schema's statement `name`: prepared (each connection prepares a schema's
  // statements at its first use of them), or unnamed where `prepared` is false or a
  // transaction pooler is between (postgres_connection.h).
  template <class... A>
  pqxx::result run(pqxx::transaction_base& tx, connection_pool::lease& c, const std::string& name,
                   bool prepared, A&&... args);
  // The statement of one poll after `cur` (postgres_storage.cpp).
  pqxx::result read_rows(pqxx::transaction_base& tx, connection_pool::lease& c,
                         const std::optional<parsed_cursor>& cur, std::size_t limit,
                         const filter_arguments& filter);
  void notifier_loop();
  void changed();  // wakes wait_for_change()
  void log(log_level level, const std::string& message) const;

  config m_cfg;
  log_function m_logger;
  std::unique_ptr<watchdog> m_watchdog;  // bounds the reader's, writer's and admin's calls

  std::shared_ptr<connection_pool> m_pool;
  struct statement_text {
    std::string sql;
    std::string prepared_name;
  };
  std::map<std::string, statement_text, std::less<>> m_statements;  // of m_cfg.schema
  std::mutex m_write_mutex;
  std::atomic<bool> m_marker_warned{false};    // cleanup could only delete cursors: said once
  std::atomic<bool> m_failures_warned{false};  // cleanup may not delete failure records: said once
  std::mutex m_read_mutex;
  std::mutex m_admin_mutex;

  // Wake-ups: the process's LISTEN connection calls back (subscribed at the first
  // wait_for_change(), so that a queue that only raises listens to nothing).
  std::shared_ptr<listen_hub> m_hub;  // poller thread only
  std::uint64_t m_subscription = 0;
  // A raise of any queue of this process on this server and schema wakes this one at once.
  std::shared_ptr<local_channel> m_local;
  std::uint64_t m_local_subscription = 0;
  std::mutex m_wait_mutex;
  std::condition_variable m_wait_cv;
  bool m_changed = false;
  bool m_interrupted = false;

  // When the latest NOTIFY on a channel started, shared by the queues of this process on
  // that server and channel (see notifier_loop()).
  class sent_wake_ups {
   public:
    static std::shared_ptr<sent_wake_ups> of(const std::string& server_and_channel);
    std::chrono::steady_clock::time_point last_started();
    /// True if the caller is to send a NOTIFY now (recorded as started now); false if one
    /// started after `newest_commit` already announces the caller's raises.
    bool claim(std::chrono::steady_clock::time_point newest_commit);

   private:
    std::mutex m_mutex;
    std::chrono::steady_clock::time_point m_last_started{};
  };

  // The notifier thread sends NOTIFY after raises commit (see append()).
  std::shared_ptr<sent_wake_ups> m_sent_wake_ups;
  std::mutex m_notify_mutex;
  std::condition_variable m_notify_cv;
  bool m_notify_pending = false;
  std::chrono::steady_clock::time_point m_notify_newest_commit{};  // of a raise pending one
  bool m_notify_stop = false;
  std::thread m_notifier;
};

}  // namespace eventq::postgres
