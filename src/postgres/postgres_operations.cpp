// The PostgreSQL storage, part two: the instance registry, task leases, cleanup and statistics.
// Lease times come from the server's clock (now()), so hosts with skewed clocks agree on who is
// live. Everything here runs on the admin connection, under its own mutex.
#include <pqxx/pqxx>

#include "eventq/error.h"
#include "postgres/postgres_storage.h"
#include "util.h"

namespace eventq::postgres {

namespace {

using std::chrono::system_clock;

#define EVENTQ_US(col) "(extract(epoch FROM " col ") * 1000000)::bigint"

std::optional<system_clock::time_point> time_field(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return system_clock::time_point(std::chrono::microseconds(f.as<std::int64_t>()));
}

std::string timestamptz(system_clock::time_point t) { return detail::format_utc(t) + "+00"; }

// Rows cleanup may delete: $1 retention cutoff, $2 hard cutoff. A row is kept while the cursor
// snapshot of a live instance does not see its Stamp (the instance has not read it; deleting it
// would make that instance report Missed), or the cursor is not a snapshot.
constexpr const char* k_live_cte =
    "WITH live AS MATERIALIZED (SELECT i.Name, eventq_cursor_snapshot(p.Value) AS Snap "
    "FROM EventQueueInstances i JOIN Properties p ON p.Key = 'EQStamp_' || i.Name "
    "WHERE i.LeaseUntil > now()) ";
constexpr const char* k_expired_where =
    "e.Created < $1::timestamptz AND (e.Created < $2::timestamptz OR NOT EXISTS ("
    "SELECT 1 FROM live l WHERE coalesce(NOT pg_visible_in_snapshot(e.Stamp, l.Snap), true)))";

}  // namespace

// Runs f(admin connection) under the admin mutex; a connection that broke is replaced next time.
template <class F>
auto postgres_storage::on_admin(const char* what, F&& f) {
  std::lock_guard lk(m_admin_mutex);
  try {
    if (!m_admin || !m_admin->is_open()) m_admin = connect("admin");
    return f(*m_admin);
  } catch (const error&) {
    throw;
  } catch (...) {
    m_admin.reset();
    rethrow_as_error(m_cfg, what);
  }
}

int postgres_storage::schema_version() {
  return on_admin("reading the schema version", [](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    return tx.exec1("SELECT coalesce(max(Version), 0) FROM EventQueueSchema")[0].as<int>();
  });
}

void postgres_storage::register_instance(const instance_registration& who,
                                         std::chrono::milliseconds lease) {
  on_admin("registering the instance", [&](pqxx::connection& c) {
    pqxx::work tx(c);
    auto r = tx.exec_params(
        "INSERT INTO EventQueueInstances (Name, Host, Pid, Version, Token, Started, Heartbeat, "
        "LeaseUntil) VALUES ($1, $2, $3, $4, $5, now(), now(), "
        "now() + $6::bigint * interval '1 millisecond') "
        "ON CONFLICT (Name) DO UPDATE SET Host = EXCLUDED.Host, Pid = EXCLUDED.Pid, "
        "Version = EXCLUDED.Version, Token = EXCLUDED.Token, Started = EXCLUDED.Started, "
        "Heartbeat = EXCLUDED.Heartbeat, LeaseUntil = EXCLUDED.LeaseUntil "
        "WHERE EventQueueInstances.LeaseUntil <= now() "
        "OR EventQueueInstances.Token = EXCLUDED.Token",
        who.name, who.host, static_cast<long long>(who.pid), who.version, who.token,
        static_cast<long long>(lease.count()));
    if (r.affected_rows() == 0) {
      auto h = tx.exec_params1(
          "SELECT Host, Pid, "
          "to_char(Heartbeat AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS'), "
          "to_char(LeaseUntil AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS') "
          "FROM EventQueueInstances WHERE Name = $1",
          who.name);
      throw error(errc::instance_name_in_use,
                  detail::name_in_use_message(who.name, h[0].c_str(), h[1].as<std::int64_t>(),
                                              h[2].c_str(), h[3].c_str()));
    }
    tx.commit();
    return 0;
  });
}

bool postgres_storage::renew_instance(std::string_view name, std::string_view token,
                                      std::chrono::milliseconds lease) {
  return on_admin("renewing the instance lease", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    auto r = tx.exec_params(
        "UPDATE EventQueueInstances SET Heartbeat = now(), "
        "LeaseUntil = now() + $3::bigint * interval '1 millisecond' "
        "WHERE Name = $1 AND Token = $2",
        std::string(name), std::string(token), static_cast<long long>(lease.count()));
    return r.affected_rows() == 1;
  });
}

