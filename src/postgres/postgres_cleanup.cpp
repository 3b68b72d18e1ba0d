// The PostgreSQL storage, part three: cleanup (expired rows, dead instances and the markers
// of their cursors) and the records of events a session's listener failed on. Ages are measured by
// the server's clock (now()), as leases are.
#include <pqxx/pqxx>

#include <string>

#include "postgres/postgres_admin.h"

namespace eventq::postgres {

namespace {

// Rows cleanup may delete: $1 retention cutoff, $2 hard cutoff. A row is kept while the cursor
// snapshot of a live instance does not see its Stamp (the instance has not read it; deleting it
// would make that instance report Missed), or the cursor is not a snapshot.
constexpr const char* k_live_cte =
    "WITH live AS MATERIALIZED (SELECT i.Name, eventq_cursor_snapshot(p.Value) AS Snap "
    "FROM EventQueueInstances i JOIN Properties p ON p.Key = 'EQStamp_' || i.Name "
    "WHERE i.LeaseUntil > now()) ";
// The cutoffs are ages ($1, $2: milliseconds) measured from the server's clock, like leases. A
// row whose Created is 'infinity' (stored before schema 4 forbade it; every instance refuses
// it) counts as past the hard cutoff.
constexpr const char* k_expired_where =
    "(e.Created = 'infinity' OR (e.Created < now() - $1::bigint * interval '1 millisecond' "
    "AND (e.Created < now() - $2::bigint * interval '1 millisecond' OR NOT EXISTS ("
    "SELECT 1 FROM live l WHERE coalesce(NOT pg_visible_in_snapshot(e.Stamp, l.Snap), true)))))";

// The ages of `bounds` in milliseconds: as given, else from the time points and this host's
// clock (a caller that gave only time points).
std::pair<long long, long long> ages_of(const expiry& bounds) {
  auto age = [now = system_clock::now()](std::chrono::milliseconds given,
                                         system_clock::time_point at) {
    if (given.count() >= 0) return static_cast<long long>(given.count());
    return static_cast<long long>(
        std::chrono::duration_cast<std::chrono::milliseconds>(now - at).count());
  };
  return {age(bounds.keep, bounds.cutoff), age(bounds.max_age, bounds.hard_cutoff)};
}

}  // namespace

std::size_t postgres_storage::count_expired(const expiry& bounds) {
  return on_admin("counting expired events", [&](pqxx::connection& c) {
    in_schema<pqxx::nontransaction> tx(c, m_cfg.schema);
    auto [keep, max_age] = ages_of(bounds);
    auto r = tx.exec_params1(
        std::string(k_live_cte) + "SELECT count(*) FROM EventQueue e WHERE " + k_expired_where,
        keep, max_age);
    return static_cast<std::size_t>(r[0].as<std::int64_t>());
  });
}

std::size_t postgres_storage::delete_expired(const expiry& bounds, std::size_t max_rows) {
  return on_admin("deleting expired events", [&](pqxx::connection& c) {
    auto [keep, max_age] = ages_of(bounds);
    in_schema<pqxx::work> tx(c, m_cfg.schema);
    auto r = tx.exec_params(std::string(k_live_cte) +
                                "DELETE FROM EventQueue WHERE Id IN (SELECT e.Id FROM EventQueue e "
                                "WHERE " +
                                k_expired_where + " ORDER BY e.Created LIMIT $3)",
                            keep, max_age, static_cast<long long>(max_rows));
    // The deletion record is read by instances that run; one past the hard maximum age has
    // been read by every instance still registered.
    tx.exec_params(
        "DELETE FROM EventQueueDeleted WHERE At < now() - $1::bigint * interval '1 millisecond'",
        max_age);
    tx.commit();
    return static_cast<std::size_t>(r.affected_rows());
  });
}

std::size_t postgres_storage::remove_dead_instances(const expiry& bounds) {
  return on_admin("removing dead instances", [&](pqxx::connection& c) {
    // Leases are the server's times: the cutoff is too (now() is the transaction's start, the
    // same in both statements), so a cleanup host with a wrong clock cannot remove an instance
    // early, which would make it start over from its start position.
    auto max_age = ages_of(bounds).second;
    const std::string marker(detail::k_removed_cursor);
    in_schema<pqxx::work> tx(c, m_cfg.schema);
    // The cursor becomes a marker (see k_removed_cursor): the instance, if it comes back,
    // reports Missed. A cleanup role set up by an older schema/postgres-roles.sql may only
    // delete cursors: then they are deleted, as before, and the operator told how to fix it.
    const char* dead =
        "(SELECT 'EQStamp_' || Name FROM EventQueueInstances WHERE LeaseUntil < now() - "
        "$1::bigint * interval '1 millisecond')";
    if (tx.exec_params1("SELECT has_column_privilege(quote_ident($1) || '.properties', 'value', "
                        "'UPDATE')",
                        m_cfg.schema)[0]
            .as<bool>()) {
      tx.exec_params(std::string("UPDATE Properties SET Value = $2 || to_char(now() AT TIME ZONE "
                                 "'UTC', 'YYYY-MM-DD HH24:MI:SS.MS') WHERE Key IN ") +
                         dead,
                     max_age, marker);
    } else {
      auto r = tx.exec_params(std::string("DELETE FROM Properties WHERE Key IN ") + dead, max_age);
      if (r.affected_rows() > 0 && !m_marker_warned.exchange(true)) {
        log(log_level::warning,
            "cleanup deleted the cursors of dead instances instead of marking them removed: its "
            "role may not UPDATE Properties. An instance that comes back will start over without "
            "reporting Missed; run schema/postgres-roles.sql again to give cleanup that right");
      }
    }
    // Markers are kept for ten hard maximum ages, then deleted when no instance is behind them.
    tx.exec_params(
        "DELETE FROM Properties p WHERE p.Key LIKE 'EQStamp\\_%' AND starts_with(p.Value, $2) "
        "AND substr(p.Value, length($2) + 1) < to_char((now() - 10 * $1::bigint * interval "
        "'1 millisecond') AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS') AND NOT EXISTS "
        "(SELECT 1 FROM EventQueueInstances i WHERE 'EQStamp_' || i.Name = p.Key)",
        max_age, marker);
    auto r = tx.exec_params(
        "DELETE FROM EventQueueInstances WHERE LeaseUntil < now() - $1::bigint * interval "
        "'1 millisecond'",
        max_age);
    tx.commit();
    return static_cast<std::size_t>(r.affected_rows());
  });
}

std::size_t postgres_storage::delete_old_failures(const expiry& bounds, bool dry_run) {
  return on_admin("deleting old failure records", [&](pqxx::connection& c) -> std::size_t {
    auto max_age = ages_of(bounds).second;
    in_schema<pqxx::work> tx(c, m_cfg.schema);
    const char* old =
        " FROM EventQueueFailures WHERE FailedAt < now() - $1::bigint * interval "
        "'1 millisecond'";
    if (dry_run) {
      return tx.exec_params1(std::string("SELECT count(*)") + old, max_age)[0].as<std::size_t>();
    }
    // A cleanup role set up by an older schema/postgres-roles.sql may not delete them.
    if (!tx.exec_params1("SELECT has_table_privilege(quote_ident($1) || '.eventqueuefailures', "
                         "'DELETE')",
                         m_cfg.schema)[0]
             .as<bool>()) {
      if (!m_failures_warned.exchange(true)) {
        log(log_level::warning,
            "cleanup cannot delete old failure records (EventQueueFailures): its role may not "
            "DELETE there; run schema/postgres-roles.sql again to give cleanup that right");
      }
      return 0;
    }
    auto r = tx.exec_params(std::string("DELETE") + old, max_age);
    tx.commit();
    return static_cast<std::size_t>(r.affected_rows());
  });
}

void postgres_storage::record_failures(std::span<const failure_record> failures) {
  if (failures.empty()) return;
  on_admin("recording failed events", [&](pqxx::connection& c) {
    in_schema<pqxx::work> tx(c, m_cfg.schema);
    for (const auto& f : failures) {
      tx.exec_params(
          "INSERT INTO EventQueueFailures (InstanceName, SessionName, EventId, EventType, Error, "
          "Attempts, FailedAt) VALUES ($1, $2, $3, $4, $5, $6, $7::timestamptz)",
          f.instance, f.session, f.event_id, f.event_type, f.error, f.attempts,
          timestamptz(f.failed_at));
    }
    tx.commit();
    return 0;
  });
}

std::vector<failure_record> postgres_storage::failures(std::size_t limit,
                                                       std::string_view instance) {
  return on_admin("reading failed events", [&](pqxx::connection& c) {
    in_schema<pqxx::nontransaction> tx(c, m_cfg.schema);
    auto rows = tx.exec_params(
        "SELECT Id, InstanceName, SessionName, EventId, EventType, Error, Attempts, " EVENTQ_US(
            "FailedAt") " FROM EventQueueFailures WHERE $1 = '' OR InstanceName = $1 "
                        "ORDER BY Id DESC LIMIT $2",
        std::string(instance),
        static_cast<std::int64_t>(std::min<std::size_t>(limit, INT64_MAX)));
    std::vector<failure_record> out;
    for (const auto& r : rows) {
      failure_record f;
      f.id = r[0].as<std::int64_t>();
      f.instance = r[1].as<std::string>();
      f.session = r[2].as<std::string>();
      f.event_id = r[3].as<std::int64_t>();
      f.event_type = r[4].as<std::string>();
      f.error = r[5].as<std::string>();
      f.attempts = r[6].as<int>();
      f.failed_at = time_field(r[7]).value_or(system_clock::time_point{});
      out.push_back(std::move(f));
    }
    return out;
  });
}

std::int64_t postgres_storage::failure_count() {
  return on_admin("counting failed events", [&](pqxx::connection& c) {
    in_schema<pqxx::nontransaction> tx(c, m_cfg.schema);
    return tx.exec1("SELECT count(*) FROM EventQueueFailures")[0].as<std::int64_t>();
  });
}

#undef EVENTQ_US

}  // namespace eventq::postgres
