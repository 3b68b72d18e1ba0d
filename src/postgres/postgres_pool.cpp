// The PostgreSQL connections of a process (see postgres_pool.h).
#include "postgres/postgres_pool.h"

#include <poll.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/eventfd.h>
#endif

#include <pqxx/pqxx>
#include <utility>

#include "eventq/error.h"
#include "postgres/postgres_connection.h"

namespace eventq::postgres {

namespace {

constexpr std::chrono::seconds k_listen_retry{1};

// How long acquire() waits for a connection: long enough for the calls ahead of it, each
// bounded by the watchdog (statement_timeout plus a second) or by connect_timeout.
std::chrono::milliseconds wait_limit_of(const config& cfg) {
  using namespace std::chrono_literals;
  if (cfg.statement_timeout.count() == 0) return 10min;
  return 2 * (cfg.statement_timeout + 1s) + 10s;
}

}  // namespace

// ---- statement connections -------------------------------------------------------------------

std::shared_ptr<connection_pool> connection_pool::of(const config& cfg) {
  return process_shared<connection_pool>(cfg.pool_key(),
                                         [&] { return std::make_shared<connection_pool>(cfg); });
}

connection_pool::connection_pool(const config& cfg) : m_cfg(cfg), m_wait_limit(wait_limit_of(cfg)) {
  for (int i = 0; i < cfg.pool_size; ++i) m_slots.push_back(std::make_unique<slot>());
}

connection_pool::lease::lease(lease&& other) noexcept
    : m_pool(std::exchange(other.m_pool, nullptr)),
      m_slot(other.m_slot),
      m_reused(other.m_reused) {}

connection_pool::lease::~lease() {
  if (m_pool) m_pool->release(*m_slot);
}

void connection_pool::lease::discard() noexcept {
  m_slot->conn.reset();
  m_slot->prepared.clear();
  m_reused = false;
}

void connection_pool::release(slot& s) {
  {
    std::lock_guard lk(m_mutex);
    s.busy = false;
  }
  m_cv.notify_one();
}

connection_pool::lease connection_pool::acquire(watchdog& w, watchdog::slot ws,
                                                const std::string& what) {
  slot* chosen = nullptr;
  {
    std::unique_lock lk(m_mutex);
    // An idle open connection first: a second one opens only when calls overlap.
    auto pick = [&] {
      for (auto& s : m_slots) {
        if (!s->busy && s->conn) chosen = s.get();
        if (chosen) return true;
      }
      for (auto& s : m_slots) {
        if (!s->busy) chosen = s.get();
        if (chosen) return true;
      }
      return false;
    };
    if (!m_cv.wait_for(lk, m_wait_limit, pick)) {
      throw error(errc::database_unavailable,
                  "all " + std::to_string(m_slots.size()) + " connection(s) of this process to " +
                      "PostgreSQL at '" + m_cfg.display + "' stayed busy for " +
                      std::to_string(m_wait_limit.count()) + " ms while " + what +
                      ": the server is slow or unreachable, or the queues of this process need " +
                      "more (raise pool_size in the URL)");
    }
    chosen->busy = true;
  }
  lease l(*this, *chosen, false);  // gives the slot back if what follows throws
  // A connection the server closed while it was idle (restarted, or terminated us) is replaced
  // before a statement is sent on it, which would leave the statement's outcome in doubt.
  if (chosen->conn && (!chosen->conn->is_open() || looks_closed(*chosen->conn))) l.discard();
  if (chosen->conn) {
    l.m_reused = true;
    return l;
  }
  auto conn = std::make_unique<pqxx::connection>(m_cfg.conninfo);  // bounded by connect_timeout
  try {
    // The session setup is a round trip per setting: watched like any call, so that a server
    // that accepted the connection and then went silent cannot hold the caller.
    watchdog::armed watch(w, ws, *conn, false);
    set_up(*conn);
  } catch (const pqxx::broken_connection&) {
    if (w.fired(ws)) throw_cut_off(m_cfg, "setting up a connection (" + what + ")", w.limit());
    throw;
  }
  chosen->conn = std::move(conn);
  return l;
}

void connection_pool::set_up(pqxx::connection& c) const {
  // Through a transaction pooler a session setting would stay with the server connection and
  // reach whichever client borrows it next: none is made (see README, "PgBouncer").
  if (m_cfg.transaction_pooling) return;
  // set_variable: libpqxx re-applies these if it ever re-establishes the connection itself.
  c.set_variable("client_min_messages", "warning");
  // pg_stat_activity tells the processes apart: "eventq pid 1234" (and "... listen").
  c.set_variable("application_name", "'eventq pid " + std::to_string(::getpid()) + "'");
  // A poll, a raise or a lease renewal fails (database_unavailable) instead of waiting without
  // end behind an operator's lock or a runaway statement. The pool key includes both, so every
  // queue on this connection asked for the same.
  c.set_variable("statement_timeout", std::to_string(m_cfg.statement_timeout.count()));
  c.set_variable("lock_timeout", std::to_string(m_cfg.lock_timeout.count()));
  // A page is always read in index order: with no statistics, or statistics taken while the
  // table was nearly empty (it usually is, between cleanups), the planner guessed 54 rows for a
  // 100,000-row backlog and chose a bitmap scan of the whole range plus a sort, for every page:
  // 33 ms a page instead of 0.2 ms, a drain at 10k events/s instead of 170k. Without bitmap
  // scans it takes the ordered walk of the (Stamp, Id) index, which stops at the LIMIT. The
  // other statements are key lookups and inserts, which never use one. (The pages are unnamed
  // statements, planned for their own parameters: see postgres_storage::read().)
  c.set_variable("enable_bitmapscan", "off");
}

// ---- wake-ups within the process ------------------------------------------------------------

std::shared_ptr<local_channel> local_channel::of(const std::string& key) {
  return process_shared<local_channel>(key, [] { return std::make_shared<local_channel>(); });
}

std::uint64_t local_channel::subscribe(std::function<void()> changed) {
  std::lock_guard lk(m_mutex);
  m_subscribers[m_next_id] = std::move(changed);
  return m_next_id++;
}

void local_channel::unsubscribe(std::uint64_t id) {
  std::lock_guard lk(m_mutex);
  m_subscribers.erase(id);
}

void local_channel::signal() {
  std::lock_guard lk(m_mutex);
  for (auto& [id, changed] : m_subscribers) changed();
}

// ---- the LISTEN connection -------------------------------------------------------------------

class listen_hub::receiver final : public pqxx::notification_receiver {
 public:
  receiver(pqxx::connection& c, const std::string& channel, listen_hub& hub)
      : pqxx::notification_receiver(c, channel), m_hub(hub) {}
  void operator()(const std::string&, int) override { m_hub.dispatch(channel()); }

