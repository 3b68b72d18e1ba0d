// PostgreSQL connections and retries: error conversion, and the retry loop of the reader's
// idempotent calls. Internal to src/postgres/.
#pragma once

#include <pqxx/pqxx>

#include "eventq/error.h"
#include "postgres/postgres_statements.h"
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

// Runs f(lease of a pooled connection) under the read mutex. These calls are idempotent, so a
// connection that broke while idle (server restarted since the last call) is replaced and f runs
// again.
template <class F>
auto postgres_storage::on_reader(const char* what, F&& f) {
  std::lock_guard lk(m_read_mutex);
  for (int attempt = 0;; ++attempt) {
    bool reused = false;
    try {
      auto c = m_pool->acquire(*m_watchdog, watchdog::reader, what);
      reused = c.reused();
      // A cancel request that stop() sent for this call may reach the server after the call
      // ended: it would cancel the connection's next statement (another queue's, or a
      // poll_once() after stop()). So a connection that a cancel was sent for is not used
      // again, whatever the outcome; it is dropped before it goes back to the pool.
      struct drop_if_cancelled {
        watchdog& w;
        connection_pool::lease& c;
        ~drop_if_cancelled() {
          if (w.take_cancelled(watchdog::reader)) c.discard();
        }
      } guard{*m_watchdog, c};
      try {
        watchdog::armed watch(*m_watchdog, watchdog::reader, c.conn());
        return f(c);
      } catch (const error&) {
        throw;
      } catch (...) {
        c.discard();
        throw;
      }
    } catch (const error&) {
      throw;
    } catch (const pqxx::broken_connection&) {
      if (m_watchdog->fired(watchdog::reader)) throw_cut_off(m_cfg, what, m_watchdog->limit());
      if (reused && attempt == 0) continue;
      rethrow_as_error(m_cfg, what);
    } catch (const pqxx::sql_error& e) {
      if (m_watchdog->fired(watchdog::reader)) throw_cut_off(m_cfg, what, m_watchdog->limit());
      if (reused && attempt == 0 && is_unavailable(e)) continue;
      rethrow_as_error(m_cfg, what);
    } catch (...) {
      rethrow_as_error(m_cfg, what);
    }
  }
}

template <class... A>
pqxx::result postgres_storage::run(pqxx::transaction_base& tx, connection_pool::lease& c,
                                   const std::string& name, bool prepared, A&&... args) {
  const auto found = m_statements.find(name);
  if (found == m_statements.end()) {
    throw error(errc::database_error, "internal: no PostgreSQL statement '" + name + "'");
  }
  if (!prepared || m_cfg.transaction_pooling) {
    // Through a transaction pooler, each transaction may run on another server connection,
    // which has not seen this one's PREPARE: unnamed statements only.
    return tx.exec_params(found->second.sql, std::forward<A>(args)...);
  }
  c.once(prepared_name("", m_cfg.schema), [&](pqxx::connection& conn) {
    for (const auto& [n, s] : m_statements) conn.prepare(s.prepared_name, s.sql);
  });
  return tx.exec_prepared(found->second.prepared_name, std::forward<A>(args)...);
}

}  // namespace eventq::postgres