void postgres_storage::release_instance(std::string_view name, std::string_view token) {
  on_admin("releasing the instance lease", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    tx.exec_params(
        "UPDATE EventQueueInstances SET Heartbeat = now(), LeaseUntil = now() "
        "WHERE Name = $1 AND Token = $2",
        std::string(name), std::string(token));
    return 0;
  });
}

std::vector<instance_info> postgres_storage::instances() {
  return on_admin("listing instances", [](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    auto rows = tx.exec(
        "SELECT Instance, Cursor, Behind, Live, HeartbeatAgeSeconds, " EVENTQ_US(
            "Heartbeat") ", " EVENTQ_US("LeaseUntil") ", Host, Pid, Version, " EVENTQ_US("Started") " FROM EventQueueLag ORDER BY Instance");
    std::vector<instance_info> out;
    for (const auto& row : rows) {
      instance_info i;
      i.name = row[0].as<std::string>();
      if (!row[1].is_null()) i.cursor = row[1].as<std::string>();
      if (!row[2].is_null()) i.behind = row[2].as<std::int64_t>();
      i.live = !row[3].is_null() && row[3].as<bool>();
      if (!row[4].is_null()) i.heartbeat_age_seconds = row[4].as<double>();
      i.heartbeat = time_field(row[5]);
      i.lease_until = time_field(row[6]);
      i.host = row[7].as<std::string>();
      i.pid = row[8].as<std::int64_t>();
      i.version = row[9].as<std::string>();
      i.started = time_field(row[10]);
      out.push_back(std::move(i));
    }
    return out;
  });
}

queue_summary postgres_storage::summary() {
  return on_admin("reading statistics", [](pqxx::connection& c) {
    queue_summary out;
    // One snapshot, so the totals and the per-type rows agree.
    pqxx::transaction<pqxx::repeatable_read, pqxx::read_only> tx(c);
    out.schema_version =
        tx.exec1("SELECT coalesce(max(Version), 0) FROM EventQueueSchema")[0].as<int>();
    auto rows = tx.exec("SELECT EventType, Rows, " EVENTQ_US("Oldest") ", " EVENTQ_US(
        "Newest") ", MinId, MaxId FROM EventQueueStats ORDER BY EventType");
    for (const auto& row : rows) {
      type_summary t;
      t.type = row[0].as<std::string>();
      t.rows = row[1].as<std::int64_t>();
      t.oldest = time_field(row[2]).value_or(system_clock::time_point{});
      t.newest = time_field(row[3]).value_or(system_clock::time_point{});
      auto min_id = row[4].as<std::int64_t>();
      auto max_id = row[5].as<std::int64_t>();
      out.rows += t.rows;
      if (!out.oldest || t.oldest < *out.oldest) out.oldest = t.oldest;
      if (!out.newest || t.newest > *out.newest) out.newest = t.newest;
      if (!out.min_id || min_id < *out.min_id) out.min_id = min_id;
      if (!out.max_id || max_id > *out.max_id) out.max_id = max_id;
      out.types.push_back(std::move(t));
    }
    auto task = tx.exec("SELECT " EVENTQ_US(
        "LastRun") ", coalesce(LastResult, '') FROM EventQueueTasks WHERE Name = 'cleanup'");
    if (!task.empty()) {
      out.last_cleanup = time_field(task[0][0]);
      out.last_cleanup_result = task[0][1].as<std::string>();
    }
    tx.commit();
    return out;
  });
}

