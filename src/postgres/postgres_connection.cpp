// PostgreSQL errors: converting libpqxx's exceptions into eventq::error, and telling a dead
// connection. (Connections are opened by the pool: postgres_pool.cpp.)
#include "postgres/postgres_connection.h"

#include <poll.h>

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

}  // namespace eventq::postgres
