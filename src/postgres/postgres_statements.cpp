// The PostgreSQL statements (see postgres_statements.h).
#include "postgres/postgres_statements.h"

#include <pqxx/pqxx>

#include "eventq/postgres.h"
#include "postgres/postgres_config.h"
#include "util.h"

namespace eventq::postgres {

std::string created_text(std::chrono::system_clock::time_point t) {
  return detail::format_utc(t) + "+00";
}

void prepare_statements(pqxx::connection& c, const std::string& schema) {
  // Raises send NOTIFY after their commit, from the notifier thread (see append()).
  c.prepare("eventq_insert", insert_statement(schema, wake_up::none));
  const std::string insert_rows =
      "INSERT INTO EventQueue (EventType, InstanceData, InstanceName, RaiseLocally, "
      "RaiseGlobally, Created, KeyId, Signature) ";
  c.prepare("eventq_insert_many",
            insert_rows +
                "SELECT t, d::json, i, l, g, c, k, s FROM unnest($1::text[], $2::text[], "
                "$3::text[], $4::boolean[], $5::boolean[], $6::timestamptz[], $7::text[], "
                "$8::text[]) WITH ORDINALITY AS u(t, d, i, l, g, c, k, s, n) ORDER BY n "
                "RETURNING Id");
  c.prepare("eventq_insert_joined",
            insert_rows +
                "SELECT t, d::json, i, l::boolean, g::boolean, c::timestamptz, k, s FROM unnest("
                "string_to_array($1, E'\\x1f', ''), string_to_array($2, E'\\x1f', ''), "
                "string_to_array($3, E'\\x1f', ''), string_to_array($4, E'\\x1f', ''), "
                "string_to_array($5, E'\\x1f', ''), string_to_array($6, E'\\x1f', ''), "
                "string_to_array($7, E'\\x1f', ''), string_to_array($8, E'\\x1f', '')) "
                "WITH ORDINALITY AS u(t, d, i, l, g, c, k, s, n) ORDER BY n RETURNING Id");
  c.prepare("eventq_wake", "SELECT pg_notify('" + channel_of(schema) + "', '')");
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
  // promoted replica the timeline.
  const std::string incarnation =
      "(SELECT system_identifier::text FROM pg_control_system()) || '.' || "
      "(SELECT timeline_id::text FROM pg_control_checkpoint())";
  // While paging through a backlog ($2: the target snapshot): the page alone, in eventq_read's
  // columns. No LATERAL join and no second sort of a full page.
  for (bool filtered : {false, true}) {
    c.prepare(filtered ? "eventq_page_types" : "eventq_page",
              "SELECT (SELECT pg_current_snapshot()::text), " + deletions + ", " + incarnation +
                  ", " + page_out + " " + page_of("$2::pg_snapshot", filtered));
  }
  // A poll is this one statement (one snapshot, no BEGIN/COMMIT): the statement's own snapshot,
  // the deletions and the incarnation, then the page. $2 is the target snapshot when paging
  // through a backlog, '' to read up to the statement's own snapshot: every row visible in it is
  // visible to the statement, so nothing committed before the snapshot can be passed over. With
  // no new rows the result is one row whose event columns are NULL.
  for (bool filtered : {false, true}) {
    c.prepare(filtered ? "eventq_read_types" : "eventq_read",
              "WITH head AS MATERIALIZED (SELECT pg_current_snapshot() AS now, " + deletions +
                  " AS deleted, " + incarnation +
                  " AS incarnation) "
                  "SELECT head.now::text, head.deleted, head.incarnation, e.Id, e.EventType, "
                  "e.InstanceData, e.InstanceName, e.RaiseLocally, e.RaiseGlobally, e.CreatedUs, "
                  "e.StampText, e.KeyId, e.Signature FROM head LEFT JOIN LATERAL (SELECT " +
                  page_out + ", u.StampOrder " +
                  page_of("coalesce(NULLIF($2, '')::pg_snapshot, head.now)", filtered) +
                  ") e ON true ORDER BY e.StampOrder, e.Id");
  }
  c.prepare("eventq_head", "SELECT pg_current_snapshot()::text, " + incarnation +
                               ", min(Stamp)::text FROM EventQueue");
  c.prepare("eventq_get", "SELECT Value FROM Properties WHERE Key = $1");
  c.prepare("eventq_insert_property",
            "INSERT INTO Properties (Key, Value) VALUES ($1, $2) ON CONFLICT (Key) DO NOTHING");
  c.prepare("eventq_set",
            "INSERT INTO Properties (Key, Value) VALUES ($1, $2) "
            "ON CONFLICT (Key) DO UPDATE SET Value = EXCLUDED.Value");
  // The fence: the write happens only while the registry row of the instance holds the
  // caller's token, in one statement (migration 0008; runs as the schema's owner, so that the
  // application role needs no UPDATE on Properties).
  c.prepare("eventq_store_cursor", "SELECT eventq_store_cursor($1, $2, $3)");
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
