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
};

/// postgresql://... or postgres://... with optional query parameters `schema=NAME`,
/// `notify=on|off`, `statement_timeout=MS` and `lock_timeout=MS`, or a libpq "key=value ..."
/// string with the same as `eventq_schema=NAME`, `eventq_notify=on|off`,
/// `eventq_statement_timeout=MS`, `eventq_lock_timeout=MS`. libpq gets connect_timeout=10,
/// keepalives (idle 10 s, then every 5 s, 3 probes) and tcp_user_timeout=10000 unless the URL
/// sets them. Throws eventq::error(invalid_url) naming the problem.
config parse_url(std::string_view url);

/// Throws eventq::error(code) unless `schema` is a plain SQL identifier (letters, digits, '_',
/// not starting with a digit, at most 63 bytes).
void check_schema_name(std::string_view schema, bool in_url);

/// The NOTIFY channel of a schema.
std::string channel_of(std::string_view schema);

}  // namespace eventq::postgres
