// Routes delivered rows to the registered handlers; owns the subscriber tables.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "eventq/queue.h"

namespace eventq::detail {

/// Thread-safe. Handlers are kept in an immutable table swapped on every change, so dispatch
/// reads a snapshot without holding a lock while handlers run.
class dispatcher {
 public:
  explicit dispatcher(log_function log) : m_log(std::move(log)) {}

  /// Registers a handler for `type` (empty: every type). Returns its id.
  std::uint64_t add(std::string type, raw_handler handler);
  std::uint64_t add_missed(missed_handler handler);
  /// Unregisters; waits for a running call of it unless called from the dispatching thread.
  void remove(std::uint64_t id) noexcept;
  bool contains(std::uint64_t id) const noexcept;
  /// True when some handler wants events of `type` (a typed one, or one for every type).
  bool handles(const std::string& type) const;

  /// What happened to one row.
  struct outcome {
    bool delivered = false;     ///< at least one handler ran without throwing
    bool unknown_type = false;  ///< no handler wanted it
    bool undecodable = false;   ///< a typed decode failed
    std::uint64_t handler_errors = 0;
  };

  /// Hold one while dispatching a page: remove() from other threads then waits for it.
  class scope {
   public:
    explicit scope(dispatcher& d);
    ~scope();
    scope(const scope&) = delete;
    scope& operator=(const scope&) = delete;

   private:
    dispatcher& m_d;
    std::unique_lock<std::mutex> m_lock;
  };

  /// Hands `row` and its parsed payload (checked by check_row) to the handlers.
  /// REQUIRES: a scope is held by this thread.
  outcome dispatch(const event_record& row, const nlohmann::json& data);
  /// REQUIRES: a scope is held by this thread. Returns the number of handlers that threw.
  std::uint64_t dispatch_missed(const missed_info& info);

 private:
  struct entry {
    std::uint64_t id;
    raw_handler raw;
    missed_handler missed;
    std::atomic<bool> active{true};
  };
  using entry_ptr = std::shared_ptr<entry>;
  struct table {
    std::unordered_map<std::string, std::vector<entry_ptr>> by_type;
    std::vector<entry_ptr> all;
    std::vector<entry_ptr> missed;
  };

  std::shared_ptr<const table> snapshot() const;
  void log(log_level level, const std::string& msg) const;
  /// Calls one handler; returns false if it threw (logged).
  bool invoke(const entry& e, const event_record& row, const nlohmann::json& data, outcome& out);

  log_function m_log;
  mutable std::mutex m_table_mutex;
  std::shared_ptr<const table> m_table = std::make_shared<table>();
  std::uint64_t m_next_id = 1;
  std::mutex m_dispatch_mutex;
  std::atomic<std::thread::id> m_dispatch_thread{};
};

}  // namespace eventq::detail
