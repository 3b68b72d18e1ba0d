#include "poller.h"

#include <algorithm>
#include <string>

namespace eventq::detail {

poller::poller(storage& store, const options& opts, queue_counters& counters, cycle_function cycle)
    : m_store(store), m_opts(opts), m_counters(counters), m_cycle(std::move(cycle)) {}

poller::~poller() { stop(); }

void poller::start() {
  std::lock_guard lk(m_lifecycle_mutex);
  if (m_running) return;
  m_stop_requested = false;
  m_thread = std::thread([this] { run(); });
  m_running = true;
}

void poller::stop() {
  std::lock_guard lk(m_lifecycle_mutex);
  if (!m_running) return;
  {
    std::lock_guard s(m_sleep_mutex);
    m_stop_requested = true;
  }
  m_sleep_cv.notify_all();
  m_store.interrupt();
  m_thread.join();
  m_running = false;
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
      if (left.count() <= 0) break;
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
