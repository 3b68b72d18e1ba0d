// Parsing a PostgreSQL queue URL into what libpq gets and what eventq keeps for itself.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

namespace eventq::postgres {

/// A PostgreSQL queue URL taken apart.
struct config {
  std::string conninfo;  ///< for libpq: eventq's own parameters removed, defaults added
  std::string schema;    ///< where the tables live, as written (unquoted in SQL: folds to lower)
  bool notify = true;    ///< send and listen for NOTIFY wake-ups
  std::string display;   ///< the URL for messages, password redacted
  /// Longest a statement may run (the server's statement_timeout); a call that gets no reply
  /// for this long plus a second is cut off by the client (see postgres_watchdog.h). 0: none.
  std::chrono::milliseconds statement_timeout{30000};
  /// Longest a statement waits for a table or row lock (the server's lock_timeout). 0: none.
  std::chrono::milliseconds lock_timeout{10000};
  /// Statement connections that the queues of this process share (see postgres_pool.h): 1 to
  /// 64. Queues on the same server, database and user with the same timeouts and pool settings
  /// share one pool, whatever their schemas.
  int pool_size = 1;
  /// PgBouncer's (or another pooler's) transaction mode sits between eventq and the server:
  /// no prepared statements, no session settings, no LISTEN (notify must be off).
  bool transaction_pooling = false;
  bool notify_given = false;  ///< the URL set notify (checked against transaction_pooling)

  /// What the connections of one pool must agree on: the libpq parameters and the settings
  /// applied to every connection.
  std::string pool_key() const;
};

/// postgresql://... or postgres://... with optional query parameters `schema=NAME`,
/// `notify=on|off`, `statement_timeout=MS`, `lock_timeout=MS`, `pool_size=N` and
/// `pool_mode=session|transaction`, or a libpq "key=value ..." string with the same as
/// `eventq_schema=NAME`, `eventq_notify=on|off`, `eventq_statement_timeout=MS`,
/// `eventq_lock_timeout=MS`, `eventq_pool_size=N`, `eventq_pool_mode=...`. libpq gets
/// connect_timeout=10, keepalives (idle 10 s, then every 5 s, 3 probes) and tcp_user_timeout=10000
/// unless the URL sets them. Throws eventq::error(invalid_url) naming the problem.
config parse_url(std::string_view url);

/// Throws eventq::error(code) unless `schema` is a plain SQL identifier (letters, digits, '_',
/// not starting with a digit, at most 63 bytes).
void check_schema_name(std::string_view schema, bool in_url);

/// The NOTIFY channel of a schema.
std::string channel_of(std::string_view schema);

}  // namespace eventq::postgres
