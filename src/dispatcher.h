// Routes delivered rows to the registered handlers; owns the subscriber tables.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "eventq/queue.h"

namespace eventq::detail {

/// Thread-safe. Handlers are kept in an immutable table swapped on every change, so dispatch
/// reads a snapshot without holding a lock while handlers run.
class dispatcher : public subscription_owner {
 public:
  explicit dispatcher(log_function log) : m_log(std::move(log)) {}

  /// Registers a handler for `type` (empty: every type). Returns its id.
  std::uint64_t add(std::string type, raw_handler handler);
  std::uint64_t add_missed(missed_handler handler);
  /// Unregisters; waits for a running call of that handler (not for the rest of the page)
  /// unless called from the dispatching thread.
  void remove(std::uint64_t id) noexcept override;
  bool contains(std::uint64_t id) const noexcept override;
  /// True when some handler wants events of `type` (a typed one, or one for every type).
  bool handles(const std::string& type) const;
  /// The types the handlers subscribe to, sorted; nullopt when one wants every type.
  std::optional<std::vector<std::string>> wanted_types() const;

  /// What happened to one row.
  struct outcome {
    bool delivered = false;     ///< at least one handler ran without throwing
    bool unknown_type = false;  ///< no handler wanted it
    bool undecodable = false;   ///< a typed decode failed
    std::uint64_t handler_errors = 0;
  };

  /// Hold one while dispatching a page: marks this thread as the dispatching one, so that
  /// remove() from a handler does not wait for itself.
  class scope {
   public:
    explicit scope(dispatcher& d);
    ~scope();
    scope(const scope&) = delete;
    scope& operator=(const scope&) = delete;

   private:
    dispatcher& m_d;
  };

  /// True when called from inside a handler that this dispatcher is running.
  bool in_dispatch() const noexcept {
    return m_dispatch_thread.load() == std::this_thread::get_id();
  }

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
    bool active = true;  // guarded by m_call_mutex
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
  /// Marks `e` as running unless it was removed; returns false if it was.
  bool begin_call(const entry& e);
  void end_call();

  log_function m_log;
  mutable std::mutex m_table_mutex;
  std::shared_ptr<const table> m_table = std::make_shared<table>();
  std::uint64_t m_next_id = 1;
  std::atomic<std::thread::id> m_dispatch_thread{};
  // The handler running now (0: none); remove() waits on m_call_cv while it is the one removed.
  std::mutex m_call_mutex;
  std::condition_variable m_call_cv;
  std::uint64_t m_running_id = 0;
};

}  // namespace eventq::detail
