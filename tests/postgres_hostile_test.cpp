// Issue 10 on a real PostgreSQL server (run under scripts/with-postgres): rows no reader can
// convert, hand deletes in a page and in a paged backlog, forged Stamps, names every reader
// refuses, a temporary table standing in for the deletion record, cleanup by the server's clock.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "eventq/postgres.h"
#include "pg_support.h"
#include "support.h"

using namespace eventq;
using namespace eventq::test;
using namespace std::chrono_literals;

namespace {

// Inserts a signed event by SQL with `created` as Created (NULL: now()), through the outbox
// helper's parameters; returns its Id.
std::int64_t insert_signed(const std::string& schema, const std::string& created = {}) {
  auto p =
      postgres::insert_parameters({"t", R"({"n":0})", raise_mode::both}, "sql", pg::db_key(schema));
  auto c = pg::connect(schema);
  pqxx::work tx(*c);
  auto r = tx.exec_params1(
      "INSERT INTO EventQueue (EventType, InstanceData, InstanceName, RaiseLocally, "
      "RaiseGlobally, Created, KeyId, Signature) VALUES ($1, $2::json, $3, $4::boolean, "
      "$5::boolean, $6::timestamptz, $7, $8) RETURNING Id",
      p[0], p[1], p[2], p[3], p[4], created.empty() ? p[5] : created, p[6], p[7]);
  tx.commit();
  return r[0].as<std::int64_t>();
}

struct ids_seen {
  std::vector<std::int64_t> ids;
  std::vector<std::string> missed;
};

// Reads everything after `cursor` through the storage, `limit` rows a page; `between` runs
// after the first page.
ids_seen drain(storage& s, std::string cursor, std::size_t limit,
               const std::function<void()>& between = {}) {
  ids_seen out;
  for (int page = 0; page < 100; ++page) {
    auto r = s.read(cursor, limit);
    if (r.missed) out.missed.push_back(*r.missed);
    for (auto& e : r.events) out.ids.push_back(e.id);
    cursor = r.next_cursor;
    if (page == 0 && between) between();
    if (!r.more && page > 0) break;
  }
  return out;
}

}  // namespace

TEST_CASE(
    "an infinity Created is refused by the schema; one stored before is refused, counted "
    "and listed, and delivery goes on") {
  auto schema = pg::fresh_schema();
  auto url = pg::url_with_schema(schema);
  log_capture logs;
  queue a(url, test_options("a"));
  queue b(url, test_options("b", &logs));
  CHECK_THROWS_AS(insert_signed(schema, "infinity"), pqxx::check_violation);
  // A row from before schema 4: the constraint is dropped to store it.
  pg::exec(schema, "ALTER TABLE EventQueue DROP CONSTRAINT EventQueue_Created");
  auto g1 = a.raise_raw("t", {{"n", 1}}, raise_mode::globally);
  auto bad = insert_signed(schema, "infinity");
  auto far = insert_signed(schema, "200000-01-01 00:00:00+00");  // finite, past what a clock holds
  auto g2 = a.raise_raw("t", {{"n", 2}}, raise_mode::globally);
  std::vector<std::int64_t> got;
  auto sub =
      b.subscribe_all([&](const event_record& r, const nlohmann::json&) { got.push_back(r.id); });
  CHECK_NOTHROW(b.poll_once());
  CHECK(got == std::vector<std::int64_t>{g1, g2});
  CHECK(b.stats().poll_errors == 0);
  CHECK(b.stats().undecodable == 2);
  CHECK(logs.contains("event " + std::to_string(bad) + " skipped, malformed: Created"));
  auto rejected = b.find_rejected_rows();
  std::vector<std::int64_t> rejected_ids;
  for (auto& r : rejected) rejected_ids.push_back(r.row.id);
  CHECK(rejected_ids == std::vector<std::int64_t>{bad, far});
  // `eventq stats` reads the summary.
  auto summary = b.backend().summary();
  CHECK(summary.rows == 4);
  // Cleanup deletes the infinity row (refused by everyone anyway).
  b.cleanup(24h);
  CHECK(pg::text(schema, "SELECT count(*) FROM EventQueue WHERE Id = " + std::to_string(bad)) ==
        "0");
}

