// The Raised and Missed handlers of one registry event (see eventq/registry.h).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "eventq/options.h"
#include "eventq/registry.h"

namespace eventq::detail {

/// Thread-safe. Unlike the queue's dispatcher, handlers may run on several threads at once (a
/// local raise on its caller's thread while the poller delivers a remote one): each entry counts
/// its running calls, and remove() waits until none runs on another thread.
class event_handlers final : public subscription_owner {
 public:
  explicit event_handlers(log_function log) : m_log(std::move(log)) {}

  std::uint64_t add_raised(notification_handler handler);
  std::uint64_t add_missed(missed_handler handler);
  void remove(std::uint64_t id) noexcept override;
  bool contains(std::uint64_t id) const noexcept override;

  struct outcome {
    std::uint64_t handler_errors = 0;
    std::uint64_t undecodable = 0;  ///< typed handlers whose parameter did not decode
  };
  /// Calls every Raised handler; exceptions are logged and counted, never thrown.
  outcome notify(const event_notification& n);
  /// Calls every Missed handler; returns how many threw (logged).
  std::uint64_t notify_missed(const missed_info& info);

 private:
  struct entry {
    std::uint64_t id = 0;
    notification_handler raised;
    missed_handler missed;
    bool active = true;  // guarded by m_mutex
    int running = 0;     // calls in progress, all threads; guarded by m_mutex
  };
  using entry_ptr = std::shared_ptr<entry>;
  struct table {
    std::vector<entry_ptr> raised;
    std::vector<entry_ptr> missed;
  };

  std::shared_ptr<const table> snapshot() const;
  bool enter(entry& e);
  void leave(entry& e);
  void log(log_level level, const std::string& msg) const;

  log_function m_log;
  mutable std::mutex m_mutex;
  std::condition_variable m_cv;
  std::shared_ptr<const table> m_table = std::make_shared<table>();
  std::uint64_t m_next_id = 1;
};

}  // namespace eventq::detail
