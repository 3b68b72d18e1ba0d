// The engine behind eventq::session: a buffer per listener, batches cut by size or time,
// handler threads, retries and failure records, and the "finished up to" watermark.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "eventq/options.h"
#include "eventq/session.h"
#include "eventq/storage.h"
#include "page_consumer.h"

namespace eventq::detail {

/// Where failed events go (the queue writes them to EventQueueFailures). Called on a handler
/// thread or the poller thread, without the engine's lock; must not throw.
using failure_sink = std::function<void(std::vector<failure_record>)>;

/// Thread-safe. One mutex guards the buffers; listeners run without it.
class session_engine final : public page_consumer,
                             public std::enable_shared_from_this<session_engine> {
 public:
  /// REQUIRES: cfg validated (validate_session_config), cfg.name set.
  session_engine(session_config cfg, log_function log, failure_sink failures);
  ~session_engine() override;
  session_engine(const session_engine&) = delete;
  session_engine& operator=(const session_engine&) = delete;

  /// Starts the handler threads; call once after construction.
  void start_threads();

  /// Called (without the lock) after a batch finished, so the queue can store the cursor.
  void set_progress_callback(std::function<void()> f);

  std::uint64_t add_listener(event_filter filter, batch_function fn);
  /// Removes a listener; see registration::reset().
  void remove_listener(std::uint64_t id) noexcept;
  bool has_listener(std::uint64_t id) const noexcept;

  bool drain(std::chrono::milliseconds timeout);
  session_metrics stats() const;
  const std::string& name() const noexcept { return m_cfg.name; }
  unsigned threads() const noexcept { return m_cfg.threads; }

  // page_consumer
  void attach_at(std::uint64_t position) override;
  bool consume(std::span<const delivered_ptr> rows, std::uint64_t page_end,
               const std::function<bool()>& stopping, std::vector<char>& taken) override;
  std::uint64_t finished() const override;
  std::optional<std::chrono::steady_clock::time_point> run_due() override;
  std::optional<std::vector<std::string>> wanted_types() const override;
  bool closed() const override;
  void shut_down() noexcept override;

 private:
  using clock = std::chrono::steady_clock;
  struct item {
    delivered_ptr event;
    clock::time_point enqueued;
  };
  struct listener {
    std::uint64_t id = 0;
    event_filter filter;
    batch_function fn;
    std::deque<item> pending;
    std::vector<item> running;  // the batch in flight (empty: none)
    std::thread::id runner;     // the thread running it
    bool removed = false;
  };
  using listener_ptr = std::shared_ptr<listener>;

  void worker();
  // REQUIRES: m_mutex held. The listener whose batch is due now (force: ignore batch_time).
  listener_ptr due_listener(clock::time_point now, bool force);
  // REQUIRES: m_mutex held. When the next batch becomes due (nullopt: none pending).
  std::optional<clock::time_point> next_due() const;
  // Takes a batch from `l` (lock held), runs it (lock released), finishes it (lock held).
  void run_one(std::unique_lock<std::mutex>& lk, const listener_ptr& l);
  // Runs the listener with retries; returns the failure records to store (lock not held).
  std::vector<failure_record> call(const listener& l, const std::vector<item>& batch);
  std::vector<const delivered_event*> pick(const std::vector<item>& batch);
  std::vector<failure_record> outcome(
      const std::vector<event_record>& rows,
      const std::vector<std::pair<std::size_t, std::string>>& undecodable, const std::string& err,
      int attempts);
  // REQUIRES: m_mutex held. Decides whether a lag episode starts; fills `out` if so.
  bool check_lag(std::optional<lag_info>& out);
  void report_lag(const std::optional<lag_info>& info);
  // REQUIRES: m_mutex held.
  std::uint64_t finished_locked() const;
  void log(log_level level, const std::string& msg) const;
  void progress();

  const session_config m_cfg;
  const log_function m_log;
  const failure_sink m_sink;

  mutable std::mutex m_mutex;
  std::condition_variable m_work_cv;   // workers: a batch may be due, or closing
  std::condition_variable m_space_cv;  // the poller: room in the buffer
  std::condition_variable m_idle_cv;   // drain() and remove_listener(): a batch finished
  std::vector<listener_ptr> m_listeners;
  std::uint64_t m_next_id = 1;
  std::uint64_t m_accepted = 0;  // every position up to this was offered
  std::size_t m_pending = 0;     // items in pending or running, all listeners
  bool m_closed = false;
  bool m_lagging = false;
  std::function<void()> m_on_progress;
  std::vector<std::thread> m_threads;
  std::size_t m_rr = 0;  // round-robin start among listeners

  // counters (m_mutex not needed)
  std::atomic<std::uint64_t> m_delivered{0}, m_batches{0}, m_coalesced{0}, m_retries{0},
      m_failures{0}, m_undecodable{0}, m_lag_alarms{0}, m_backpressure{0};
};

/// Throws eventq::error(invalid_argument) naming the bad field.
void validate_session_config(const session_config& cfg);

}  // namespace eventq::detail
