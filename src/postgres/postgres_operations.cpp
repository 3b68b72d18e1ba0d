// The PostgreSQL storage, part two: the instance registry, task leases, operator requests and
// statistics (cleanup and failure records: postgres_cleanup.cpp).
// Lease times come from the server's clock (now()), so hosts with skewed clocks agree on who is
// live. Everything here runs on a connection of the process's pool (postgres_pool.h), one call at a
// time under the admin mutex.
#include <pqxx/pqxx>

#include <algorithm>

#include "eventq/error.h"
#include "postgres/postgres_admin.h"
#include "postgres/postgres_connection.h"
#include "postgres/postgres_statements.h"
#include "postgres/postgres_storage.h"
#include "util.h"

namespace eventq::postgres {

int postgres_storage::schema_version() {
  return on_admin("reading the schema version", [this](pqxx::connection& c) {
    in_schema<pqxx::nontransaction> tx(c, m_cfg.schema);
    return tx.exec1("SELECT coalesce(max(Version), 0) FROM EventQueueSchema")[0].as<int>();
  });
}

bool postgres_storage::claim_instance(const instance_registration& who,
                                      std::chrono::milliseconds lease, std::int64_t dead_pid) {
  return on_admin("registering the instance", [&](pqxx::connection& c) {
    in_schema<pqxx::work> tx(c, m_cfg.schema);
    // Migration 0008's function: it checks the lease (and the token, stored hashed) as the
    // schema's owner, so that the application role needs no UPDATE on the registry.
    auto claimed =
        tx.exec_params1("SELECT eventq_claim_instance($1, $2, $3, $4, $5, $6, $7)", who.name,
                        who.host, static_cast<long long>(who.pid), who.version, who.token,
                        static_cast<long long>(lease.count()), static_cast<long long>(dead_pid))[0]
            .as<bool>();
    if (!claimed) {
      if (dead_pid > 0) return false;
      auto h = tx.exec_params1(
          "SELECT Host, Pid, "
          "to_char(Heartbeat AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS'), "
          "to_char(LeaseUntil AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS'), "
          "extract(epoch FROM LeaseUntil - now())::float8 "
          "FROM EventQueueInstances WHERE Name = $1",
          who.name);
      throw error(errc::instance_name_in_use,
                  detail::name_in_use_message(who.name, h[0].c_str(), h[1].as<std::int64_t>(),
                                              h[2].c_str(), h[3].c_str(), h[4].as<double>()));
    }
    tx.commit();
    return true;
  });
}

void postgres_storage::register_instance(const instance_registration& who,
                                         std::chrono::milliseconds lease) {
  claim_instance(who, lease, -1);
}

bool postgres_storage::take_over_instance(const instance_registration& who, std::int64_t dead_pid,
                                          std::chrono::milliseconds lease) {
  return dead_pid > 0 && claim_instance(who, lease, dead_pid);
}

bool postgres_storage::renew_instance(std::string_view name, std::string_view token,
                                      std::chrono::milliseconds lease) {
  return on_admin("renewing the instance lease", [&](pqxx::connection& c) {
    in_schema<pqxx::nontransaction> tx(c, m_cfg.schema);
    return tx
        .exec_params1("SELECT eventq_renew_instance($1, $2, $3, NULL)", std::string(name),
                      std::string(token), static_cast<long long>(lease.count()))[0]
        .as<bool>();
  });
}

bool postgres_storage::renew_instance(std::string_view name, std::string_view token,
                                      std::chrono::milliseconds lease, const metrics& counters) {
  auto text = detail::metrics_to_text(counters);
  return on_admin("renewing the instance lease", [&](pqxx::connection& c) {
    in_schema<pqxx::nontransaction> tx(c, m_cfg.schema);
    return tx
        .exec_params1("SELECT eventq_renew_instance($1, $2, $3, $4)", std::string(name),
                      std::string(token), static_cast<long long>(lease.count()), text)[0]
        .as<bool>();
  });
}

namespace {

#define EVENTQ_CONTROL_COLUMNS                                             \
  "Id, Instance, Action, " EVENTQ_US("Since") ", RequestedBy, " EVENTQ_US( \
      "Requested") ", " EVENTQ_US("PickedUp") ", " EVENTQ_US("Done") ", coalesce(Result, '')"

control_request control_row(const pqxx::row& row) {
  control_request r;
  r.id = row[0].as<std::int64_t>();
  r.instance = row[1].as<std::string>();
  r.action = row[2].as<std::string>() == "replay" ? control_action::replay : control_action::resync;
  r.since = time_field(row[3]);
  r.requested_by = row[4].as<std::string>();
  r.requested = time_field(row[5]).value_or(system_clock::time_point{});
  r.picked_up = time_field(row[6]);
  r.done = time_field(row[7]);
  r.result = row[8].as<std::string>();
  return r;
}

}  // namespace

std::int64_t postgres_storage::add_control_request(const control_request& r) {
  return on_admin("storing an operator request", [&](pqxx::connection& c) {
    in_schema<pqxx::work> tx(c, m_cfg.schema);
    std::optional<std::string> since;
    if (r.since) since = timestamptz(*r.since);
    auto rows = tx.exec_params(
        "INSERT INTO EventQueueControl (Instance, Action, Since, RequestedBy) "
        "SELECT $1, $2, $3::timestamptz, $4 WHERE EXISTS (SELECT 1 FROM EventQueueInstances "
        "WHERE Name = $1 AND LeaseUntil > now()) RETURNING Id",
        r.instance, std::string(to_string(r.action)), since, r.requested_by);
    if (rows.empty()) throw error(errc::instance_not_live, detail::not_live_message(r.instance));
    tx.commit();
    return rows[0][0].as<std::int64_t>();
  });
}

std::vector<control_request> postgres_storage::take_control_requests(std::string_view name,
                                                                     std::string_view token) {
  return on_admin("taking operator requests", [&](pqxx::connection& c) {
    in_schema<pqxx::nontransaction> tx(c, m_cfg.schema);
    auto rows = tx.exec_params(
        "UPDATE EventQueueControl SET PickedUp = now() WHERE Instance = $1 AND PickedUp IS NULL "
        "AND EXISTS (SELECT 1 FROM EventQueueInstances WHERE Name = $1 "
        "AND Token = eventq_token_hash($2)) "
        "RETURNING " EVENTQ_CONTROL_COLUMNS,
        std::string(name), std::string(token));
    std::vector<control_request> out;
    for (const auto& row : rows) out.push_back(control_row(row));
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    return out;
  });
}

void postgres_storage::complete_control_request(std::int64_t id, std::string_view result) {
  on_admin("acknowledging an operator request", [&](pqxx::connection& c) {
    in_schema<pqxx::nontransaction> tx(c, m_cfg.schema);
    tx.exec_params("UPDATE EventQueueControl SET Done = now(), Result = $2 WHERE Id = $1",
                   static_cast<long long>(id), std::string(result));
  });
}

std::vector<control_request> postgres_storage::control_requests(std::size_t recent) {
  return on_admin("listing operator requests", [&](pqxx::connection& c) {
    in_schema<pqxx::nontransaction> tx(c, m_cfg.schema);
    auto rows = tx.exec_params(
        "SELECT " EVENTQ_CONTROL_COLUMNS
        " FROM EventQueueControl WHERE Done IS NULL OR Id IN (SELECT Id FROM "
        "EventQueueControl WHERE Done IS NOT NULL ORDER BY Id DESC LIMIT $1) ORDER BY Id DESC",
        static_cast<long long>(recent));
    std::vector<control_request> out;
    for (const auto& row : rows) out.push_back(control_row(row));
    return out;
  });
}

std::string postgres_storage::cursor_before(system_clock::time_point since) {
  // A snapshot "X:X:" sees every transaction before X and none from X on: reading after it
  // delivers every row whose Stamp is X or later, the rows raised since `since` among them.
  auto first = on_admin("positioning a replay", [&](pqxx::connection& c) {
    in_schema<pqxx::nontransaction> tx(c, m_cfg.schema);
    auto r =
        tx.exec_params1("SELECT min(Stamp)::text FROM EventQueue WHERE Created >= $1::timestamptz",
                        timestamptz(since));
    return r[0].is_null() ? std::string() : r[0].as<std::string>();
  });
  if (first.empty()) return head_cursor();  // nothing raised since then
  return first + ":" + first + ":";
}

void postgres_storage::release_instance(std::string_view name, std::string_view token) {
  on_admin("releasing the instance lease", [&](pqxx::connection& c) {
    in_schema<pqxx::nontransaction> tx(c, m_cfg.schema);
    tx.exec_params("SELECT eventq_release_instance($1, $2)", std::string(name), std::string(token));
    return 0;
  });
}

std::vector<instance_info> postgres_storage::instances() {
  return on_admin("listing instances", [this](pqxx::connection& c) {
    in_schema<pqxx::nontransaction> tx(c, m_cfg.schema);
    auto rows = tx.exec(
        "SELECT l.Instance, l.Cursor, l.Behind, l.Live, l.HeartbeatAgeSeconds, " EVENTQ_US(
            "l.Heartbeat") ", " EVENTQ_US("l.LeaseUntil") ", l.Host, l.Pid, l.Version, " EVENTQ_US("l.Started") ", i.Counters FROM EventQueueLag l JOIN EventQueueInstances i ON i.Name = l.Instance ORDER BY l.Instance");
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
      if (!row[11].is_null()) i.counters = detail::metrics_from_text(row[11].as<std::string>());
      out.push_back(std::move(i));
    }
    return out;
  });
}

