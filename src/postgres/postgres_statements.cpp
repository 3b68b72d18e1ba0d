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
  // paging skip and repeat rows.
  const std::string page_columns =
      "Id, EventType, InstanceData::text AS InstanceData, InstanceName, RaiseLocally, "
      "RaiseGlobally, (date_part('epoch', Created) * 1000000)::bigint AS CreatedUs, "
      "Stamp::text AS StampText, KeyId, Signature";
  auto page_of = [](const std::string& target) {
    return "FROM EventQueue WHERE Stamp >= pg_snapshot_xmin($1::pg_snapshot) "
           "AND Stamp < pg_snapshot_xmax(" +
           target +
           ") AND NOT pg_visible_in_snapshot(Stamp, $1::pg_snapshot) "
           "AND pg_visible_in_snapshot(Stamp, " +
           target +
           ") AND (Stamp, Id) > ($3::xid8, $4::bigint) "
           "ORDER BY EventQueue.Stamp, EventQueue.Id LIMIT $5";
  };
  // While paging through a backlog ($2: the target snapshot): the page alone, in eventq_read's
  // columns (no EQDeletedStamp: that check is for the first page). No LATERAL join and no
  // second sort of a full page.
  c.prepare("eventq_page", "SELECT (SELECT pg_current_snapshot()::text), NULL::text, " +
                               page_columns + " " + page_of("$2::pg_snapshot"));
  // A poll is this one statement (one snapshot, no BEGIN/COMMIT): the statement's own snapshot
  // and EQDeletedStamp, then the page. $2 is the target snapshot when paging through a backlog,
  // '' to read up to the statement's own snapshot: every row visible in it is visible to the
  // statement, so nothing committed before the snapshot can be passed over. With no new rows the
  // result is one row whose event columns are NULL.
  c.prepare("eventq_read",
            "WITH head AS MATERIALIZED (SELECT pg_current_snapshot() AS now, "
            "(SELECT Value FROM Properties WHERE Key = 'EQDeletedStamp') AS deleted) "
            "SELECT head.now::text, head.deleted, e.Id, e.EventType, e.InstanceData, "
            "e.InstanceName, e.RaiseLocally, e.RaiseGlobally, e.CreatedUs, e.StampText, e.KeyId, "
            "e.Signature FROM head LEFT JOIN LATERAL (SELECT " +
                page_columns + ", Stamp AS StampOrder " +
                page_of("coalesce(NULLIF($2, '')::pg_snapshot, head.now)") +
                ") e ON true ORDER BY e.StampOrder, e.Id");
  c.prepare("eventq_get", "SELECT Value FROM Properties WHERE Key = $1");
  c.prepare("eventq_insert_property",
            "INSERT INTO Properties (Key, Value) VALUES ($1, $2) ON CONFLICT (Key) DO NOTHING");
  c.prepare("eventq_set",
            "INSERT INTO Properties (Key, Value) VALUES ($1, $2) "
            "ON CONFLICT (Key) DO UPDATE SET Value = EXCLUDED.Value");
}

event_record to_record(const pqxx::row& row) {
  event_record r;
  r.id = row[2].as<std::int64_t>();
  r.type = row[3].as<std::string>();
  r.data = row[4].as<std::string>();
  r.instance = row[5].as<std::string>();
  bool local = row[6].as<bool>();
  bool global = row[7].as<bool>();
  r.mode = local && global ? raise_mode::both : local ? raise_mode::locally : raise_mode::globally;
  r.created =
      std::chrono::system_clock::time_point(std::chrono::microseconds(row[8].as<std::int64_t>()));
  // NULL (unsigned) reads as "".
  if (!row[10].is_null()) r.key_id = row[10].as<std::string>();
  if (!row[11].is_null()) r.signature = row[11].as<std::string>();
  return r;
}

}  // namespace eventq::postgres
