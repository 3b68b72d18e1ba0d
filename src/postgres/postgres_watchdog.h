// Bounds every call on a PostgreSQL connection from the client's side, and cancels the reader's
// query for stop(). Internal to src/postgres/.
#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <pqxx/connection>
#include <thread>

namespace eventq::postgres {

/// statement_timeout and lock_timeout are enforced by the server, but a server that cannot be
/// reached (a failover without a TCP reset, a dropped NAT entry, a proxy that stops forwarding)
/// never answers, and TCP keepalives do not help while something on the path still acknowledges.
/// The watchdog shuts a connection's socket down when a call on it outlasts its limit, so the
/// call fails (pqxx::broken_connection) instead of blocking for hours. Thread-safe.
class watchdog {
 public:
  enum slot { reader, writer, admin, listener, notifier, k_slots };

  /// `limit`: how long one call may take, 0 for no limit.
  explicit watchdog(std::chrono::milliseconds limit);
  ~watchdog();
  watchdog(const watchdog&) = delete;
  watchdog& operator=(const watchdog&) = delete;

  /// Watches one call on `c` (of `s`) while it lives.
  class armed {
   public:
    /// `cancellable`: make the cancel request ready too (a round trip on a new connection),
    /// for the calls that cancel() is to cancel (the reader's).
    armed(watchdog& w, slot s, pqxx::connection& c, bool cancellable = true);
    ~armed();
    armed(const armed&) = delete;
    armed& operator=(const armed&) = delete;

   private:
    watchdog& m_w;
    slot m_slot;
  };

  /// True when the latest call of `s` was cut off (by the limit or by cancel()).
  bool fired(slot s);

  /// True (once) when cancel() sent a cancel request for a call of `s` since the last time
  /// this was asked. The request travels on a connection of its own and may reach the server
  /// after that call has ended, cancelling whatever the connection runs then: the caller drops
  /// the connection instead of running another statement on it.
  bool take_cancelled(slot s);

  /// Sends PostgreSQL a cancel request for the call running on `s` now, if any (it then fails
  /// with SQLSTATE 57014), and cuts the connection off if the call still runs `grace` later
  /// (the server could not be reached). Returns at once.
  void cancel(slot s, std::chrono::milliseconds grace);

  std::chrono::milliseconds limit() const noexcept { return m_limit; }

 private:
  struct state {
    bool busy = false;
    bool fired = false;
    bool cancelled = false;  // cancel() sent a request; see take_cancelled()
    int fd = -1;
    const pqxx::connection* conn = nullptr;
    int backend_pid = 0;
    std::shared_ptr<void> cancel;  // PGcancel, made once per connection
    std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  };
  void run();

  const std::chrono::milliseconds m_limit;
  std::mutex m_mutex;
  std::condition_variable m_cv;
  std::array<state, k_slots> m_slots;
  bool m_stop = false;
  std::thread m_thread;
};

}  // namespace eventq::postgres