 private:
  listen_hub& m_hub;
};

std::shared_ptr<listen_hub> listen_hub::of(const config& cfg) {
  return process_shared<listen_hub>(cfg.conninfo,
                                    [&] { return std::make_shared<listen_hub>(cfg); });
}

listen_hub::listen_hub(const config& cfg)
    : m_cfg(cfg),
      m_watchdog(cfg.statement_timeout.count() > 0 ? cfg.statement_timeout + std::chrono::seconds(1)
                                                   : std::chrono::milliseconds(0)) {
#ifdef __linux__
  m_wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
#endif
  m_thread = std::thread([this] { run(); });
}

listen_hub::~listen_hub() {
  {
    std::lock_guard lk(m_mutex);
    m_stop = true;
  }
  m_cv.notify_all();
  signal_thread();
  m_thread.join();
#ifdef __linux__
  if (m_wake_fd >= 0) close(m_wake_fd);
#endif
}

void listen_hub::signal_thread() noexcept {
#ifdef __linux__
  std::uint64_t one = 1;
  if (m_wake_fd >= 0) [[maybe_unused]]
    auto n = write(m_wake_fd, &one, sizeof one);
#endif
}

// Through a subscriber's logger, under the mutex: its queue cannot go away meanwhile (a logger
// may refer to anything the application had when it opened the queue).
void listen_hub::log(log_level level, const std::string& message) {
  std::lock_guard lk(m_mutex);
  for (auto& [id, s] : m_subscriptions) {
    if (!s.logger) continue;
    s.logger(level, message);
    return;
  }
}

std::uint64_t listen_hub::subscribe(const std::string& channel, std::function<void()> notified,
                                    log_function logger) {
  std::uint64_t id = 0;
  {
    std::lock_guard lk(m_mutex);
    id = m_next_id++;
    m_subscriptions[id] = {channel, std::move(notified), std::move(logger)};
    m_changed = true;
  }
  m_cv.notify_all();
  signal_thread();
  return id;
}

void listen_hub::unsubscribe(std::uint64_t id) {
  std::lock_guard lk(m_mutex);  // dispatch() calls back under it: none runs after this
  m_subscriptions.erase(id);
  m_changed = true;
}

void listen_hub::dispatch(const std::string& channel) {
  std::lock_guard lk(m_mutex);
  for (auto& [id, s] : m_subscriptions) {
    if (s.channel == channel) s.notified();
  }
}

void listen_hub::notify_all_locked() {
  for (auto& [id, s] : m_subscriptions) s.notified();
}

void listen_hub::connect_and_listen() {
  if (!m_conn) {
    auto conn = std::make_unique<pqxx::connection>(m_cfg.conninfo);  // bounded by connect_timeout
    {
      watchdog::armed watch(m_watchdog, watchdog::listener, *conn, false);
      conn->set_variable("application_name",
                         "'eventq pid " + std::to_string(::getpid()) + " listen'");
    }
    m_conn = std::move(conn);
  }
  std::set<std::string> wanted;
  {
    std::lock_guard lk(m_mutex);
    for (auto& [id, s] : m_subscriptions) wanted.insert(s.channel);
    m_changed = false;
  }
  for (auto it = m_receivers.begin(); it != m_receivers.end();) {
    if (wanted.count(it->first)) {
      ++it;
      continue;
    }
    watchdog::armed watch(m_watchdog, watchdog::listener, *m_conn, false);  // UNLISTEN
    it = m_receivers.erase(it);
  }
  for (const auto& channel : wanted) {
    if (m_receivers.count(channel)) continue;
    {
      watchdog::armed watch(m_watchdog, watchdog::listener, *m_conn, false);  // LISTEN
      m_receivers[channel] = std::make_unique<receiver>(*m_conn, channel, *this);
    }
    // What was sent on the channel before it listened never arrives: its subscribers read.
    dispatch(channel);
  }
}

void listen_hub::drop() noexcept {
  if (m_conn) m_conn->disconnect();  // no UNLISTEN on a connection in doubt
  m_receivers.clear();
  m_conn.reset();
}

void listen_hub::lost(const char* what, const std::exception& e) {
  drop();
  if (!m_failing) {  // once per outage
    log(log_level::warning, std::string(what) + " '" + m_cfg.display +
                                "' (queues poll at their interval meanwhile; retrying every "
                                "second): " +
                                e.what());
  }
  m_failing = true;
}

void listen_hub::run() {
  auto next_attempt = std::chrono::steady_clock::time_point{};
  for (;;) {
    bool changed = false;
    {
      std::unique_lock lk(m_mutex);
      if (m_stop) break;
      changed = m_changed;
      if (!m_conn && std::chrono::steady_clock::now() < next_attempt) {
        m_cv.wait_until(lk, next_attempt, [this] { return m_stop; });
        continue;
      }
    }
    if (!m_conn || changed) {
      const bool reconnecting = !m_conn;
      try {
        connect_and_listen();
      } catch (const std::exception& e) {
        lost("cannot listen for NOTIFY wake-ups on", e);
        next_attempt = std::chrono::steady_clock::now() + k_listen_retry;
        continue;
      }
      if (m_failing) {
        log(log_level::info, "listening for NOTIFY wake-ups on '" + m_cfg.display + "' again");
        m_failing = false;
      }
      if (reconnecting) {
        std::lock_guard lk(m_mutex);
        notify_all_locked();
      }
    }
    pollfd fds[2] = {{m_conn->sock(), POLLIN, 0}, {m_wake_fd, POLLIN, 0}};
    // Without an eventfd, a subscription or stop is noticed within 40 ms.
    int n = ::poll(fds, m_wake_fd >= 0 ? 2 : 1, m_wake_fd >= 0 ? 60000 : 40);
    if (n <= 0) continue;
#ifdef __linux__
    if (m_wake_fd >= 0 && fds[1].revents) {
      std::uint64_t count = 0;
      [[maybe_unused]] auto r = read(m_wake_fd, &count, sizeof count);
    }
#endif
    if (!fds[0].revents) continue;
    try {
      m_conn->get_notifs();  // calls the receivers; throws broken_connection if it closed
    } catch (const std::exception& e) {
      lost("lost the NOTIFY listener connection to", e);
      next_attempt = std::chrono::steady_clock::now();  // at once; then every second
      std::lock_guard lk(m_mutex);
      notify_all_locked();  // what was sent meanwhile is lost: read
    }
  }
  drop();
}

}  // namespace eventq::postgres
