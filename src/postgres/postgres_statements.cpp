// The PostgreSQL statements (see postgres_statements.h).
#include "postgres/postgres_statements.h"

#include <algorithm>
#include <cctype>
#include <pqxx/pqxx>

#include "eventq/postgres.h"
#include "postgres/postgres_config.h"
#include "util.h"

namespace eventq::postgres {

std::string created_text(std::chrono::system_clock::time_point t) {
  return detail::format_utc(t) + "+00";
}

namespace {

constexpr std::string_view k_tables[] = {
    "eventqueue",         "eventqueueinstances", "eventqueuecontrol", "eventqueuetasks",
    "eventqueuefailures", "eventqueueschema",    "eventqueuedeleted", "eventqueuelag",
    "eventqueuestats",    "properties"};

bool ident_char(char ch) {
  return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '$';
}

std::string folded(std::string_view s) {
  std::string out(s);
  for (auto& ch : out) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return out;
}

}  // namespace

std::string qualify(std::string_view sql, std::string_view schema) {
  std::string out;
  out.reserve(sql.size() + 64);
  std::size_t i = 0;
  while (i < sql.size()) {
    char ch = sql[i];
    if (ch == '\'' || ch == '"') {  // a literal or a quoted identifier: copied as it is
      std::size_t end = i + 1;
      while (end < sql.size()) {
        if (sql[end] == ch) {
          if (end + 1 < sql.size() && sql[end + 1] == ch) {
            end += 2;  // '' inside a literal
            continue;
          }
          break;
        }
        ++end;
      }
      end = std::min(end + 1, sql.size());
      out.append(sql.substr(i, end - i));
      i = end;
      continue;
    }
    if (!ident_char(ch)) {
      out += ch;
      ++i;
      continue;
    }
    std::size_t end = i;
    while (end < sql.size() && ident_char(sql[end])) ++end;
    std::string_view word = sql.substr(i, end - i);
    const bool after_dot = i > 0 && sql[i - 1] == '.';
    const bool before_dot = end < sql.size() && sql[end] == '.';
    std::size_t next = end;
    while (next < sql.size() && sql[next] == ' ') ++next;
    const bool call = next < sql.size() && sql[next] == '(';
    const std::string w = folded(word);
    const bool table = std::find(std::begin(k_tables), std::end(k_tables), w) != std::end(k_tables);
    const bool function = call && w.rfind("eventq_", 0) == 0;
    if (!after_dot && !before_dot && (table || function)) {
      out.append(schema);
      out += '.';
    }
    out.append(word);
    i = end;
  }
  return out;
}

std::string prepared_name(std::string_view statement, std::string_view schema) {
  return std::string(statement) + '@' + folded(schema);
}

std::vector<statement> statements_for(const std::string& schema) {
  std::vector<statement> all;
  auto add = [&](const char* name, const std::string& sql) {
    all.push_back({name, qualify(sql, schema)});
  };
  // Raises send NOTIFY after their commit, from the notifier thread (see append()).
  add("eventq_insert", insert_statement(schema, wake_up::none));
  const std::string insert_rows =
      "INSERT INTO EventQueue (EventType, InstanceData, InstanceName, RaiseLocally, "
      "RaiseGlobally, Created, KeyId, Signature) ";
  add("eventq_insert_many",
      insert_rows +
          "SELECT t, d::json, i, l, g, c, k, s FROM unnest($1::text[], $2::text[], "
          "$3::text[], $4::boolean[], $5::boolean[], $6::timestamptz[], $7::text[], "
          "$8::text[]) WITH ORDINALITY AS u(t, d, i, l, g, c, k, s, n) ORDER BY n "
          "RETURNING Id");
  add("eventq_insert_joined",
      insert_rows +
          "SELECT t, d::json, i, l::boolean, g::boolean, c::timestamptz, k, s FROM unnest("
          "string_to_array($1, E'\\x1f', ''), string_to_array($2, E'\\x1f', ''), "
          "string_to_array($3, E'\\x1f', ''), string_to_array($4, E'\\x1f', ''), "
          "string_to_array($5, E'\\x1f', ''), string_to_array($6, E'\\x1f', ''), "
          "string_to_array($7, E'\\x1f', ''), string_to_array($8, E'\\x1f', '')) "
          "WITH ORDINALITY AS u(t, d, i, l, g, c, k, s, n) ORDER BY n RETURNING Id");
  // A wake-up needs no durability (see notifier_loop()): committed without waiting for the WAL
  // flush. set_config(..., true) holds for this statement's own transaction, so no setting
  // outlives it on a shared or pooled connection.
  const std::string async_commit = "set_config('synchronous_commit', 'off', true)";
  add("eventq_wake", "SELECT " + async_commit + ", pg_notify('" + channel_of(schema) + "', '')");
  // A page: the events after the cursor ($1: its snapshot; ($3, $4): the last row read when
  // paging) that are visible in `target`, in transaction order. The ORDER BY is qualified: a
  // bare "Stamp" could name a text output column, and text order ("1000" < "999") would make
  // paging skip and repeat rows. Created is NULL where the library's clock cannot hold it
  // (infinity, or years a time_point does not reach): such rows are refused, not converted.
  const std::string page_columns =
      "Id, EventType, InstanceData::text AS InstanceData, InstanceName, RaiseLocally, "
      "RaiseGlobally, CASE WHEN Created BETWEEN '1678-01-01 00:00:00+00' AND "
      "'2261-12-31 00:00:00+00' THEN (date_part('epoch', Created) * 1000000)::bigint END "
      "AS CreatedUs, Stamp::text AS StampText, KeyId, Signature";
  // The rows a snapshot $1 does not see are those of its in-progress transactions (xip) and
  // those from its xmax on: PgQ's batch query reads exactly these two ranges, each an index
  // condition, so that a transaction left open somewhere (which holds every snapshot's xmin
  // back) costs nothing. Reading "Stamp >= xmin" and filtering by visibility walked every row
  // raised since that transaction began, on every poll. The in-progress ids all lie below
  // xmax, so the first part's rows precede the second's. ($3, $4) and ($7, $8) are where the
  // parts' index scans start (see read_plan); the plain "Stamp >= $7", implied by the row
  // comparison, is what makes the planner walk the index rather than scan and sort the table.
  auto part = [&](const std::string& target, const std::string& rows) {
    return "(SELECT " + page_columns + ", Stamp AS StampOrder FROM EventQueue WHERE " + rows +
           " AND Stamp < pg_snapshot_xmax(" + target +
           ") AND NOT pg_visible_in_snapshot(Stamp, $1::pg_snapshot) "
           "AND pg_visible_in_snapshot(Stamp, " +
           target + ") ORDER BY EventQueue.Stamp, EventQueue.Id LIMIT $5)";
  };
  const std::string xip_rows =
      "Stamp = ANY (ARRAY(SELECT pg_snapshot_xip($1::pg_snapshot))) "
      "AND (Stamp, Id) > ($3::xid8, $4::bigint)";
  const std::string range_rows = "Stamp >= $7::xid8 AND (Stamp, Id) > ($7::xid8, $8::bigint)";
  // Filtered (eventq_read_types, eventq_page_types): only the types named in $9 or starting
  // with a prefix of $10 (each prefix's range ends below the matching element of $11). The
  // rows of the cursor's in-progress transactions are few: filtered as they are read. The
  // range from the cursor's xmax on is read per type through EventQueue_Type (EventType "C",
  // Stamp, Id) (migration 0009): an exact type is one index range in (Stamp, Id) order, cut at
  // the page size however many rows of other types lie in between; a prefix is one range of
  // EventType, sorted. Rows of types not asked for are not read; the cursor passes them all the
  // same, since it is a snapshot. The prefix part leaves out exact names (no row twice).
  const std::string wanted =
      "(EventType = ANY ($9::text[]) OR EXISTS (SELECT 1 FROM unnest($10::text[]) p "
      "WHERE starts_with(EventType, p)))";
  auto page_rows = [&](const std::string& target, bool filtered) {
    if (!filtered) return part(target, xip_rows) + " UNION ALL " + part(target, range_rows);
    return part(target, xip_rows + " AND " + wanted) + " UNION ALL (SELECT x.* FROM " +
           "unnest($9::text[]) AS f(t) CROSS JOIN LATERAL " +
           part(target, "EventType COLLATE \"C\" = f.t AND " + range_rows) +
           " x) UNION ALL (SELECT x.* FROM unnest($10::text[], $11::text[]) AS f(lo, hi) "
           "CROSS JOIN LATERAL " +
           part(target,
                "EventType COLLATE \"C\" >= f.lo AND EventType COLLATE \"C\" < f.hi AND "
                "NOT (EventType = ANY ($9::text[])) AND " +
                    range_rows) +
           " x)";
  };
  auto page_of = [&](const std::string& target, bool filtered = false) {
    return "FROM (" + page_rows(target, filtered) + ") u ORDER BY u.StampOrder, u.Id LIMIT $5";
  };
  const std::string page_out =
      "u.Id, u.EventType, u.InstanceData, u.InstanceName, u.RaiseLocally, u.RaiseGlobally, "
      "u.CreatedUs, u.StampText, u.KeyId, u.Signature";
  // The deletions new to the cursor: entries of EventQueueDeleted committed outside $6 (the
  // snapshot in which the cursor last read them), each as "deleter/below/stamps", listing only
  // the stamps the cursor's snapshot $1 does not see (see parse_deletions()).
  const std::string deletions =
      "(SELECT string_agg(d.Deleter::text || '/' || coalesce(d.Below::text, '') || '/' || "
      "coalesce((SELECT string_agg(s::text, ',' ORDER BY s) FROM unnest(d.Stamps) s "
      "WHERE NOT pg_visible_in_snapshot(s, $1::pg_snapshot)), ''), ';') "
      "FROM EventQueueDeleted d WHERE d.Deleter >= pg_snapshot_xmin($6::pg_snapshot) "
      "AND NOT pg_visible_in_snapshot(d.Deleter, $6::pg_snapshot))";
  // The database incarnation: a restore into another cluster changes the system identifier, a
  // promoted replica the timeline. The timeline is the one WAL is written on now (the first 8
  // hex digits of the WAL file name): the last checkpoint's names the old one until the
  // checkpoint that follows a promotion has finished.
  const std::string incarnation =
      "(SELECT system_identifier::text FROM pg_control_system()) || '.' || "
      "(CASE WHEN pg_is_in_recovery() THEN (SELECT timeline_id FROM pg_control_checkpoint()) "
      "ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint "
      "END)::text";
  // The newest row visible to the statement, "Stamp:Id" (see parsed_cursor::newest_stamp): one
  // step down EventQueue_Stamp.
  const std::string newest =
      "(SELECT Stamp::text || ':' || Id::text FROM EventQueue "
      "ORDER BY Stamp DESC, Id DESC LIMIT 1)";
  // While paging through a backlog ($2: the target snapshot): the page alone, in eventq_read's
  // columns. No LATERAL join and no second sort of a full page.
  for (bool filtered : {false, true}) {
    add(filtered ? "eventq_page_types" : "eventq_page",
        "SELECT (SELECT pg_current_snapshot()::text), " + deletions + ", " + incarnation + ", " +
            page_out + ", NULL::text " + page_of("$2::pg_snapshot", filtered));
  }
  // A poll is this one statement (one snapshot, no BEGIN/COMMIT): the statement's own snapshot,
  // the deletions and the incarnation, then the page. $2 is the target snapshot when paging
  // through a backlog, '' to read up to the statement's own snapshot: every row visible in it is
  // visible to the statement, so nothing committed before the snapshot can be passed over. With
  // no new rows the result is one row whose event columns are NULL.
  for (bool filtered : {false, true}) {
    add(filtered ? "eventq_read_types" : "eventq_read",
        "WITH head AS MATERIALIZED (SELECT pg_current_snapshot() AS now, " + deletions +
            " AS deleted, " + incarnation + " AS incarnation, " + newest +
            " AS newest) "
            "SELECT head.now::text, head.deleted, head.incarnation, e.Id, e.EventType, "
            "e.InstanceData, e.InstanceName, e.RaiseLocally, e.RaiseGlobally, e.CreatedUs, "
            "e.StampText, e.KeyId, e.Signature, head.newest FROM head LEFT JOIN LATERAL (SELECT " +
            page_out + ", u.StampOrder " +
            page_of("coalesce(NULLIF($2, '')::pg_snapshot, head.now)", filtered) +
            ") e ON true ORDER BY e.StampOrder, e.Id");
  }
  add("eventq_head", "SELECT pg_current_snapshot()::text, " + incarnation + ", min(Stamp)::text, " +
                         newest + " FROM EventQueue");
  // After a failover: whether the cursor's newest row ($1 Stamp, $2 Id) made it to this server.
  // Pruned since, its transaction is still known as committed here (or is older than the
  // commit log kept: long past). An id from the server's next on has not been used here.
  add("eventq_newest_found",
      "SELECT EXISTS (SELECT 1 FROM EventQueue WHERE Stamp = $1::xid8 AND Id = $2::bigint) OR "
      "coalesce(CASE WHEN $1::xid8 < pg_snapshot_xmax(pg_current_snapshot()) THEN "
      "coalesce(pg_xact_status($1::xid8), 'committed') = 'committed' END, false)");
  add("eventq_get", "SELECT Value FROM Properties WHERE Key = $1");
  add("eventq_insert_property",
      "INSERT INTO Properties (Key, Value) VALUES ($1, $2) ON CONFLICT (Key) DO NOTHING");
  // Cursor stores need not wait for the WAL flush either: one lost to a server crash means
  // redelivery (handlers are idempotent), never a lost event.
  add("eventq_set", "INSERT INTO Properties (Key, Value) SELECT $1::text, $2::text FROM (SELECT " +
                        async_commit +
                        ") AS settings ON CONFLICT (Key) DO UPDATE SET Value = EXCLUDED.Value");
  // The fence: the write happens only while the registry row of the instance holds the
  // caller's token, in one statement (migration 0008; runs as the schema's owner, so that the
  // application role needs no UPDATE on Properties).
  add("eventq_store_cursor", "SELECT eventq_store_cursor($1, $2, $3), " + async_commit);
  return all;
}

void prepare_statements(pqxx::connection& c, const std::string& schema) {
  for (const auto& s : statements_for(schema)) c.prepare(prepared_name(s.name, schema), s.sql);
}

event_record to_record(const pqxx::row& row) {
  event_record r;
  r.id = row[3].as<std::int64_t>();
  r.type = row[4].as<std::string>();
  r.data = row[5].as<std::string>();
  r.instance = row[6].as<std::string>();
  bool local = row[7].as<bool>();
  bool global = row[8].as<bool>();
  r.mode = local && global ? raise_mode::both
           : local         ? raise_mode::locally
           : global        ? raise_mode::globally
                           : raise_mode::none;
  // NULL: not a time the library can hold (see page_columns); check_row() refuses it.
  r.created = row[9].is_null() ? std::chrono::system_clock::time_point::min()
                               : std::chrono::system_clock::time_point(
                                     std::chrono::microseconds(row[9].as<std::int64_t>()));
  // NULL (unsigned) reads as "".
  if (!row[11].is_null()) r.key_id = row[11].as<std::string>();
  if (!row[12].is_null()) r.signature = row[12].as<std::string>();
  return r;
}

}  // namespace eventq::postgres
