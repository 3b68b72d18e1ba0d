// PostgreSQL connections and retries: error conversion, and the retry loop of the reader's
// idempotent calls. Internal to src/postgres/.
#pragma once

#include <pqxx/pqxx>

#include "eventq/error.h"
#include "postgres/postgres_storage.h"
#include "postgres/postgres_watchdog.h"

namespace eventq::postgres {

// The error of a call that the watchdog cut off (no reply within the limit, or stop()).
[[noreturn]] void throw_cut_off(const config& cfg, const std::string& what,
                                std::chrono::milliseconds limit);

// True when the server has closed (or written to) an idle connection: it was restarted or
// terminated us. Checked before a write so that a statement is never sent on a dead connection,
// which would leave its outcome in doubt.
bool looks_closed(const pqxx::connection& c);

// Runs f(reader connection) under the read mutex. These calls are idempotent, so a connection
// that broke while idle (server restarted since the last call) is replaced and f runs again.
template <class F>
auto postgres_storage::on_reader(const char* what, F&& f) {
  std::lock_guard lk(m_read_mutex);
  for (int attempt = 0;; ++attempt) {
    bool reused = m_reader && m_reader->is_open();
    // A cancel request that stop() sent for this call may reach the server after the call
    // ended: it would cancel the connection's next statement (a poll_once() after stop(), say).
    // So a connection that a cancel was sent for is not used again, whatever the outcome.
    struct drop_if_cancelled {
      postgres_storage& s;
      ~drop_if_cancelled() {
        if (s.m_watchdog->take_cancelled(watchdog::reader)) s.m_reader.reset();
      }
    };
    try {
      drop_if_cancelled guard{*this};
      auto& c = reader();
      watchdog::armed watch(*m_watchdog, watchdog::reader, c);
      return f(c);
    } catch (const error&) {
      throw;
    } catch (const pqxx::broken_connection&) {
      m_reader.reset();
      if (m_watchdog->fired(watchdog::reader)) throw_cut_off(m_cfg, what, m_watchdog->limit());
      if (reused && attempt == 0) continue;
      rethrow_as_error(m_cfg, what);
    } catch (const pqxx::sql_error& e) {
      m_reader.reset();
      if (m_watchdog->fired(watchdog::reader)) throw_cut_off(m_cfg, what, m_watchdog->limit());
      if (reused && attempt == 0 && is_unavailable(e)) continue;
      rethrow_as_error(m_cfg, what);
    } catch (...) {
      m_reader.reset();
      rethrow_as_error(m_cfg, what);
    }
  }
}

}  // namespace eventq::postgres
