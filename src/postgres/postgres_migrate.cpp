// PostgreSQL migrations: the schema version, and applying migrations/postgres/ in order.
#include <pqxx/pqxx>

#include "eventq/error.h"
#include "migrations.h"
#include "postgres/postgres_storage.h"

namespace eventq::postgres {

// The version recorded in `schema`, or 0 when it has no EventQueueSchema table. Needs only
// USAGE on the schema and SELECT on that table.
int postgres_storage::schema_version(pqxx::transaction_base& tx) const {
  // Schema names are checked (letters, digits, '_') and unquoted everywhere, as here.
  auto table =
      tx.exec_params1("SELECT to_regclass($1) IS NOT NULL", m_cfg.schema + ".EventQueueSchema");
  if (!table[0].as<bool>()) return 0;
  return tx.exec1("SELECT coalesce(max(Version), 0) FROM " + m_cfg.schema + ".EventQueueSchema")[0]
      .as<int>();
}

void postgres_storage::migrate(pqxx::connection& c) {
  const std::string& schema = m_cfg.schema;
  auto all = detail::postgres_migrations();
  const int newest = all.empty() ? 0 : all.back().version;
  auto too_new = [&](int version) {
    return error(errc::schema_too_new,
                 "PostgreSQL schema '" + schema + "' at '" + m_cfg.display +
                     "' has eventq schema version " + std::to_string(version) +
                     " but this library knows versions up to " + std::to_string(newest) +
                     ": upgrade the application (or the eventq command) to a newer eventq; "
                     "nothing was changed");
  };
  int version = 0;
  {
    // The usual case, and the only one a role without CREATE rights (schema/postgres-roles.sql)
    // can pass: the schema is current, nothing to create or lock.
    pqxx::read_transaction check(c);
    version = schema_version(check);
  }
  if (version == newest) return;
  if (version > newest) throw too_new(version);

  pqxx::work tx(c);
  // Serialises openers of this schema: the first migrates, the others then find it current.
  // What follows reads the catalogs by statement and takes locks (CREATE ... IF NOT EXISTS), so
  // it sees what the opener before us committed while we waited; a lookup served from this
  // session's caches (to_regclass) might not.
  tx.exec("SELECT pg_advisory_xact_lock(hashtext('eventq migrate ' || lower(" + tx.quote(schema) +
          ")))");
  try {
    auto exists =
        tx.exec("SELECT 1 FROM pg_namespace WHERE nspname = lower(" + tx.quote(schema) + ")");
    if (exists.empty()) tx.exec("CREATE SCHEMA " + schema);
    tx.exec("SET LOCAL search_path TO " + schema);
    tx.exec(
        "CREATE TABLE IF NOT EXISTS EventQueueSchema (Version int PRIMARY KEY, "
        "Description text NOT NULL, AppliedAt timestamptz NOT NULL DEFAULT now())");
    version = tx.exec1("SELECT coalesce(max(Version), 0) FROM EventQueueSchema")[0].as<int>();
    if (version > newest) throw too_new(version);
    for (const auto& m : all) {
      if (m.version <= version) continue;
      tx.exec(m.sql);
      tx.exec("INSERT INTO EventQueueSchema (Version, Description) VALUES (" +
              std::to_string(m.version) + ", " + tx.quote(std::string(m.name)) + ")");
    }
  } catch (const pqxx::insufficient_privilege& e) {
    throw error(errc::schema_invalid,
                "PostgreSQL schema '" + schema + "' at '" + m_cfg.display + "' is at eventq " +
                    "schema version " + std::to_string(version) + " and needs migrations up to " +
                    std::to_string(newest) + ", which this role may not apply (" + e.what() +
                    "): run migrations as the schema owner (eventq migrate, or open the queue "
                    "once with the owner's role), then open again; nothing was changed");
  }
  tx.commit();
}

}  // namespace eventq::postgres
