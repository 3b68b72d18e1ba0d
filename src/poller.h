// The background poll loop of one queue object: a poll cycle, then a wait for a wake-up or
// options::poll_interval; on failure a backoff that doubles up to options::max_retry_backoff.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "counters.h"
#include "eventq/options.h"
#include "eventq/storage.h"

namespace eventq::detail {

/// Thread-safe. start() and stop() are serialised with each other. Either may be called from
/// a handler running on the poller thread itself (see stop()).
class poller {
 public:
  /// One poll cycle: reads and delivers until drained or until `keep_going` returns false.
  using cycle_function = std::function<void(const std::function<bool()>& keep_going)>;

  /// REQUIRES: the arguments outlive this object.
  poller(storage& store, const options& opts, queue_counters& counters, cycle_function cycle);
  /// Stops the thread (see stop()).
  ~poller();
  poller(const poller&) = delete;
  poller& operator=(const poller&) = delete;

  /// Between waits: work that is due on the poller thread (storing the cursor as sessions
  /// finish, listeners without threads); returns when it is next due. Called on the poller
  /// thread only; set before start().
  using idle_function = std::function<std::optional<std::chrono::steady_clock::time_point>()>;
  void set_idle(idle_function f) { m_idle = std::move(f); }

  /// Starts the thread; it holds `owner` (what the cycle uses) until it ends. No-op if running.
  void start(std::shared_ptr<void> owner);
  /// Asks the thread to stop, wakes its wait, and joins it: it stops after the handler running
  /// now. From the poller thread itself (a handler), only asks: the thread ends once the
  /// handler returns, and a later start() or stop() from another thread joins it. Idempotent.
  void stop();
  /// From the poller thread: stop(), and let the thread end on its own (it still holds its
  /// `owner`, which may then be the last reference). Returns false on any other thread.
  bool detach_if_own_thread();
  bool running() const noexcept { return m_running; }
  /// `urgent` (asked while the thread waits) says a cycle should run now rather than at the
  /// next wake-up or poll interval. Call before start().
  void set_urgent(std::function<bool()> urgent) { m_urgent = std::move(urgent); }

 private:
  void run();
  void join_finished();  // REQUIRES: m_lifecycle_mutex held
  void sleep_unless_stopped(std::chrono::milliseconds d);
  void log(log_level level, const std::string& msg) const { m_opts.logger(level, msg); }

  storage& m_store;
  const options& m_opts;
  queue_counters& m_counters;
  cycle_function m_cycle;
  std::function<bool()> m_urgent;
  idle_function m_idle;

  std::mutex m_lifecycle_mutex;  // start()/stop()
  std::thread m_thread;
  std::atomic<bool> m_stop_requested{false};
  std::atomic<bool> m_running{false};
  std::mutex m_sleep_mutex;
  std::condition_variable m_sleep_cv;
};

}  // namespace eventq::detail
