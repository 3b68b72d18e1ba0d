// PostgreSQL wake-ups: NOTIFY after raises (one per burst, shared by the queues of a process),
// and the poller's wait, which the process's LISTEN connection (listen_hub) or a raise of this
// process ends. Wake-ups are hints only: delivery always comes from reading the table.
#include "postgres/postgres_storage.h"

#include <map>
#include <pqxx/pqxx>
#include <utility>

#include "postgres/postgres_connection.h"

namespace eventq::postgres {

namespace {

constexpr std::chrono::seconds k_notify_retry{1};
// After a NOTIFY, the next waits this long: raises in between share it. An isolated raise is
// announced at once; a stream of raises is announced every 2 ms (at most 2 ms later than
// without the gap) instead of with one NOTIFY transaction per raise, which cost a quarter of the
// raise rate with four raising queues. (5 ms also delayed a steady 200 raises/s: the gap met the
// raises' own period.)
constexpr std::chrono::microseconds k_notify_gap{2000};

}  // namespace

std::shared_ptr<postgres_storage::sent_wake_ups> postgres_storage::sent_wake_ups::of(
    const std::string& key) {
  return process_shared<sent_wake_ups>(key, [] { return std::make_shared<sent_wake_ups>(); });
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
// k_notify_gap of the last one, share the next. On its own thread, so that a raise never waits for
// its wake-up (the NOTIFY borrows a connection of the pool like any call).
//
// Queues of one process on the same server and channel share their wake-ups: a raise is
// announced by any NOTIFY on its channel that started after it committed, whichever queue of
// the process sent it (m_sent_wake_ups), so four raising queues send one stream of NOTIFYs,
// not four. Each NOTIFY is a transaction that signals every listening backend. (If the NOTIFY
// that covered another queue's raises fails, it is logged, and those raises are found by the
// next poll, as when a wake-up is lost in any other way.)
void postgres_storage::notifier_loop() {
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
      auto c = m_pool->acquire(*m_watchdog, watchdog::notifier, "sending a wake-up");
      try {
        watchdog::armed watch(*m_watchdog, watchdog::notifier, c.conn(), false);
        pqxx::nontransaction tx(c.conn());
        run(tx, c, "eventq_wake", true);
      } catch (...) {
        c.discard();
        throw;
      }
    } catch (const std::exception& e) {
      failed = true;
      log(log_level::warning, "cannot send the NOTIFY wake-up to '" + m_cfg.display +
                                  "' (instances find the events at their next poll; retrying "
                                  "in 1 s): " +
                                  e.what());
    }
    lk.lock();
    if (failed && m_notify_stop) return;
    if (failed) m_notify_cv.wait_for(lk, k_notify_retry, [this] { return m_notify_stop; });
  }
}

// ---- wake-ups --------------------------------------------------------------------------------

bool postgres_storage::wait_for_change(std::chrono::milliseconds timeout) {
  if (m_cfg.notify && !m_hub) {
    // The hub calls back when a NOTIFY arrives on this schema's channel, and when it
    // (re)connects (what was sent meanwhile is lost): either way, read.
    m_hub = listen_hub::of(m_cfg);
    m_subscription = m_hub->subscribe(
        channel_of(m_cfg.schema), [this] { changed(); }, m_logger);
  }
  std::unique_lock lk(m_wait_mutex);
  m_wait_cv.wait_for(lk, timeout, [this] { return m_changed || m_interrupted; });
  if (m_interrupted) {
    m_interrupted = false;
    return false;
  }
  return std::exchange(m_changed, false);
}

void postgres_storage::changed() {
  {
    std::lock_guard lk(m_wait_mutex);
    m_changed = true;
  }
  m_wait_cv.notify_all();
}

void postgres_storage::wake() {
  {
    std::lock_guard lk(m_wait_mutex);
    m_interrupted = true;
  }
  m_wait_cv.notify_all();
}

void postgres_storage::interrupt() {
  wake();
  // stop() must not wait for a read blocked on a lock or an unreachable server: cancel it, and
  // cut the connection off if the cancel gets no answer within half a second.
  // (Only this queue's read: the watchdog's reader slot is busy only while it runs, on
  // whichever connection of the pool it borrowed.)
  m_watchdog->cancel(watchdog::reader, std::chrono::milliseconds(500));
}

}  // namespace eventq::postgres
