// The PostgreSQL backend: one database shared by instances on many hosts.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
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

namespace eventq::postgres {

/// True for SQLSTATEs that mean the server is unreachable or going away (retry on reconnect).
bool is_unavailable(const pqxx::sql_error& e);

/// Converts the exception in flight into eventq::error naming `what` was being done. Call only
/// from a catch block.
[[noreturn]] void rethrow_as_error(const config& cfg, const std::string& what);

class watchdog;

/// An eventfd that other threads signal to wake a poll(); fd() is -1 where unavailable.
class wake_fd {
 public:
  wake_fd();
  ~wake_fd();
  wake_fd(const wake_fd&) = delete;
  wake_fd& operator=(const wake_fd&) = delete;
  int fd() const noexcept { return m_fd; }
  void signal() noexcept;
  void clear() noexcept;

 private:
  int m_fd = -1;
};

/// storage over a PostgreSQL schema. Five connections, each used by one thread at a time:
/// the writer (raises; guarded by a mutex), the reader (the poller's reads and cursor stores,
/// head/oldest cursors; guarded by a mutex), the operations connection (registry, leases,
/// cleanup; see postgres_operations.cpp), the listener (LISTEN, used only by wait_for_change(),
/// i.e. the poller thread) and the notifier (NOTIFY after raises commit, opened at the first
/// raise, used only by the notifier thread). A broken connection is dropped and opened again on
/// the next call that needs it.
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
  std::int64_t failure_count() override;

 private:
  // register_instance(), and take_over_instance() when dead_pid > 0: returns false (instead of
  // throwing instance_name_in_use) when a take-over finds another holder.
  bool claim_instance(const instance_registration& who, std::chrono::milliseconds lease,
                      std::int64_t dead_pid);
  // Writes several rows with one statement whose fields are joined by a separator; nullopt
  // when a field holds it.
  std::optional<std::vector<std::int64_t>> insert_joined(pqxx::transaction_base& tx,
                                                         std::span<const event_record> events);
  class listener;
  std::unique_ptr<pqxx::connection> connect(const char* role);
  void set_up(pqxx::connection& c, const char* role);  // session settings, statements
  void migrate(pqxx::connection& c);
  int schema_version(pqxx::transaction_base& tx) const;
  pqxx::connection& writer();  // REQUIRES: m_write_mutex held
  pqxx::connection& reader();  // REQUIRES: m_read_mutex held
  template <class F>
  auto on_admin(const char* what, F&& f);
  template <class F>
  auto on_reader(const char* what, F&& f);
  bool ensure_listener();
  void notifier_loop();
  void wait_for_notification(std::chrono::steady_clock::duration left);
  void log(log_level level, const std::string& message) const;

  config m_cfg;
  log_function m_logger;
  std::unique_ptr<watchdog> m_watchdog;  // bounds the reader's, writer's and admin's calls

  std::mutex m_write_mutex;
  std::unique_ptr<pqxx::connection> m_writer;

  std::mutex m_read_mutex;
  std::unique_ptr<pqxx::connection> m_reader;

  std::mutex m_admin_mutex;
  std::unique_ptr<pqxx::connection> m_admin;

  // Poller thread only.
  std::unique_ptr<pqxx::connection> m_listen_conn;
  std::unique_ptr<listener> m_listener;
  std::chrono::steady_clock::time_point m_next_listen_attempt{};

  std::atomic<bool> m_notified{false};
  std::mutex m_wait_mutex;
  std::condition_variable m_wait_cv;
  bool m_changed = false;
  bool m_in_wait = false;  // wait_for_change() is (or is about to be) in poll(): m_wait_mutex
  bool m_interrupted = false;
  wake_fd m_wake;  // wakes wait_for_notification() from other threads

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