TEST_CASE("rows deleted by hand in the middle of a page give one Missed, the rest arrive") {
  auto schema = pg::fresh_schema();
  auto url = pg::url_with_schema(schema);
  queue a(url, test_options("a"));
  queue b(url, test_options("b"));
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(a.raise_raw("t", {{"n", i}}, raise_mode::globally));
  pg::exec(schema, "DELETE FROM EventQueue WHERE Id = " + std::to_string(ids[2]));
  std::vector<std::int64_t> got;
  std::vector<std::string> missed;
  auto sub =
      b.subscribe_all([&](const event_record& r, const nlohmann::json&) { got.push_back(r.id); });
  auto m = b.on_missed([&](const missed_info& i) { missed.push_back(i.reason); });
  b.poll_once();
  b.poll_once();
  CHECK(missed.size() == 1);
  CHECK(got == std::vector<std::int64_t>{ids[0], ids[1], ids[3], ids[4], ids[5]});
}

TEST_CASE("rows deleted by hand in the middle of a paged backlog give one Missed") {
  // A paging cursor ('prev|target|stamp:id') is what a stop() or crash mid-backlog leaves.
  auto schema = pg::fresh_schema();
  auto url = pg::url_with_schema(schema);
  queue a(url, test_options("a"));
  queue b(url, test_options("b"));
  auto start = b.backend().head_cursor();
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(a.raise_raw("t", {{"n", i}}, raise_mode::globally));
  auto seen = drain(b.backend(), start, 2, [&] {
    pg::exec(schema, "DELETE FROM EventQueue WHERE Id = " + std::to_string(ids[3]));
  });
  CHECK(seen.missed.size() == 1);
  CHECK(seen.ids == std::vector<std::int64_t>{ids[0], ids[1], ids[2], ids[4], ids[5]});
  // And nothing more afterwards.
  CHECK(drain(b.backend(), b.backend().head_cursor(), 2).missed.empty());
}

TEST_CASE("an INSERT cannot choose its Stamp") {
  auto schema = pg::fresh_schema();
  auto url = pg::url_with_schema(schema);
  queue a(url, test_options("a"));
  queue b(url, test_options("b"));
  std::vector<std::int64_t> got;
  std::vector<std::string> missed;
  auto sub =
      b.subscribe_all([&](const event_record& r, const nlohmann::json&) { got.push_back(r.id); });
  auto m = b.on_missed([&](const missed_info& i) { missed.push_back(i.reason); });
  std::vector<std::int64_t> ids;
  for (const char* stamp : {"9223372036854775000", "4", "0"}) {
    auto p = postgres::insert_parameters({"t", "{}", raise_mode::both}, "sql", pg::db_key(schema));
    auto c = pg::connect(schema);
    pqxx::work tx(*c);
    auto r = tx.exec_params1(
        "INSERT INTO EventQueue (EventType, InstanceData, InstanceName, RaiseLocally, "
        "RaiseGlobally, Created, KeyId, Signature, Stamp) VALUES ($1, $2::json, $3, $4::boolean, "
        "$5::boolean, $6::timestamptz, $7, $8, $9::xid8) RETURNING Id, Stamp = "
        "pg_current_xact_id()",
        p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], std::string(stamp));
    CHECK(r[1].as<bool>());  // the inserting transaction's id, whatever was asked
    ids.push_back(r[0].as<std::int64_t>());
    tx.commit();
  }
  CHECK_THROWS_AS(pg::exec(schema, "UPDATE EventQueue SET Stamp = '5'"), pqxx::sql_error);
  b.poll_once();
  CHECK(got == ids);
  // Deleting them leaves no deletion from the future behind: no Missed on every poll.
  b.poll_once();
  pg::exec(schema, "DELETE FROM EventQueue");
  for (int i = 0; i < 3; ++i) b.poll_once();
  CHECK(missed.empty());
}