bool postgres_storage::acquire_task(std::string_view task, std::string_view holder,
                                    std::chrono::milliseconds length,
                                    std::chrono::milliseconds min_interval) {
  return on_admin("taking a task lease", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    auto r = tx.exec_params(
        "INSERT INTO EventQueueTasks (Name, Holder, LeaseUntil) VALUES ($1, $2, "
        "now() + $3::bigint * interval '1 millisecond') "
        "ON CONFLICT (Name) DO UPDATE SET Holder = EXCLUDED.Holder, "
        "LeaseUntil = EXCLUDED.LeaseUntil "
        "WHERE (EventQueueTasks.Holder IS NULL OR EventQueueTasks.LeaseUntil <= now() "
        "OR EventQueueTasks.Holder = EXCLUDED.Holder) "
        "AND (EventQueueTasks.Holder = EXCLUDED.Holder OR EventQueueTasks.LastRun IS NULL "
        "OR EventQueueTasks.LastRun <= now() - $4::bigint * interval '1 millisecond')",
        std::string(task), std::string(holder), static_cast<long long>(length.count()),
        static_cast<long long>(min_interval.count()));
    return r.affected_rows() == 1;
  });
}

void postgres_storage::release_task(std::string_view task, std::string_view holder, bool completed,
                                    std::string_view result) {
  on_admin("releasing a task lease", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    tx.exec_params(
        "UPDATE EventQueueTasks SET Holder = NULL, LeaseUntil = NULL, "
        "LastRun = CASE WHEN $3::boolean THEN now() ELSE LastRun END, "
        "LastResult = CASE WHEN $3::boolean THEN $4 ELSE LastResult END "
        "WHERE Name = $1 AND Holder = $2",
        std::string(task), std::string(holder), std::string(completed ? "true" : "false"),
        std::string(result));
    return 0;
  });
}

std::size_t postgres_storage::count_expired(const expiry& bounds) {
  return on_admin("counting expired events", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    auto r = tx.exec_params1(
        std::string(k_live_cte) + "SELECT count(*) FROM EventQueue e WHERE " + k_expired_where,
        timestamptz(bounds.cutoff), timestamptz(bounds.hard_cutoff));
    return static_cast<std::size_t>(r[0].as<std::int64_t>());
  });
}

std::size_t postgres_storage::delete_expired(const expiry& bounds, std::size_t max_rows) {
  return on_admin("deleting expired events", [&](pqxx::connection& c) {
    pqxx::work tx(c);
    auto r = tx.exec_params(std::string(k_live_cte) +
                                "DELETE FROM EventQueue WHERE Id IN (SELECT e.Id FROM EventQueue e "
                                "WHERE " +
                                k_expired_where + " ORDER BY e.Created LIMIT $3)",
                            timestamptz(bounds.cutoff), timestamptz(bounds.hard_cutoff),
                            static_cast<long long>(max_rows));
    tx.commit();
    return static_cast<std::size_t>(r.affected_rows());
  });
}

std::size_t postgres_storage::remove_dead_instances(system_clock::time_point dead_before) {
  return on_admin("removing dead instances", [&](pqxx::connection& c) {
    pqxx::work tx(c);
    tx.exec_params(
        "DELETE FROM Properties WHERE Key IN (SELECT 'EQStamp_' || Name FROM "
        "EventQueueInstances WHERE LeaseUntil < $1::timestamptz)",
        timestamptz(dead_before));
    auto r = tx.exec_params("DELETE FROM EventQueueInstances WHERE LeaseUntil < $1::timestamptz",
                            timestamptz(dead_before));
    tx.commit();
    return static_cast<std::size_t>(r.affected_rows());
  });
}

void postgres_storage::record_failures(std::span<const failure_record> failures) {
  if (failures.empty()) return;
  on_admin("recording failed events", [&](pqxx::connection& c) {
    pqxx::work tx(c);
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
    pqxx::nontransaction tx(c);
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

#undef EVENTQ_US

}  // namespace eventq::postgres