queue_summary postgres_storage::summary() {
  return on_admin("reading statistics", [this](pqxx::connection& c) {
    queue_summary out;
    // One snapshot, so the totals and the per-type rows agree.
    in_schema<pqxx::transaction<pqxx::repeatable_read, pqxx::read_only>> tx(c, m_cfg.schema);
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

std::vector<std::int64_t> postgres_storage::events_per_minute(system_clock::time_point from,
                                                              int minutes) {
  std::vector<std::int64_t> out(static_cast<std::size_t>(std::max(minutes, 0)), 0);
  if (out.empty()) return out;
  auto to = from + std::chrono::minutes(minutes);
  return on_admin("counting events per minute", [&](pqxx::connection& c) {
    in_schema<pqxx::nontransaction> tx(c, m_cfg.schema);
    auto rows = tx.exec_params(
        "SELECT floor(extract(epoch FROM Created - $1::timestamptz) / 60)::int, count(*) "
        "FROM EventQueue WHERE Created >= $1::timestamptz AND Created < $2::timestamptz "
        "GROUP BY 1",
        timestamptz(from), timestamptz(to));
    for (const auto& row : rows) {
      auto i = row[0].as<int>();
      if (i >= 0 && i < minutes) out[static_cast<std::size_t>(i)] += row[1].as<std::int64_t>();
    }
    return out;
  });
}

bool postgres_storage::acquire_task(std::string_view task, std::string_view holder,
                                    std::chrono::milliseconds length,
                                    std::chrono::milliseconds min_interval) {
  return on_admin("taking a task lease", [&](pqxx::connection& c) {
    in_schema<pqxx::nontransaction> tx(c, m_cfg.schema);
    return tx
        .exec_params1("SELECT eventq_acquire_task($1, $2, $3, $4)", std::string(task),
                      std::string(holder), static_cast<long long>(length.count()),
                      static_cast<long long>(min_interval.count()))[0]
        .as<bool>();
  });
}

void postgres_storage::release_task(std::string_view task, std::string_view holder, bool completed,
                                    std::string_view result) {
  on_admin("releasing a task lease", [&](pqxx::connection& c) {
    in_schema<pqxx::nontransaction> tx(c, m_cfg.schema);
    tx.exec_params("SELECT eventq_release_task($1, $2, $3::boolean, $4)", std::string(task),
                   std::string(holder), std::string(completed ? "true" : "false"),
                   std::string(result));
    return 0;
  });
}

}  // namespace eventq::postgres
