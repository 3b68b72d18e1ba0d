// PostgreSQL wake-ups: NOTIFY after raises (one per burst, shared by the queues of a process),
// LISTEN while the poller waits, and the eventfd that wakes that wait from within the process.
// Wake-ups are hints only: delivery always comes from reading the table.
#include "postgres/postgres_wake.h"

#include <poll.h>
#ifdef __linux__
#include <sys/eventfd.h>
#include <unistd.h>
#endif

#include <map>

#include "postgres/postgres_connection.h"

namespace eventq::postgres {

namespace {

constexpr std::chrono::milliseconds k_listen_slice{40};
constexpr std::chrono::seconds k_listen_retry{1};
// After a NOTIFY, the next waits this long: raises in between share it. An isolated raise is
// announced at once; a stream of raises is announced every 2 ms (at most 2 ms later than
// without the gap) instead of with one NOTIFY transaction per raise, which cost a quarter of the
// raise rate with four raising queues. (5 ms also delayed a steady 200 raises/s: the gap met the
// raises' own period.)
constexpr std::chrono::microseconds k_notify_gap{2000};

}  // namespace

// ---- wake-ups within the process --------------------------------------------------------------

#ifdef __linux__
wake_fd::wake_fd() : m_fd(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
wake_fd::~wake_fd() {
  if (m_fd >= 0) close(m_fd);
}
void wake_fd::signal() noexcept {
  std::uint64_t one = 1;
  if (m_fd >= 0) [[maybe_unused]]
    auto n = write(m_fd, &one, sizeof one);
}
void wake_fd::clear() noexcept {
  std::uint64_t count = 0;
  if (m_fd >= 0) [[maybe_unused]]
    auto n = read(m_fd, &count, sizeof count);
}
#else
wake_fd::wake_fd() = default;
wake_fd::~wake_fd() = default;
void wake_fd::signal() noexcept {}
void wake_fd::clear() noexcept {}
#endif
std::shared_ptr<postgres_storage::sent_wake_ups> postgres_storage::sent_wake_ups::of(
    const std::string& key) {
  static std::mutex registry_mutex;
  static std::map<std::string, std::weak_ptr<sent_wake_ups>> registry;
  std::lock_guard lk(registry_mutex);
  std::erase_if(registry, [](const auto& entry) { return entry.second.expired(); });
  auto& slot = registry[key];
  auto shared = slot.lock();
  if (!shared) {
    shared = std::make_shared<sent_wake_ups>();
    slot = shared;
  }
  return shared;
}

std::chrono::steady_clock::time_point postgres_storage::sent_wake_ups::last_started() {
  std::lock_guard lk(m_mutex);
  return m_last_started;
}

bool postgres_storage::sent_wake_ups::claim(std::chrono::steady_clock::time_point newest_commit) {
  std::lock_guard lk(m_mutex);
  if (m_last_started > newest_commit) return false;
  m_last_started = std::chrono::steady_clock::now();
  return true;
}

// Sends one NOTIFY per burst of raises: raises that commit while one is being sent, or within
// k_notify_gap of the last one, share the next. Its own connection, so a wake-up never waits behind
// a raise or a read.
//
// Queues of one process on the same server and channel share their wake-ups: a raise is
// announced by any NOTIFY on its channel that started after it committed, whichever queue of
// the process sent it (m_sent_wake_ups), so four raising queues send one stream of NOTIFYs,
// not four. Each NOTIFY is a transaction that signals every listening backend. (If the NOTIFY
// that covered another queue's raises fails, it is logged, and those raises are found by the
// next poll, as when a wake-up is lost in any other way.)
void postgres_storage::notifier_loop() {
  std::unique_ptr<pqxx::connection> conn;
  std::unique_lock lk(m_notify_mutex);
  for (;;) {
    m_notify_cv.wait(lk, [this] { return m_notify_pending || m_notify_stop; });
    // A raise that returned just before the queue closed still gets its wake-up.
    if (!m_notify_pending) return;
    m_notify_cv.wait_until(lk, m_sent_wake_ups->last_started() + k_notify_gap,
                           [this] { return m_notify_stop; });
    m_notify_pending = false;
    const auto newest_commit = m_notify_newest_commit;
    lk.unlock();
    if (!m_sent_wake_ups->claim(newest_commit)) {  // another queue's NOTIFY covers it
      lk.lock();
      continue;
    }
    bool failed = false;
    try {
      if (!conn || !conn->is_open() || looks_closed(*conn)) conn = connect("notifier");
      watchdog::armed watch(*m_watchdog, watchdog::notifier, *conn, false);
      pqxx::nontransaction tx(*conn);
      tx.exec_prepared("eventq_wake");
    } catch (const std::exception& e) {
      conn.reset();
      failed = true;
      log(log_level::warning, "cannot send the NOTIFY wake-up to '" + m_cfg.display +
                                  "' (instances find the events at their next poll; retrying "
                                  "in 1 s): " +
                                  e.what());
    }
    lk.lock();
    if (failed && m_notify_stop) return;
    if (failed) m_notify_cv.wait_for(lk, k_listen_retry, [this] { return m_notify_stop; });
  }
}

// ---- wake-ups --------------------------------------------------------------------------------

bool postgres_storage::ensure_listener() {
  if (m_listener && m_listen_conn && m_listen_conn->is_open()) return true;
  auto now = std::chrono::steady_clock::now();
  if (now < m_next_listen_attempt) return false;
  m_listener.reset();
  m_listen_conn.reset();
  try {
    m_listen_conn = connect("listening");
    watchdog::armed watch(*m_watchdog, watchdog::listener, *m_listen_conn, false);  // LISTEN
    m_listener = std::make_unique<listener>(*m_listen_conn, channel_of(m_cfg.schema), m_notified);
  } catch (const std::exception& e) {
    m_listener.reset();
    m_listen_conn.reset();
    m_next_listen_attempt = now + k_listen_retry;
    log(log_level::warning, "cannot listen for NOTIFY wake-ups on '" + m_cfg.display +
                                "' (polling goes on; retrying in 1 s): " + e.what());
    return false;
  }
  // Notifications sent before it listened (or while it was down) never arrive: report a
  // change so the caller reads once more.
  m_notified = true;
  return true;
}

bool postgres_storage::wait_for_change(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    std::unique_lock lk(m_wait_mutex);
    if (m_interrupted) {
      m_interrupted = false;
      return false;
    }
    if (m_changed) {
      m_changed = false;
      return true;
    }
    if (m_notified.exchange(false)) return true;
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return false;
    auto left = deadline - now;
    if (!m_cfg.notify) {
      m_wait_cv.wait_until(lk, deadline, [this] { return m_changed || m_interrupted; });
      continue;
    }
    m_in_wait = true;  // until it is reset, a raise of this process signals m_wake (append())
    lk.unlock();
    const bool listening = ensure_listener();
    if (listening && !m_notified) {  // a new listener reports a change: read first
      try {
        wait_for_notification(left);
      } catch (const std::exception& e) {
        log(log_level::warning, "NOTIFY listener connection to '" + m_cfg.display +
                                    "' failed (polling goes on; reconnecting): " + e.what());
        m_listener.reset();
        m_listen_conn.reset();
        m_next_listen_attempt = std::chrono::steady_clock::now() + k_listen_retry;
        m_notified = true;  // what was sent meanwhile is lost: have the caller read
      }
    }
    lk.lock();
    m_in_wait = false;
    if (!listening) {
      m_wait_cv.wait_for(lk, std::min<std::chrono::steady_clock::duration>(k_listen_retry, left),
                         [this] { return m_changed || m_interrupted; });
    }
  }
}

// Sleeps until the listener's socket has input or the wake eventfd is signalled (same-process
// raise, interrupt()), so an idle instance does not wake at all between polls.
void postgres_storage::wait_for_notification(std::chrono::steady_clock::duration left) {
  if (m_wake.fd() < 0) {  // no eventfd: wake up in slices to notice interrupt()
    auto slice = std::min<std::chrono::steady_clock::duration>(k_listen_slice, left);
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(slice).count();
    m_listen_conn->await_notification(0, static_cast<long>(us));
    return;
  }
  pollfd fds[2] = {{m_listen_conn->sock(), POLLIN, 0}, {m_wake.fd(), POLLIN, 0}};
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
  int n = ::poll(fds, 2, static_cast<int>(std::min<long long>(ms, 60000)));
  if (n <= 0) return;
  if (fds[1].revents) m_wake.clear();
  if (fds[0].revents) m_listen_conn->get_notifs();  // throws broken_connection if it closed
}

void postgres_storage::wake() {
  {
    std::lock_guard lk(m_wait_mutex);
    m_interrupted = true;
  }
  m_wait_cv.notify_all();
  m_wake.signal();
}

void postgres_storage::interrupt() {
  wake();
  // stop() must not wait for a read blocked on a lock or an unreachable server: cancel it, and
  // cut the connection off if the cancel gets no answer within half a second.
  m_watchdog->cancel(watchdog::reader, std::chrono::milliseconds(500));
  m_watchdog->cancel(watchdog::listener, std::chrono::milliseconds(0));  // it reconnects
}

}  // namespace eventq::postgres
