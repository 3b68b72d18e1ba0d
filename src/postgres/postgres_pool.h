// The PostgreSQL connections of a process, shared by its queues: a pool of statement
// connections, and one LISTEN connection for every queue's channel. Internal to src/postgres/.
//
// A farm is many processes, each with several queues (Sitecore keeps one per database), and a
// server allows 100 connections by default: every queue of a process on the same server,
// database and user shares `pool_size` statement connections (default 1) and one listener,
// whatever its schema. Statements name their schema (qualify()), and prepared statements carry
// it in their names, so nothing of one queue's session can reach another's.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <pqxx/connection>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "eventq/options.h"
#include "postgres/postgres_config.h"
#include "postgres/postgres_watchdog.h"

namespace eventq::postgres {

/// The object of type T this process keeps for `key`, made by `make()` at first use and kept
/// while someone holds it (queues of one process on one server share these).
template <class T, class Make>
std::shared_ptr<T> process_shared(const std::string& key, Make make) {
  static std::mutex registry_mutex;
  static std::map<std::string, std::weak_ptr<T>> registry;
  std::lock_guard lk(registry_mutex);
  std::erase_if(registry, [](const auto& entry) { return entry.second.expired(); });
  auto& slot = registry[key];
  auto shared = slot.lock();
  if (!shared) {
    shared = make();
    slot = shared;
  }
  return shared;
}

/// The statement connections of one pool key (config::pool_key()) in this process.
/// Thread-safe.
class connection_pool {
  struct slot;

 public:
  /// This process's pool for `cfg`, made at first use; it lives while a queue holds it.
  static std::shared_ptr<connection_pool> of(const config& cfg);

  explicit connection_pool(const config& cfg);
  connection_pool(const connection_pool&) = delete;
  connection_pool& operator=(const connection_pool&) = delete;

  /// One connection lent for one call; returned when the lease ends.
  class lease {
   public:
    lease(lease&& other) noexcept;
    lease& operator=(lease&&) = delete;
    ~lease();

    pqxx::connection& conn() { return *m_slot->conn; }
    /// The connection served an earlier call (so a failure may be an old break: retry once).
    bool reused() const noexcept { return m_reused; }
    /// Closes the connection (broken, or a cancel request may still reach it); the next lease
    /// of this slot opens another.
    void discard() noexcept;
    /// Runs `prepare(conn())` unless it ran for `key` on this connection already.
    template <class F>
    void once(const std::string& key, F&& prepare) {
      if (m_slot->prepared.count(key)) return;
      prepare(conn());
      m_slot->prepared.insert(key);
    }

   private:
    friend class connection_pool;
    lease(connection_pool& pool, slot& s, bool reused)
        : m_pool(&pool), m_slot(&s), m_reused(reused) {}
    connection_pool* m_pool;
    slot* m_slot;
    bool m_reused;
  };

  /// Waits for a free connection (opening it if needed, the setup watched by `w` as `s`).
  /// Throws eventq::error(database_unavailable) when every connection stays busy past the
  /// pool's wait limit, and lets libpqxx's exceptions through for the caller to convert.
  lease acquire(watchdog& w, watchdog::slot s, const std::string& what);

  std::size_t size() const noexcept { return m_slots.size(); }

 private:
  struct slot {
    std::unique_ptr<pqxx::connection> conn;
    std::set<std::string> prepared;  // keys given to lease::once() on this connection
    bool busy = false;
  };
  void release(slot& s);
  void set_up(pqxx::connection& c) const;

  const config m_cfg;
  const std::chrono::milliseconds m_wait_limit;
  std::mutex m_mutex;
  std::condition_variable m_cv;
  std::vector<std::unique_ptr<slot>> m_slots;
};

/// The queues of this process on one server and schema: a raise wakes every one of them at
/// once, without a round trip through the server, with notify=off too. Thread-safe.
class local_channel {
 public:
  /// This process's channel for `key` (server and schema), alive while a queue holds it.
  static std::shared_ptr<local_channel> of(const std::string& key);

  /// Calls `changed` (briefly; it must not call the channel) at each signal() until
  /// unsubscribe(id); returns the id.
  std::uint64_t subscribe(std::function<void()> changed);
  /// Once this returns, the callback is not running and never runs again.
  void unsubscribe(std::uint64_t id);
  /// Wakes every subscriber.
  void signal();

 private:
  std::mutex m_mutex;
  std::map<std::uint64_t, std::function<void()>> m_subscribers;
  std::uint64_t m_next_id = 1;
};

/// One LISTEN connection for every queue of the process on a server (same libpq parameters),
/// on a thread of its own: it listens on each subscribed channel and calls the subscribers of
/// a channel when a notification arrives, and every subscriber when it (re)connects, since what
/// was sent meanwhile is lost. Wake-ups are hints: a subscriber that hears nothing still polls.
/// Thread-safe.
class listen_hub {
 public:
  /// This process's hub for `cfg.conninfo`, made at first use; it lives while a queue holds
  /// it.
  static std::shared_ptr<listen_hub> of(const config& cfg);

  explicit listen_hub(const config& cfg);
  ~listen_hub();
  listen_hub(const listen_hub&) = delete;
  listen_hub& operator=(const listen_hub&) = delete;

  /// Calls `notified` (on the hub's thread, briefly: it must not block or call the hub) for
  /// each notification on `channel` and after each (re)connection, until unsubscribe(id).
  /// The hub's warnings (a lost connection, a failed LISTEN; once per outage) go to the
  /// `logger` of one subscriber. Returns the subscription's id.
  std::uint64_t subscribe(const std::string& channel, std::function<void()> notified,
                          log_function logger);
  /// Once this returns, the subscription's callback is not running and never runs again.
  void unsubscribe(std::uint64_t id);

 private:
  class receiver;
  void run();
  void connect_and_listen();                             // hub thread; throws
  void drop() noexcept;                                  // hub thread: closes the connection
  void lost(const char* what, const std::exception& e);  // hub thread: drop, log once
  void dispatch(const std::string& channel);
  void notify_all_locked();
  void signal_thread() noexcept;  // wakes the hub thread's poll()
  void log(log_level level, const std::string& message);

  const config m_cfg;
  watchdog m_watchdog;  // bounds the setup and the LISTENs

  std::mutex m_mutex;
  std::condition_variable m_cv;
  struct subscription {
    std::string channel;
    std::function<void()> notified;
    log_function logger;
  };
  std::map<std::uint64_t, subscription> m_subscriptions;
  std::uint64_t m_next_id = 1;
  bool m_changed = false;  // subscriptions changed: LISTEN/UNLISTEN due
  bool m_stop = false;

  // Hub thread only.
  std::unique_ptr<pqxx::connection> m_conn;
  std::map<std::string, std::unique_ptr<receiver>> m_receivers;  // channels listened on
  bool m_failing = false;  // the latest attempt failed (logged once until it works again)
  int m_wake_fd = -1;      // eventfd: subscriptions changed, or stop

  std::thread m_thread;
};

}  // namespace eventq::postgres
