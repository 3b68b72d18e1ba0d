// Helpers for the PostgreSQL tests: the test server from scripts/with-postgres, fresh schemas,
// raw SQL through libpqxx (what an operator, or an application doing the outbox pattern, does).
#pragma once

#include <doctest/doctest.h>

#include <cstdlib>
#include <iostream>
#include <pqxx/pqxx>
#include <random>
#include <string>

#include "eventq/signing.h"

namespace eventq::test::pg {

/// $EVENTQ_TEST_PG_URL. The PostgreSQL tests never skip: without a server they fail, saying how
/// to provide one.
inline std::string server_url() {
  const char* url = std::getenv("EVENTQ_TEST_PG_URL");
  if (!url || !*url) {
    std::cerr << "EVENTQ_TEST_PG_URL is not set: run the PostgreSQL tests under "
                 "scripts/with-postgres, e.g.\n  scripts/with-postgres ctest --test-dir build "
                 "-L postgres --output-on-failure\n";
    FAIL("EVENTQ_TEST_PG_URL is not set (run under scripts/with-postgres)");
  }
  return url;
}

/// $EVENTQ_TEST_PG_CTL: `ctl("restart")` restarts the test server.
inline void ctl(const std::string& action) {
  const char* script = std::getenv("EVENTQ_TEST_PG_CTL");
  REQUIRE_MESSAGE(script != nullptr, "EVENTQ_TEST_PG_CTL is not set (run under with-postgres)");
  std::string cmd = std::string(script) + " " + action + " >/dev/null";
  REQUIRE(std::system(cmd.c_str()) == 0);
}

/// A new random schema name, e.g. "t_5f3a9c0e12".
inline std::string fresh_schema() {
  static std::mt19937_64 rng(std::random_device{}());
  static const char hex[] = "0123456789abcdef";
  std::string s = "t_";
  auto v = rng();
  for (int i = 0; i < 12; ++i) s += hex[(v >> (i * 4)) & 15];
  return s;
}

/// The server URL with `schema=NAME` (and any extra query parameters), and the queue
/// parameters the harness asks for ($EVENTQ_TEST_PG_QUEUE_PARAMS, e.g. pool_mode=transaction
/// behind PgBouncer).
inline std::string url_with_schema(const std::string& schema, const std::string& extra = "") {
  std::string base = server_url();
  std::string url =
      base + (base.find('?') == std::string::npos ? "?" : "&") + "schema=" + schema + extra;
  const char* params = std::getenv("EVENTQ_TEST_PG_QUEUE_PARAMS");
  if (params && *params) url += std::string("&") + params;
  return url;
}

/// The schema a URL made by url_with_schema names.
inline std::string schema_of(const std::string& url) {
  auto p = url.find("schema=");
  auto e = url.find('&', p);
  return url.substr(p + 7, e == std::string::npos ? std::string::npos : e - p - 7);
}

/// The server itself, not PgBouncer in front of it ($EVENTQ_TEST_PG_DIRECT_URL, set by
/// with-postgres --pgbouncer): what raw SQL with session settings needs.
inline std::string direct_url() {
  const char* direct = std::getenv("EVENTQ_TEST_PG_DIRECT_URL");
  return direct && *direct ? std::string(direct) : server_url();
}

/// A raw connection to the test database with search_path set to `schema`.
inline std::unique_ptr<pqxx::connection> connect(const std::string& schema) {
  auto c = std::make_unique<pqxx::connection>(direct_url());
  c->set_variable("client_min_messages", "warning");
  c->set_variable("search_path", schema);
  return c;
}

inline void exec(const std::string& schema, const std::string& sql) {
  auto c = connect(schema);
  pqxx::work tx(*c);
  tx.exec(sql);
  tx.commit();
}

inline std::string text(const std::string& schema, const std::string& sql) {
  auto c = connect(schema);
  pqxx::nontransaction tx(*c);
  auto r = tx.exec(sql);
  return r.empty() || r[0][0].is_null() ? std::string() : r[0][0].as<std::string>();
}

/// The signing key of instances that keep their secret in the database (no options::secret):
/// what an application raising through the outbox helper uses. REQUIRES: a queue was opened.
inline eventq::signing_key db_key(const std::string& schema) {
  auto secret = text(schema, "SELECT Value FROM Properties WHERE Key = 'EQSecret'");
  REQUIRE_MESSAGE(!secret.empty(), "no EQSecret in schema " << schema);
  return eventq::signing_key{"1", secret};
}

}  // namespace eventq::test::pg
