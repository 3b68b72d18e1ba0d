// Parsing a PostgreSQL queue URL into what libpq gets and what eventq keeps for itself.
#pragma once

#include <string>
#include <string_view>

namespace eventq::postgres {

/// A PostgreSQL queue URL taken apart.
struct config {
  std::string conninfo;  ///< for libpq: eventq's own parameters removed, defaults added
  std::string schema;    ///< where the tables live, as written (unquoted in SQL: folds to lower)
  bool notify = true;    ///< send and listen for NOTIFY wake-ups
  std::string display;   ///< the URL for messages, password redacted
};

/// postgresql://... or postgres://... with optional query parameters `schema=NAME` and
/// `notify=on|off`, or a libpq "key=value ..." string with optional `eventq_schema=NAME` and
/// `eventq_notify=on|off`. Throws eventq::error(invalid_url) naming the problem.
config parse_url(std::string_view url);

/// Throws eventq::error(code) unless `schema` is a plain SQL identifier (letters, digits, '_',
/// not starting with a digit, at most 63 bytes).
void check_schema_name(std::string_view schema, bool in_url);

/// The NOTIFY channel of a schema.
std::string channel_of(std::string_view schema);

}  // namespace eventq::postgres
