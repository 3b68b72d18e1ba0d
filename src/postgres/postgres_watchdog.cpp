#include "postgres/postgres_watchdog.h"

#include <libpq-fe.h>
#include <sys/socket.h>

#include <pqxx/largeobject>
#include <pqxx/transaction>
#include <system_error>
#include <utility>

namespace eventq::postgres {

namespace {

// libpqxx 6 hands out the PGconn of a transaction to large-object classes only.
struct raw_connection_of : pqxx::largeobject {
  static PGconn* get(const pqxx::dbtransaction& tx) { return largeobject::raw_connection(tx); }
};

// A PGcancel copies what a cancel request needs (the server's address and the backend's key),
// so it is used from another thread safely, even after the connection is gone.
std::shared_ptr<void> cancel_of(pqxx::connection& c) {
  PGcancel* cancel = nullptr;
  {
    pqxx::read_transaction tx(c);  // REQUIRES: no transaction open on `c`
    PGconn* raw = raw_connection_of::get(tx);
    cancel = raw ? PQgetCancel(raw) : nullptr;
  }
  if (!cancel) return nullptr;
  return std::shared_ptr<void>(cancel, [](void* p) { PQfreeCancel(static_cast<PGcancel*>(p)); });
}

}  // namespace

watchdog::watchdog(std::chrono::milliseconds limit) : m_limit(limit) {
  m_thread = std::thread([this] { run(); });
}

watchdog::~watchdog() {
  {
    std::lock_guard lk(m_mutex);
    m_stop = true;
  }
  m_cv.notify_all();
  m_thread.join();
}

watchdog::armed::armed(watchdog& w, slot s, pqxx::connection& c, bool cancellable)
    : m_w(w), m_slot(s) {
  const int pid = c.backendpid();
  bool need_cancel = false;
  {
    std::lock_guard lk(w.m_mutex);
    auto& st = w.m_slots[s];
    if (st.conn != &c || st.backend_pid != pid) st.cancel.reset();  // another connection
    need_cancel = cancellable && s == reader && !st.cancel;  // only the reader's are cancelled
    st.busy = true;
    st.fired = false;
    st.fd = c.sock();
    st.conn = &c;
    st.backend_pid = pid;
    st.deadline = w.m_limit.count() > 0 ? std::chrono::steady_clock::now() + w.m_limit
                                        : std::chrono::steady_clock::time_point::max();
  }
  w.m_cv.notify_all();
  if (!need_cancel) return;
  try {
    auto cancel = cancel_of(c);  // a round trip, watched like the call
    std::lock_guard lk(w.m_mutex);
    w.m_slots[s].cancel = std::move(cancel);
  } catch (...) {
    // No destructor runs for a constructor that throws: disarm here. The caller sees a failed
    // call, as if it had been one.
    std::lock_guard lk(w.m_mutex);
    w.m_slots[s].busy = false;
    w.m_slots[s].fd = -1;
    w.m_slots[s].deadline = std::chrono::steady_clock::time_point::max();
    throw;
  }
}

watchdog::armed::~armed() {
  std::lock_guard lk(m_w.m_mutex);
  auto& st = m_w.m_slots[m_slot];
  st.busy = false;
  st.fd = -1;
  st.deadline = std::chrono::steady_clock::time_point::max();
}

bool watchdog::fired(slot s) {
  std::lock_guard lk(m_mutex);
  return m_slots[s].fired;
}

bool watchdog::take_cancelled(slot s) {
  std::lock_guard lk(m_mutex);
  return std::exchange(m_slots[s].cancelled, false);
}

void watchdog::cancel(slot s, std::chrono::milliseconds grace) {
  std::shared_ptr<void> cancel;
  {
    std::lock_guard lk(m_mutex);
    auto& st = m_slots[s];
    if (!st.busy) return;
    cancel = st.cancel;
    st.cancelled = st.cancelled || cancel != nullptr;
    st.deadline = std::min(st.deadline, std::chrono::steady_clock::now() + grace);
  }
  m_cv.notify_all();
  if (!cancel) return;
  // PQcancel connects to the server and waits for it to close: on a thread of its own, so that
  // an unreachable server delays nothing (the deadline above cuts the call off then).
  try {
    std::thread([cancel] {
      char err[256];
      PQcancel(static_cast<PGcancel*>(cancel.get()), err, sizeof err);
    }).detach();
  } catch (const std::system_error&) {
    // No thread to be had: the deadline alone ends the call, `grace` from now.
  }
}

void watchdog::run() {
  std::unique_lock lk(m_mutex);
  while (!m_stop) {
    auto next = std::chrono::steady_clock::time_point::max();
    auto now = std::chrono::steady_clock::now();
    for (auto& st : m_slots) {
      if (!st.busy || st.fired) continue;
      if (st.deadline <= now) {
        // The call blocks in recv() or send() on this socket: shutting it down makes them
        // return at once, and libpq reports the connection as broken.
        ::shutdown(st.fd, SHUT_RDWR);
        st.fired = true;
      } else {
        next = std::min(next, st.deadline);
      }
    }
    if (next == std::chrono::steady_clock::time_point::max()) {
      m_cv.wait(lk);
    } else {
      m_cv.wait_until(lk, next);
    }
  }
}

}  // namespace eventq::postgres
