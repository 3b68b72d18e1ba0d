// The SQLite storage, part two: the instance registry, task leases, cleanup and statistics.
// Times are UTC text in format_utc's form, which sorts like the times it names; "now" is this
// host's clock, the only one an SQLite file has.
#include <algorithm>

#include "eventq/error.h"
#include "sqlite/sqlite_storage.h"
#include "util.h"

namespace eventq::sqlite {

namespace {

using std::chrono::system_clock;

std::string utc(system_clock::time_point t) { return detail::format_utc(t); }

std::optional<system_clock::time_point> time_column(const statement& s, int col) {
  if (s.is_null(col)) return std::nullopt;
  return detail::parse_utc(s.text_view(col));
}

// Rows cleanup may delete: ?1 retention cutoff, ?2 hard cutoff, ?3 now. Every row after the
// cursor of a live instance is kept (the instance reads every row, addressed to it or not, and
// takes a gap in the Ids for deleted events: Missed); a cursor whose Id (the digits before
// ";db=", see parse_cursor()) is not a number keeps all.
constexpr const char* k_expired_where =
    "e.Created < ?1 AND (e.Created < ?2 OR e.Id <= coalesce((SELECT "
    "min(CASE WHEN c.Pos GLOB '[0-9]*' AND c.Pos NOT GLOB '*[^0-9]*' "
    "THEN CAST(c.Pos AS INTEGER) ELSE 0 END) "
    "FROM EventQueueInstances i JOIN (SELECT Key, "
    "substr(Value, 1, instr(Value || ';', ';') - 1) AS Pos FROM Properties) c "
    "ON c.Key = 'EQStamp_' || i.Name "
    "WHERE i.LeaseUntil > ?3), 9223372036854775807))";

// Ten times as far back as `hard_cutoff`, and never before 1970 (a maximum age of centuries
// must not overflow the clock).
system_clock::time_point markers_cutoff(system_clock::time_point now,
                                        system_clock::time_point hard_cutoff) {
  using std::chrono::seconds;
  auto back = std::chrono::duration_cast<seconds>(now - hard_cutoff);
  auto limit = std::chrono::duration_cast<seconds>(now.time_since_epoch());
  return now - (back > limit / 10 ? limit : 10 * back);
}

}  // namespace

int sqlite_storage::schema_version() {
  std::lock_guard lk(m_read_mutex);
  statement s(m_reader, "SELECT coalesce(max(Version), 0) FROM EventQueueSchema");
  s.step();
  return static_cast<int>(s.int64(0));
}

bool sqlite_storage::claim_instance(const instance_registration& who,
                                    std::chrono::milliseconds lease, std::int64_t dead_pid) {
  auto now = system_clock::now();
  std::lock_guard lk(m_write_mutex);
  write_transaction tx(m_writer);
  statement upsert(
      m_writer,
      "INSERT INTO EventQueueInstances (Name, Host, Pid, Version, Token, Started, "
      "Heartbeat, LeaseUntil) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7) "
      "ON CONFLICT (Name) DO UPDATE SET Host = excluded.Host, Pid = excluded.Pid, "
      "Version = excluded.Version, Token = excluded.Token, Started = excluded.Started, "
      "Heartbeat = excluded.Heartbeat, LeaseUntil = excluded.LeaseUntil "
      "WHERE EventQueueInstances.LeaseUntil <= ?6 "
      "OR EventQueueInstances.Token = excluded.Token "
      "OR (EventQueueInstances.Host = excluded.Host AND EventQueueInstances.Pid = ?8)");
  upsert.bind(1, who.name)
      .bind(2, who.host)
      .bind(3, who.pid)
      .bind(4, who.version)
      .bind(5, who.token)
      .bind(6, utc(now))
      .bind(7, utc(now + lease))
      .bind(8, dead_pid)
      .run();
  if (m_writer.changes() == 0) {
    if (dead_pid > 0) return false;
    statement holder(m_writer,
                     "SELECT Host, Pid, Heartbeat, LeaseUntil, "
                     "(julianday(LeaseUntil) - julianday(?2)) * 86400.0 "
                     "FROM EventQueueInstances WHERE Name = ?1");
    holder.bind(1, who.name).bind(2, utc(now));
    holder.step();
    auto msg =
        detail::name_in_use_message(who.name, holder.text_view(0), holder.int64(1),
                                    holder.text_view(2), holder.text_view(3), holder.real(4));
    holder.reset();
    throw error(errc::instance_name_in_use, msg);
  }
  tx.commit();
  return true;
}

void sqlite_storage::register_instance(const instance_registration& who,
                                       std::chrono::milliseconds lease) {
  claim_instance(who, lease, -1);
}

bool sqlite_storage::take_over_instance(const instance_registration& who, std::int64_t dead_pid,
                                        std::chrono::milliseconds lease) {
  return dead_pid > 0 && claim_instance(who, lease, dead_pid);
}

bool sqlite_storage::renew_instance(std::string_view name, std::string_view token,
                                    std::chrono::milliseconds lease) {
  auto now = system_clock::now();
  std::lock_guard lk(m_write_mutex);
  statement s(m_writer,
              "UPDATE EventQueueInstances SET Heartbeat = ?3, LeaseUntil = ?4 "
              "WHERE Name = ?1 AND Token = ?2");
  s.bind(1, name).bind(2, token).bind(3, utc(now)).bind(4, utc(now + lease)).run();
  return m_writer.changes() == 1;
}

bool sqlite_storage::renew_instance(std::string_view name, std::string_view token,
                                    std::chrono::milliseconds lease, const metrics& counters) {
  auto now = system_clock::now();
  auto text = detail::metrics_to_text(counters);
  std::lock_guard lk(m_write_mutex);
  statement s(m_writer,
              "UPDATE EventQueueInstances SET Heartbeat = ?3, LeaseUntil = ?4, Counters = ?5 "
              "WHERE Name = ?1 AND Token = ?2");
  s.bind(1, name).bind(2, token).bind(3, utc(now)).bind(4, utc(now + lease)).bind(5, text).run();
  return m_writer.changes() == 1;
}

std::int64_t sqlite_storage::add_control_request(const control_request& r) {
  auto now = utc(system_clock::now());
  std::lock_guard lk(m_write_mutex);
  write_transaction tx(m_writer);
  statement live(m_writer, "SELECT 1 FROM EventQueueInstances WHERE Name = ?1 AND LeaseUntil > ?2");
  live.bind(1, r.instance).bind(2, now);
  bool is_live = live.step();
  live.reset();
  if (!is_live) throw error(errc::instance_not_live, detail::not_live_message(r.instance));
  statement add(m_writer,
                "INSERT INTO EventQueueControl (Instance, Action, Since, RequestedBy, Requested) "
                "VALUES (?1, ?2, ?3, ?4, ?5) RETURNING Id");
  add.bind(1, r.instance).bind(2, to_string(r.action));
  if (r.since) {
    add.bind(3, utc(*r.since));
  } else {
    add.bind_null(3);
  }
  add.bind(4, r.requested_by).bind(5, now);
  add.step();
  auto id = add.int64(0);
  add.reset();
  tx.commit();
  return id;
}

std::vector<control_request> sqlite_storage::take_control_requests(std::string_view name,
                                                                   std::string_view token) {
  auto now = utc(system_clock::now());
  std::lock_guard lk(m_write_mutex);
  statement s(m_writer,
              "UPDATE EventQueueControl SET PickedUp = ?3 WHERE Instance = ?1 AND PickedUp IS "
              "NULL AND EXISTS (SELECT 1 FROM EventQueueInstances WHERE Name = ?1 AND Token = "
              "?2) RETURNING Id, Action, Since, RequestedBy, Requested");
  s.bind(1, name).bind(2, token).bind(3, now);
  std::vector<control_request> out;
  while (s.step()) {
    control_request r;
    r.id = s.int64(0);
    r.instance = std::string(name);
    r.action = s.text_view(1) == "replay" ? control_action::replay : control_action::resync;
    r.since = time_column(s, 2);
    r.requested_by = s.text(3);
    r.requested = time_column(s, 4).value_or(system_clock::time_point{});
    r.picked_up = detail::parse_utc(now);
    out.push_back(std::move(r));
  }
  s.reset();
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  return out;
}

void sqlite_storage::complete_control_request(std::int64_t id, std::string_view result) {
  auto now = utc(system_clock::now());
  std::lock_guard lk(m_write_mutex);
  statement s(m_writer, "UPDATE EventQueueControl SET Done = ?2, Result = ?3 WHERE Id = ?1");
  s.bind(1, id).bind(2, now).bind(3, result).run();
}

std::vector<control_request> sqlite_storage::control_requests(std::size_t recent) {
  std::lock_guard lk(m_read_mutex);
  statement s(m_reader,
              "SELECT Id, Instance, Action, Since, RequestedBy, Requested, PickedUp, Done, "
              "coalesce(Result, '') FROM EventQueueControl WHERE Done IS NULL OR Id IN (SELECT "
              "Id FROM EventQueueControl WHERE Done IS NOT NULL ORDER BY Id DESC LIMIT ?1) "
              "ORDER BY Id DESC");
  s.bind(1, static_cast<std::int64_t>(recent));
  std::vector<control_request> out;
  while (s.step()) {
    control_request r;
    r.id = s.int64(0);
    r.instance = s.text(1);
    r.action = s.text_view(2) == "replay" ? control_action::replay : control_action::resync;
    r.since = time_column(s, 3);
    r.requested_by = s.text(4);
    r.requested = time_column(s, 5).value_or(system_clock::time_point{});
    r.picked_up = time_column(s, 6);
    r.done = time_column(s, 7);
    r.result = s.text(8);
    out.push_back(std::move(r));
  }
  s.reset();
  return out;
}

std::string sqlite_storage::cursor_before(system_clock::time_point since) {
  {
    std::lock_guard lk(m_read_mutex);
    statement s(m_reader,
                "SELECT (SELECT min(Id) - 1 FROM EventQueue WHERE Created >= ?1), "
                "(SELECT Value FROM Properties WHERE Key = 'EQIncarnation')");
    s.bind(1, utc(since));
    s.step();
    if (!s.is_null(0)) {
      auto cursor = format_cursor(s.int64(0), checked_incarnation(s.text_view(1)));
      s.reset();
      return cursor;
    }
    s.reset();
  }
  return head_cursor();  // nothing raised since then
}

void sqlite_storage::release_instance(std::string_view name, std::string_view token) {
  auto now = utc(system_clock::now());
  std::lock_guard lk(m_write_mutex);
  statement s(m_writer,
              "UPDATE EventQueueInstances SET Heartbeat = ?3, LeaseUntil = ?3 "
              "WHERE Name = ?1 AND Token = ?2");
  s.bind(1, name).bind(2, token).bind(3, now).run();
}

std::vector<instance_info> sqlite_storage::instances() {
  std::lock_guard lk(m_read_mutex);
  statement s(m_reader,
              "SELECT l.Instance, l.Cursor, l.Behind, l.Live, l.HeartbeatAgeSeconds, l.Heartbeat, "
              "l.LeaseUntil, l.Host, l.Pid, l.Version, l.Started, i.Counters FROM EventQueueLag l "
              "JOIN EventQueueInstances i ON i.Name = l.Instance ORDER BY l.Instance");
  std::vector<instance_info> out;
  while (s.step()) {
    instance_info i;
    i.name = s.text(0);
    if (!s.is_null(1)) i.cursor = s.text(1);
    if (!s.is_null(2)) i.behind = s.int64(2);
    i.live = s.int64(3) != 0;
    if (!s.is_null(4)) i.heartbeat_age_seconds = s.real(4);
    i.heartbeat = time_column(s, 5);
    i.lease_until = time_column(s, 6);
    i.host = s.text(7);
    i.pid = s.int64(8);
    i.version = s.text(9);
    i.started = time_column(s, 10);
    if (!s.is_null(11)) i.counters = detail::metrics_from_text(s.text_view(11));
    out.push_back(std::move(i));
  }
  s.reset();
  return out;
}

queue_summary sqlite_storage::summary() {
  queue_summary out;
  out.schema_version = schema_version();
  std::lock_guard lk(m_read_mutex);
  read_transaction snapshot(m_reader);  // the totals and the per-type rows agree
  {
    statement types(m_reader,
                    "SELECT EventType, Rows, Oldest, Newest, MinId, MaxId FROM EventQueueStats "
                    "ORDER BY EventType");
    while (types.step()) {
      type_summary t;
      t.type = types.text(0);
      t.rows = types.int64(1);
      t.oldest = time_column(types, 2).value_or(system_clock::time_point{});
      t.newest = time_column(types, 3).value_or(system_clock::time_point{});
      out.rows += t.rows;
      if (!out.oldest || t.oldest < *out.oldest) out.oldest = t.oldest;
      if (!out.newest || t.newest > *out.newest) out.newest = t.newest;
      if (!out.min_id || types.int64(4) < *out.min_id) out.min_id = types.int64(4);
      if (!out.max_id || types.int64(5) > *out.max_id) out.max_id = types.int64(5);
      out.types.push_back(std::move(t));
    }
    types.reset();
    statement task(m_reader,
                   "SELECT LastRun, coalesce(LastResult, '') FROM EventQueueTasks "
                   "WHERE Name = 'cleanup'");
    if (task.step()) {
      out.last_cleanup = time_column(task, 0);
      out.last_cleanup_result = task.text(1);
    }
    task.reset();
  }
  return out;
}

std::vector<std::int64_t> sqlite_storage::events_per_minute(system_clock::time_point from,
                                                            int minutes) {
  std::vector<std::int64_t> out(static_cast<std::size_t>(std::max(minutes, 0)), 0);
  if (out.empty()) return out;
  auto to = from + std::chrono::minutes(minutes);
  std::lock_guard lk(m_read_mutex);
  // Created is text that sorts like time: the index range is read once, grouped by its
  // "YYYY-MM-DD HH:MM" prefix, with no date arithmetic per row.
  statement s(m_reader,
              "SELECT substr(Created, 1, 16), count(*) FROM EventQueue "
              "WHERE Created >= ?1 AND Created < ?2 GROUP BY 1");
  s.bind(1, utc(from)).bind(2, utc(to));
  while (s.step()) {
    auto minute = detail::parse_utc(std::string(s.text_view(0)) + ":00");
    if (!minute) continue;  // a Created value eventq did not write
    auto i = std::chrono::floor<std::chrono::minutes>(*minute - from).count();
    if (*minute < from) i = 0;  // the partial first minute
    if (i >= 0 && i < minutes) out[static_cast<std::size_t>(i)] += s.int64(1);
  }
  s.reset();
  return out;
}

bool sqlite_storage::acquire_task(std::string_view task, std::string_view holder,
                                  std::chrono::milliseconds length,
                                  std::chrono::milliseconds min_interval) {
  auto now = system_clock::now();
  std::lock_guard lk(m_write_mutex);
  statement s(m_writer,
              "INSERT INTO EventQueueTasks (Name, Holder, LeaseUntil) VALUES (?1, ?2, ?3) "
              "ON CONFLICT (Name) DO UPDATE SET Holder = excluded.Holder, "
              "LeaseUntil = excluded.LeaseUntil "
              "WHERE (EventQueueTasks.Holder IS NULL OR EventQueueTasks.LeaseUntil <= ?4 "
              "OR EventQueueTasks.Holder = excluded.Holder) "
              "AND (EventQueueTasks.Holder = excluded.Holder OR EventQueueTasks.LastRun IS NULL "
              "OR EventQueueTasks.LastRun <= ?5)");
  s.bind(1, task)
      .bind(2, holder)
      .bind(3, utc(now + length))
      .bind(4, utc(now))
      .bind(5, utc(now - min_interval))
      .run();
  return m_writer.changes() == 1;
}

void sqlite_storage::release_task(std::string_view task, std::string_view holder, bool completed,
                                  std::string_view result) {
  auto now = utc(system_clock::now());
  std::lock_guard lk(m_write_mutex);
  statement s(m_writer,
              "UPDATE EventQueueTasks SET Holder = NULL, LeaseUntil = NULL, "
              "LastRun = CASE WHEN ?3 THEN ?4 ELSE LastRun END, "
              "LastResult = CASE WHEN ?3 THEN ?5 ELSE LastResult END "
              "WHERE Name = ?1 AND Holder = ?2");
  s.bind(1, task)
      .bind(2, holder)
      .bind(3, std::int64_t{completed})
      .bind(4, now)
      .bind(5, result)
      .run();
}

std::size_t sqlite_storage::count_expired(const expiry& bounds) {
  std::lock_guard lk(m_read_mutex);
  statement s(m_reader, std::string("SELECT count(*) FROM EventQueue e WHERE ") + k_expired_where);
  s.bind(1, utc(bounds.cutoff)).bind(2, utc(bounds.hard_cutoff)).bind(3, utc(system_clock::now()));
  s.step();
  auto n = static_cast<std::size_t>(s.int64(0));
  s.reset();
  return n;
}

std::size_t sqlite_storage::delete_expired(const expiry& bounds, std::size_t max_rows) {
  auto now = utc(system_clock::now());
  std::lock_guard lk(m_write_mutex);
  statement s(m_writer,
              std::string("DELETE FROM EventQueue WHERE Id IN (SELECT e.Id FROM EventQueue e "
                          "WHERE ") +
                  k_expired_where + " ORDER BY e.Created LIMIT ?4)");
  write_transaction tx(m_writer);
  s.bind(1, utc(bounds.cutoff))
      .bind(2, utc(bounds.hard_cutoff))
      .bind(3, now)
      .bind(4, static_cast<std::int64_t>(max_rows))
      .run();
  auto n = m_writer.changes();
  tx.commit();
  return n;
}

std::size_t sqlite_storage::remove_dead_instances(const expiry& bounds) {
  auto cutoff = utc(bounds.hard_cutoff);  // this host's clock is the file's only one
  auto now = system_clock::now();
  std::lock_guard lk(m_write_mutex);
  write_transaction tx(m_writer);
  // The cursor becomes a marker (see k_removed_cursor): the instance, if it comes back, reports
  // Missed. Markers are kept for ten hard maximum ages, then deleted with no instance behind.
  statement cursors(m_writer,
                    "UPDATE Properties SET Value = ?2 || ?3 WHERE Key IN (SELECT 'EQStamp_' || "
                    "Name FROM EventQueueInstances WHERE LeaseUntil < ?1)");
  const std::string marker(detail::k_removed_cursor);
  cursors.bind(1, cutoff).bind(2, marker).bind(3, utc(now)).run();
  statement markers(m_writer,
                    "DELETE FROM Properties WHERE Key GLOB 'EQStamp_*' AND substr(Value, 1, ?1) "
                    "= ?2 AND substr(Value, ?1 + 1) < ?3 AND Key NOT IN (SELECT 'EQStamp_' || "
                    "Name FROM EventQueueInstances)");
  markers.bind(1, static_cast<std::int64_t>(marker.size()))
      .bind(2, marker)
      .bind(3, utc(markers_cutoff(now, bounds.hard_cutoff)))
      .run();
  statement rows(m_writer, "DELETE FROM EventQueueInstances WHERE LeaseUntil < ?1");
  rows.bind(1, cutoff).run();
  auto n = m_writer.changes();
  tx.commit();
  return n;
}

std::size_t sqlite_storage::delete_old_failures(const expiry& bounds, bool dry_run) {
  auto cutoff = utc(bounds.hard_cutoff);
  if (dry_run) {
    std::lock_guard lk(m_read_mutex);
    statement s(m_reader, "SELECT count(*) FROM EventQueueFailures WHERE FailedAt < ?1");
    s.bind(1, cutoff).step();
    return static_cast<std::size_t>(s.int64(0));
  }
  std::lock_guard lk(m_write_mutex);
  write_transaction tx(m_writer);
  statement s(m_writer, "DELETE FROM EventQueueFailures WHERE FailedAt < ?1");
  s.bind(1, cutoff).run();
  auto n = m_writer.changes();
  tx.commit();
  return n;
}

void sqlite_storage::record_failures(std::span<const failure_record> failures) {
  if (failures.empty()) return;
  std::lock_guard lk(m_write_mutex);
  write_transaction tx(m_writer);
  statement insert(m_writer,
                   "INSERT INTO EventQueueFailures (InstanceName, SessionName, EventId, "
                   "EventType, Error, Attempts, FailedAt) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
  for (const auto& f : failures) {
    insert.bind(1, f.instance)
        .bind(2, f.session)
        .bind(3, f.event_id)
        .bind(4, f.event_type)
        .bind(5, f.error)
        .bind(6, std::int64_t{f.attempts})
        .bind(7, utc(f.failed_at))
        .run();
  }
  tx.commit();
}

std::vector<failure_record> sqlite_storage::failures(std::size_t limit, std::string_view instance) {
  std::lock_guard lk(m_read_mutex);
  statement s(m_reader,
              "SELECT Id, InstanceName, SessionName, EventId, EventType, Error, Attempts, "
              "FailedAt FROM EventQueueFailures WHERE ?1 = '' OR InstanceName = ?1 "
              "ORDER BY Id DESC LIMIT ?2");
  s.bind(1, instance).bind(2, static_cast<std::int64_t>(std::min<std::size_t>(limit, INT64_MAX)));
  std::vector<failure_record> out;
  while (s.step()) {
    failure_record f;
    f.id = s.int64(0);
    f.instance = s.text_view(1);
    f.session = s.text_view(2);
    f.event_id = s.int64(3);
    f.event_type = s.text_view(4);
    f.error = s.text_view(5);
    f.attempts = static_cast<int>(s.int64(6));
    f.failed_at = time_column(s, 7).value_or(system_clock::time_point{});
    out.push_back(std::move(f));
  }
  return out;
}

std::int64_t sqlite_storage::failure_count() {
  std::lock_guard lk(m_read_mutex);
  statement s(m_reader, "SELECT count(*) FROM EventQueueFailures");
  return s.step() ? s.int64(0) : 0;
}

}  // namespace eventq::sqlite
