// PostgreSQL connections: opening them (session settings, prepared statements), replacing broken
// ones, and converting libpqxx's exceptions into eventq::error.
#include "postgres/postgres_connection.h"

#include <poll.h>

#include "postgres/postgres_statements.h"

namespace eventq::postgres {

// ---- errors ----------------------------------------------------------------------------------

bool is_unavailable(const pqxx::sql_error& e) {
  const std::string& state = e.sqlstate();
  return state.rfind("08", 0) == 0 || state.rfind("57P", 0) == 0 || state == "53300";
}

namespace {
// libpq's messages end with a newline.
std::string trimmed(std::string_view s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.remove_suffix(1);
  return std::string(s);
}
}  // namespace

// Converts the exception in flight into eventq::error. Call only from a catch block.
[[noreturn]] void rethrow_as_error(const config& cfg, const std::string& what) {
  const std::string where = "PostgreSQL at '" + cfg.display + "'";
  try {
    throw;
  } catch (const error&) {
    throw;
  } catch (const pqxx::in_doubt_error& e) {
    throw error(errc::database_unavailable,
                "the connection to " + where + " broke while committing (" + what +
                    "): the transaction may or may not have been written; check EventQueue "
                    "before retrying. The next call reconnects. (" +
                    e.what() + ")");
  } catch (const pqxx::broken_connection& e) {
    throw error(errc::database_unavailable,
                "cannot reach " + where + " while " + what + ": " + e.what() +
                    " Check that the server is running and reachable; the next call "
                    "reconnects.");
  } catch (const pqxx::sql_error& e) {
    // statement_timeout (57014) and lock_timeout (55P03) bound a call that the server could not
    // finish in time: the database is busy or locked, not the statement wrong.
    if (e.sqlstate() == "57014" || e.sqlstate() == "55P03") {
      throw error(errc::database_unavailable,
                  where + " did not finish " + what + " in time (SQLSTATE " + e.sqlstate() + ": " +
                      trimmed(e.what()) +
                      "): a lock held elsewhere (see pg_locks) or a busy server; the URL's "
                      "statement_timeout and lock_timeout set the bounds. The call can be "
                      "retried.");
    }
    if (is_unavailable(e)) {
      throw error(errc::database_unavailable, where + " is unavailable while " + what +
                                                  " (SQLSTATE " + e.sqlstate() + "): " + e.what() +
                                                  " The next call reconnects.");
    }
    std::string hint;
    if (e.sqlstate() == "42501") {
      hint =
          " Grant the connecting role USAGE and CREATE on the schema, or ask an operator "
          "to run schema/postgres.sql.";
    }
    throw error(errc::database_error, where + " refused a statement while " + what + " (SQLSTATE " +
                                          e.sqlstate() + "): " + e.what() + hint);
  } catch (const std::exception& e) {
    throw error(errc::database_error, where + ": " + what + " failed: " + e.what());
  }
}

void throw_cut_off(const config& cfg, const std::string& what, std::chrono::milliseconds limit) {
  throw error(errc::database_unavailable,
              "no reply from PostgreSQL at '" + cfg.display + "' while " + what + " within " +
                  std::to_string(limit.count()) +
                  " ms (statement_timeout plus a second), or the call was cancelled by stop(): "
                  "the connection was dropped (network black hole, failover, or an unreachable "
                  "server); the next call reconnects");
}

bool looks_closed(const pqxx::connection& c) {
  pollfd p{c.sock(), POLLIN, 0};
  return p.fd < 0 || ::poll(&p, 1, 0) != 0;
}

std::unique_ptr<pqxx::connection> postgres_storage::connect(const char* role) {
  auto c = std::make_unique<pqxx::connection>(m_cfg.conninfo);  // bounded by connect_timeout
  // The session setup below is a round trip per setting: watched like any call, so a server
  // that accepted the connection and then went silent cannot hold the caller.
  std::string_view r(role);
  auto slot = r == "reader"      ? watchdog::reader
              : r == "admin"     ? watchdog::admin
              : r == "listening" ? watchdog::listener
              : r == "notifier"  ? watchdog::notifier
                                 : watchdog::writer;
  try {
    watchdog::armed watch(*m_watchdog, slot, *c, false);
    set_up(*c, role);
  } catch (const pqxx::broken_connection&) {
    if (m_watchdog->fired(slot)) {
      throw_cut_off(m_cfg, std::string("setting up a connection (") + role + ")",
                    m_watchdog->limit());
    }
    throw;
  }
  return c;
}

void postgres_storage::set_up(pqxx::connection& conn, const char* role) {
  auto* c = &conn;
  // set_variable: libpqxx re-applies these if it ever re-establishes the connection itself.
  c->set_variable("client_min_messages", "warning");
  c->set_variable("search_path", m_cfg.schema);
  c->set_variable("application_name", std::string("'eventq ") + role + "'");
  // A poll, a raise or a lease renewal fails (database_unavailable) instead of waiting without
  // end behind an operator's lock or a runaway statement.
  c->set_variable("statement_timeout", std::to_string(m_cfg.statement_timeout.count()));
  c->set_variable("lock_timeout", std::to_string(m_cfg.lock_timeout.count()));
  // The page query's best plan depends on its snapshot bounds; a cached generic plan can scan
  // the whole Stamp range for every page of a backlog. Only the reader runs it: the writer's
  // INSERTs keep their cached plan (planning each one again cost the raise rate a tenth).
  //
  // And a page is always read in index order: with no statistics, or statistics taken while
  // the table was nearly empty (it usually is, between cleanups), the planner guessed 54 rows
  // for a 100,000-row backlog and chose a bitmap scan of the whole range plus a sort, for
  // every page: 33 ms a page instead of 0.2 ms, a drain at 10k events/s instead of 170k.
  // enable_bitmapscan=off leaves it the ordered walk of the (Stamp, Id) index, which stops at
  // the LIMIT (a sequential scan costs more whatever the guess). The reader's other statements
  // are key lookups. (enable_sort=off would do it too, but gave the one-statement poll's outer
  // ORDER BY a plan that took 200 ms.)
  if (std::string_view(role) == "reader") {
    c->set_variable("plan_cache_mode", "force_custom_plan");
    c->set_variable("enable_bitmapscan", "off");
  }
  // The reader only writes cursors: one lost to a server crash means redelivery (handlers are
  // idempotent), never a lost event, so its commits need not wait for the WAL flush.
  //
  // The notifier only sends NOTIFY. PostgreSQL gives a NOTIFY transaction an xid and a commit
  // record, so with synchronous_commit on every wake-up waited for a WAL flush of its own,
  // competing with the raises' flushes. A wake-up needs no durability: listeners see it once it
  // commits, and a server crash disconnects them anyway (they read again when they reconnect).
  if (std::string_view(role) == "reader" || std::string_view(role) == "notifier") {
    c->set_variable("synchronous_commit", "off");
  }
  prepare_statements(*c, m_cfg.schema);
}

pqxx::connection& postgres_storage::writer() {
  if (!m_writer || !m_writer->is_open()) m_writer = connect("writer");
  return *m_writer;
}

pqxx::connection& postgres_storage::reader() {
  if (!m_reader || !m_reader->is_open()) m_reader = connect("reader");
  return *m_reader;
}

}  // namespace eventq::postgres
