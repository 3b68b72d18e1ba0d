// What the PostgreSQL storage's registry, cleanup and statistics calls share: transactions
// whose statements name the queue's schema, the admin connection's call wrapper, and time
// conversions. Internal to postgres_operations.cpp and postgres_cleanup.cpp.
#pragma once

#include <pqxx/pqxx>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "eventq/error.h"
#include "postgres/postgres_connection.h"
#include "postgres/postgres_statements.h"
#include "postgres/postgres_storage.h"
#include "util.h"

namespace eventq::postgres {

using std::chrono::system_clock;

// Microseconds since the epoch; NULL where a time_point cannot hold the value ('infinity').
#define EVENTQ_US(col)                                                   \
  "CASE WHEN " col                                                       \
  " BETWEEN '1678-01-01 00:00:00+00' AND '2261-12-31 00:00:00+00' THEN " \
  "(extract(epoch FROM " col ") * 1000000)::bigint END"

inline std::optional<system_clock::time_point> time_field(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return system_clock::time_point(std::chrono::microseconds(f.as<std::int64_t>()));
}

inline std::string timestamptz(system_clock::time_point t) { return detail::format_utc(t) + "+00"; }

// A transaction whose statements are qualify()'d with the queue's schema: none depends on
// the connection's search_path.
template <class T>
class in_schema {
 public:
  in_schema(pqxx::connection& c, const std::string& schema) : m_tx(c), m_schema(schema) {}
  pqxx::result exec(std::string_view q) { return m_tx.exec(qualify(q, m_schema)); }
  pqxx::row exec1(std::string_view q) { return m_tx.exec1(qualify(q, m_schema)); }
  template <class... A>
  pqxx::result exec_params(std::string_view q, A&&... args) {
    return m_tx.exec_params(qualify(q, m_schema), std::forward<A>(args)...);
  }
  template <class... A>
  pqxx::row exec_params1(std::string_view q, A&&... args) {
    return m_tx.exec_params1(qualify(q, m_schema), std::forward<A>(args)...);
  }
  void commit() { m_tx.commit(); }

 private:
  T m_tx;
  const std::string& m_schema;
};

// Runs f(admin connection) under the admin mutex; a connection that broke is replaced next time.
template <class F>
auto postgres_storage::on_admin(const char* what, F&& f) {
  std::lock_guard lk(m_admin_mutex);
  try {
    auto c = m_pool->acquire(*m_watchdog, watchdog::admin, what);
    try {
      watchdog::armed watch(*m_watchdog, watchdog::admin, c.conn());
      return f(c.conn());
    } catch (const error&) {
      throw;
    } catch (...) {
      c.discard();
      throw;
    }
  } catch (const error&) {
    throw;
  } catch (...) {
    if (m_watchdog->fired(watchdog::admin)) throw_cut_off(m_cfg, what, m_watchdog->limit());
    rethrow_as_error(m_cfg, what);
  }
}

}  // namespace eventq::postgres