TEST_CASE("a raise with a name no reader accepts fails at the call; a concurrent raise commits") {
  auto schema = pg::fresh_schema();
  auto url = pg::url_with_schema(schema);
  queue a(url, test_options("a"));
  CHECK_THROWS_AS(queue(url, test_options("caf\xe9")), eventq::error);
  std::atomic<int> refused{0}, other_errors{0};
  std::vector<std::int64_t> good;
  std::thread bad([&] {
    for (int i = 0; i < 30; ++i) {
      try {
        a.raise_raw("caf\xe9", nlohmann::json::object(), raise_mode::both);
      } catch (const eventq::error& e) {
        (e.code() == errc::invalid_argument ? refused : other_errors)++;
      }
    }
  });
  for (int i = 0; i < 30; ++i) good.push_back(a.raise_raw("t", {{"n", i}}, raise_mode::both));
  bad.join();
  CHECK(refused == 30);
  CHECK(other_errors == 0);
  CHECK(pg::text(schema, "SELECT count(*) FROM EventQueue") == "30");
  // The outbox helper applies the same rule.
  try {
    postgres::insert_parameters({"caf\xe9", "{}", raise_mode::both}, "x", pg::db_key(schema));
    FAIL("insert_parameters accepted a Latin-1 event type");
  } catch (const eventq::error& e) {
    CHECK(e.code() == errc::invalid_argument);
  }
  CHECK_THROWS_AS(
      postgres::insert_parameters({"t", "{\"a\":", raise_mode::both}, "x", pg::db_key(schema)),
      eventq::error);
}

TEST_CASE("a temporary table cannot stand in for the deletion record") {
  // A role with DELETE and TEMP shadows the table the (SECURITY DEFINER) trigger writes with a
  // temporary one, then deletes: the deletion must still be recorded.
  auto schema = pg::fresh_schema();
  auto url = pg::url_with_schema(schema);
  queue a(url, test_options("a"));
  queue b(url, test_options("b"));
  std::vector<std::string> missed;
  auto m = b.on_missed([&](const missed_info& i) { missed.push_back(i.reason); });
  auto id = a.raise_raw("t", nlohmann::json::object(), raise_mode::globally);
  auto c = pg::connect(schema);
  {
    pqxx::work tx(*c);
    tx.exec("CREATE TEMP TABLE Properties (Key text PRIMARY KEY, Value text)");
    tx.exec(
        "CREATE TEMP TABLE EventQueueDeleted (Deleter xid8 DEFAULT pg_current_xact_id(), "
        "Below xid8, Stamps xid8[], At timestamptz DEFAULT now())");
    tx.exec("DELETE FROM " + schema + ".EventQueue WHERE Id = " + std::to_string(id));
    tx.commit();
  }
  b.poll_once();
  CHECK(missed.size() == 1);
}

TEST_CASE("cleanup measures its cutoffs by the server's clock") {
  auto schema = pg::fresh_schema();
  auto url = pg::url_with_schema(schema);
  queue a(url, test_options("a"));
  a.raise_raw("t", nlohmann::json::object(), raise_mode::both);
  a.poll_once();
  // A host whose clock runs two days ahead computes cutoffs a day in the future.
  auto wrong_now = std::chrono::system_clock::now() + 48h;
  expiry bounds{wrong_now - 24h, wrong_now - 24h * 7, 24h, 24h * 7};
  CHECK(a.backend().count_expired(bounds) == 0);
  CHECK(a.backend().delete_expired(bounds, 100) == 0);
  CHECK(pg::text(schema, "SELECT count(*) FROM EventQueue") == "1");
  // Dead instances too: by the server's clock "gone" stopped 6 days ago (kept: the hard maximum
  // age is 7 days; by the host's clock its lease ended before the cutoff), "long_gone" 8 days
  // ago (removed; its cursor marked removed, for Missed if it comes back).
  for (const char* name : {"gone", "long_gone"}) queue(url, test_options(name));
  pg::exec(schema,
           "UPDATE EventQueueInstances SET LeaseUntil = now() - interval '6 days' "
           "WHERE Name = 'gone'");
  pg::exec(schema,
           "UPDATE EventQueueInstances SET LeaseUntil = now() - interval '8 days' "
           "WHERE Name = 'long_gone'");
  CHECK(a.backend().remove_dead_instances(bounds) == 1);
  CHECK(pg::text(schema, "SELECT string_agg(Name, ',' ORDER BY Name) FROM EventQueueInstances") ==
        "a,gone");
  CHECK(pg::text(schema,
                 "SELECT string_agg(Key, ',' ORDER BY Key) FROM Properties WHERE Key LIKE "
                 "'EQStamp\\_%' AND Value NOT LIKE 'removed;at=%'") == "EQStamp_a,EQStamp_gone");
  CHECK(pg::text(schema,
                 "SELECT Value LIKE 'removed;at=____-__-__ __:__:__.___' FROM Properties "
                 "WHERE Key = 'EQStamp_long_gone'") == "t");
}

