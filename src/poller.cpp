#include "poller.h"

#include <algorithm>
#include <string>

namespace eventq::detail {

poller::poller(storage& store, const options& opts, queue_counters& counters, cycle_function cycle)
    : m_store(store), m_opts(opts), m_counters(counters), m_cycle(std::move(cycle)) {}

poller::~poller() {
  // On the poller thread itself only after detach_if_own_thread(): nothing to join then.
  if (!m_thread.joinable()) return;
  stop();
}

void poller::start(std::shared_ptr<void> owner) {
  std::lock_guard lk(m_lifecycle_mutex);
  if (m_running) return;
  if (m_thread.joinable() && m_thread.get_id() == std::this_thread::get_id()) {
    m_stop_requested = false;  // stop() and start() from one handler: carry on
    m_running = true;
    return;
  }
  join_finished();
  m_stop_requested = false;
  m_thread = std::thread([this, owner = std::move(owner)]() mutable {
    run();
    owner.reset();  // may destroy this poller (see detach_if_own_thread): nothing after it
  });
  m_running = true;
}

void poller::join_finished() {
  if (m_thread.joinable()) m_thread.join();  // a thread told to stop from its own handler
}

void poller::stop() {
  std::lock_guard lk(m_lifecycle_mutex);
  if (!m_running) {
    if (!m_thread.joinable() || m_thread.get_id() != std::this_thread::get_id()) join_finished();
    return;
  }
  {
    std::lock_guard s(m_sleep_mutex);
    m_stop_requested = true;
  }
  m_sleep_cv.notify_all();
  m_running = false;
  if (m_thread.get_id() == std::this_thread::get_id()) return;  // from a handler: ends after it
  m_store.interrupt();
  m_thread.join();
}

bool poller::detach_if_own_thread() {
  std::lock_guard lk(m_lifecycle_mutex);
  if (!m_thread.joinable() || m_thread.get_id() != std::this_thread::get_id()) return false;
  m_stop_requested = true;
  m_running = false;
  m_thread.detach();
  return true;
}

void poller::sleep_unless_stopped(std::chrono::milliseconds d) {
  std::unique_lock lk(m_sleep_mutex);
  m_sleep_cv.wait_for(lk, d, [this] { return m_stop_requested.load(); });
}

void poller::run() {
  auto backoff = m_opts.min_retry_backoff;
  std::function<bool()> keep_going = [this] { return !m_stop_requested.load(); };
  while (!m_stop_requested) {
    try {
      m_cycle(keep_going);
      backoff = m_opts.min_retry_backoff;
    } catch (const std::exception& e) {
      if (m_stop_requested) break;  // stop() cancelled the poll's query: not a failure
      ++m_counters.poll_errors;
      log(log_level::error, std::string("poll failed, retrying in ") +
                                std::to_string(backoff.count()) + " ms: " + e.what());
      sleep_unless_stopped(backoff);
      backoff = std::min(backoff * 2, m_opts.max_retry_backoff);
      continue;
    } catch (...) {
      ++m_counters.poll_errors;
      log(log_level::error, "poll failed with an exception that is not a std::exception");
      sleep_unless_stopped(backoff);
      backoff = std::min(backoff * 2, m_opts.max_retry_backoff);
      continue;
    }
    auto deadline = std::chrono::steady_clock::now() + m_opts.poll_interval;
    while (!m_stop_requested) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0 || (m_urgent && m_urgent())) break;
      try {
        if (m_idle) {
          if (auto due = m_idle()) {  // wake for it, at most every millisecond
            left = std::clamp(std::chrono::ceil<std::chrono::milliseconds>(
                                  *due - std::chrono::steady_clock::now()),
                              std::chrono::milliseconds(1), left);
          }
        }
        if (m_store.wait_for_change(left)) break;
      } catch (const std::exception& e) {
        ++m_counters.poll_errors;
        log(log_level::error,
            std::string("waiting for changes (or storing the cursor sessions finished) failed: ") +
                e.what());
        sleep_unless_stopped(std::min(left, m_opts.min_retry_backoff));
      }
    }
  }
}

}  // namespace eventq::detail