TEST_CASE("migration 4 reports the stored rows that break its new rules and keeps them") {
  // A schema at version 3 (the migrations run by hand), holding an infinity row.
  auto schema = pg::fresh_schema();
  {
    auto c = pg::connect(schema);
    pqxx::work tx(*c);
    tx.exec("CREATE SCHEMA " + schema);
    tx.exec(
        "CREATE TABLE EventQueueSchema (Version int PRIMARY KEY, Description text NOT NULL, "
        "AppliedAt timestamptz NOT NULL DEFAULT now())");
    const char* names[] = {"0001_initial", "0002_operations", "0003_signatures"};
    for (int v = 1; v <= 3; ++v) {
      tx.exec(read_file(std::string(EVENTQ_SOURCE_DIR) + "/migrations/postgres/" + names[v - 1] +
                        ".sql"));
      tx.exec("INSERT INTO EventQueueSchema (Version, Description) VALUES (" + std::to_string(v) +
              ", '" + names[v - 1] + "')");
    }
    tx.exec(
        "INSERT INTO EventQueue (EventType, InstanceData, InstanceName, RaiseLocally, "
        "RaiseGlobally, Created) VALUES ('t', '{}', 'x', true, true, 'infinity')");
    tx.commit();
  }
  log_capture logs;
  queue q(pg::url_with_schema(schema), test_options("a", &logs));
  CHECK(pg::text(schema, "SELECT max(Version) FROM EventQueueSchema") ==
        eventq::test::latest_schema_version_text());
  CHECK(
      logs.contains("eventq migration 0004: 1 rows of EventQueue have a Created that is not "
                    "finite"));
  CHECK(pg::text(schema, "SELECT count(*) FROM EventQueue") == "1");
  auto rejected = q.find_rejected_rows();
  REQUIRE(rejected.size() == 1);
  CHECK(rejected[0].verdict == "malformed");
}

TEST_CASE("after pg_dump and a restore into a fresh cluster: one Missed, not one per poll") {
  // The old cluster's transaction counter is well past the new one's, and a deletion was
  // recorded there: with a single "highest deleted Stamp" every poll on the new cluster said
  // Missed again.
  auto schema = pg::fresh_schema();
  auto url = pg::url_with_schema(schema);
  {
    queue a(url, test_options("a"));
    queue b(url, test_options("b"));
    std::vector<std::int64_t> ids;
    for (int i = 0; i < 3; ++i) ids.push_back(a.raise_raw("t", {{"n", i}}, raise_mode::globally));
    b.poll_once();
    auto c = pg::connect(schema);
    pqxx::nontransaction n(*c);  // COMMIT inside DO needs autocommit
    n.exec(
        "DO $$ DECLARE target xid8 := (pg_current_xact_id()::text::bigint + 3000)::text::xid8; "
        "BEGIN WHILE pg_current_xact_id() < target LOOP COMMIT; END LOOP; END $$");
    n.exec("DELETE FROM " + schema + ".EventQueue WHERE Id = " + std::to_string(ids[0]));
    b.poll_once();
  }
  temp_dir dir;
  const std::string bin = std::getenv("EVENTQ_TEST_PG_BIN");
  const std::string dump = dir.file("dump.sql");
  REQUIRE(std::system(("'" + bin + "/pg_dump' -n " + schema + " -f '" + dump + "' '" +
                       pg::server_url() + "'")
                          .c_str()) == 0);
  const std::string out = dir.file("out");
  // Not "'" + std::string(...): GCC 12 at -O2 warns (-Wrestrict) inside that operator+.
  const std::string cmd = std::string("'" EVENTQ_SOURCE_DIR
                                      "/scripts/with-postgres' sh -c '\"$EVENTQ_TEST_PG_BIN/psql\" "
                                      "-X -q -v ON_ERROR_STOP=1 -f ") +
                          dump + " \"$EVENTQ_TEST_PG_URL\" >/dev/null && " + peer_program() +
                          " missed \"$EVENTQ_TEST_PG_URL?schema=" + schema + "\" b 5' > " + out +
                          " 2>" + dir.file("err");
  int rc = std::system(cmd.c_str());
  INFO(read_file(dir.file("err")));
  REQUIRE(rc == 0);
  CHECK(read_file(out).find("missed=1 ") != std::string::npos);
}
