// SQLite-specific behaviour: the file, the schema, migrations, hostile rows written by raw SQL.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <atomic>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "support.h"

using namespace eventq;
using namespace eventq::test;

namespace {
std::vector<std::string> describe(const std::string& db) {
  std::vector<std::string> out;
  for (const char* table : {"EventQueue", "Properties", "EventQueueSchema", "EventQueueInstances",
                            "EventQueueTasks", "EventQueueLag", "EventQueueStats"}) {
    std::string sql = std::string(
                          "SELECT group_concat(name || ':' || type || ':' || \"notnull\" || ':' || "
                          "coalesce(dflt_value, '') || ':' || pk || ':' || hidden, ',') "
                          "FROM pragma_table_xinfo('") +
                      table + "')";
    out.push_back(std::string(table) + "=" + sqlite_text(db, sql));
  }
  out.push_back("views=" + sqlite_text(db,
                                       "SELECT group_concat(name, ',') FROM (SELECT name FROM "
                                       "sqlite_master WHERE type = 'view' ORDER BY name)"));
  out.push_back("indexes=" + sqlite_text(db,
                                         "SELECT group_concat(name, ',') FROM (SELECT name FROM "
                                         "sqlite_master WHERE type = 'index' ORDER BY name)"));
  out.push_back("triggers=" + sqlite_text(db,
                                          "SELECT group_concat(name, ',') FROM (SELECT name FROM "
                                          "sqlite_master WHERE type = 'trigger' ORDER BY name)"));
  return out;
}

std::string incarnation_of(const std::string& db) {
  return sqlite_text(db, "SELECT Value FROM Properties WHERE Key = 'EQIncarnation'");
}
}  // namespace

TEST_CASE("the migrations produce exactly the schema documented in schema/sqlite.sql") {
  temp_dir dir;
  { queue q("sqlite:" + dir.file("migrated.db"), test_options("a")); }
  std::ifstream in(std::string(EVENTQ_SOURCE_DIR) + "/schema/sqlite.sql");
  std::stringstream ss;
  ss << in.rdbuf();
  REQUIRE(!ss.str().empty());
  sqlite_exec(dir.file("documented.db"), ss.str());
  CHECK(describe(dir.file("migrated.db")) == describe(dir.file("documented.db")));
  CHECK(sqlite_int(dir.file("migrated.db"), "SELECT max(Version) FROM EventQueueSchema") ==
        eventq::test::latest_schema_version());
}

TEST_CASE("the file is in WAL mode and Stamp is the Id") {
  temp_dir dir;
  auto db = dir.file("e.db");
  queue q("sqlite:" + db, test_options("a"));
  auto id = q.raise_raw("t", nlohmann::json::object(), raise_mode::globally);
  CHECK(sqlite_text(db, "PRAGMA journal_mode") == "wal");
  CHECK(sqlite_int(db, "SELECT Stamp FROM EventQueue") == id);
  CHECK(sqlite_text(db, "SELECT Value FROM Properties WHERE Key = 'EQStamp_a'") ==
        "0;db=" + incarnation_of(db));
}

TEST_CASE("a database migrated by a newer eventq is refused, untouched") {
  temp_dir dir;
  auto db = dir.file("e.db");
  { queue q("sqlite:" + db, test_options("a")); }
  sqlite_exec(db, "INSERT INTO EventQueueSchema VALUES (999, 'from the future', '2030-01-01')");
  try {
    queue q("sqlite:" + db, test_options("b"));
    FAIL("expected schema_too_new");
  } catch (const error& e) {
    CHECK(e.code() == errc::schema_too_new);
    std::string msg = e.what();
    CHECK(msg.find("999") != std::string::npos);
    CHECK(msg.find("up to " + eventq::test::latest_schema_version_text()) != std::string::npos);
  }
  CHECK(sqlite_int(db, "SELECT count(*) FROM Properties WHERE Key = 'EQStamp_b'") == 0);
}

TEST_CASE("migration 4 reports the stored rows that break its new rules and keeps them") {
  // A file at version 3 (the migrations applied by hand) holding rows that schema 4 refuses at
  // INSERT: two addressed to nobody, one whose Created is no time; and a genuine-looking one.
  temp_dir dir;
  auto db = dir.file("e.db");
  sqlite_exec(db,
              "CREATE TABLE EventQueueSchema (Version INTEGER PRIMARY KEY, Description TEXT NOT "
              "NULL, AppliedAt TEXT NOT NULL)");
  const char* names[] = {"0001_initial", "0002_operations", "0003_signatures"};
  for (int v = 1; v <= 3; ++v) {
    sqlite_exec(db, read_file(std::string(EVENTQ_SOURCE_DIR) + "/migrations/sqlite/" +
                              names[v - 1] + ".sql"));
    sqlite_exec(db, "INSERT INTO EventQueueSchema VALUES (" + std::to_string(v) + ", '" +
                        names[v - 1] + "', '2026-01-01 00:00:00')");
  }
  auto insert = [&](int local, int global, const std::string& created) {
    sqlite_exec(db,
                "INSERT INTO EventQueue (EventType, InstanceData, InstanceName, RaiseLocally, "
                "RaiseGlobally, Created) VALUES ('t', '{}', 'x', " +
                    std::to_string(local) + ", " + std::to_string(global) + ", " + created + ")");
  };
  insert(0, 0, "'2026-01-01 00:00:00'");
  insert(1, 1, "'2026-01-01 00:00:00'");
  insert(1, 0, "'yesterday'");
  insert(0, 0, "'2026-01-01 00:00:01'");
  log_capture logs;
  queue q("sqlite:" + db, test_options("a", &logs));
  CHECK(sqlite_int(db, "SELECT max(Version) FROM EventQueueSchema") ==
        eventq::test::latest_schema_version());
  CHECK(logs.count("eventq migration 0004") == 2);
  CHECK(
      logs.contains("eventq migration 0004: 2 rows of EventQueue are addressed to nobody (Ids "
                    "1, 4): instances refuse them; `eventq verify` lists them"));
  CHECK(
      logs.contains("eventq migration 0004: 1 rows of EventQueue have a Created that is not a "
                    "time in eventq's format and range (Ids 3)"));
  CHECK(sqlite_int(db, "SELECT count(*) FROM EventQueue") == 4);  // reported, not dropped
  auto rejected = q.find_rejected_rows();
  CHECK(rejected.size() == 4);  // the fourth is unsigned
  // Opening it again migrates nothing and reports nothing more.
  log_capture again;
  { queue r("sqlite:" + db, test_options("b", &again)); }
  CHECK(again.count("eventq migration") == 0);
}

TEST_CASE("many instances opening a fresh file at once migrate it exactly once") {
  // Repeated on fresh files: the race between the first opens (WAL switch, migrations, the
  // database secret) goes one way or the other, and every way must work.
  for (int round = 0; round < 20; ++round) {
    CAPTURE(round);
    temp_dir dir;
    auto url = "sqlite:" + dir.file("e.db");
    auto failures = open_and_raise_at_once(url, 10);
    REQUIRE_MESSAGE(failures.empty(), failures);
    CHECK(sqlite_int(dir.file("e.db"), "SELECT count(*) FROM EventQueueSchema") ==
          eventq::test::latest_schema_version());
    CHECK(sqlite_int(dir.file("e.db"),
                     "SELECT count(*) FROM Properties WHERE Key LIKE "
                     "'EQStamp%'") == 10);
    CHECK(sqlite_int(dir.file("e.db"), "SELECT count(*) FROM Properties WHERE Key = 'EQSecret'") ==
          1);
    CHECK(sqlite_int(dir.file("e.db"), "SELECT count(*) FROM EventQueue") == 10);
  }
}

TEST_CASE("hostile rows written by raw SQL are counted and skipped; genuine ones flow") {
  temp_dir dir;
  auto db = dir.file("e.db");
  log_capture logs;
  queue a("sqlite:" + db, test_options("a"));
  // Unsigned rows are refused before decoding (tests/security_test.cpp); with verification off
  // they reach the decoder.
  auto ob = test_options("b", &logs);
  ob.verify = verify_mode::off;
  queue b("sqlite:" + db, ob);
  std::vector<std::int64_t> got;
  auto sub = b.subscribe_raw(
      "t", [&](const event_record& r, const nlohmann::json&) { got.push_back(r.id); });
  auto g1 = a.raise_raw("t", {{"n", 1}}, raise_mode::globally);
  auto insert = [&](const std::string& data, const std::string& created = "2026-01-01 00:00:00") {
    sqlite_exec(db,
                "INSERT INTO EventQueue (EventType, InstanceData, InstanceName, RaiseLocally, "
                "RaiseGlobally, Created) VALUES ('t', " +
                    data + ", 'x', 0, 1, '" + created + "')");
  };
  // Since schema 4 the database refuses a Created that is no time and a row addressed to
  // nobody; rows stored before (the triggers dropped here) are refused by every instance,
  // counted and listed, never dropped silently.
  CHECK_THROWS(insert("'{\"n\": 2}'", "not a date"));
  const char* nobody =
      "INSERT INTO EventQueue (EventType, InstanceData, InstanceName, RaiseLocally, "
      "RaiseGlobally) VALUES ('t', '{}', 'x', 0, 0)";
  CHECK_THROWS(sqlite_exec(db, nobody));
  sqlite_exec(db, "DROP TRIGGER EventQueue_Created; DROP TRIGGER EventQueue_Flags");
  insert("'{broken'");
  auto broken = g1 + 1;
  insert("'\"not an object but valid json\"'");
  insert("'{\"n\": 2}'", "not a date");
  auto bad_date = g1 + 3;
  insert("X'7B226E223A22FF227D'");  // {"n":"\xff"}: invalid UTF-8
  sqlite_exec(db, nobody);
  auto to_nobody = g1 + 5;
  auto g2 = a.raise_raw("t", {{"n", 3}}, raise_mode::globally);
  b.poll_once();
  CHECK(got == std::vector<std::int64_t>{g1, g2});
  CHECK(b.stats().undecodable == 5);
  CHECK(logs.contains("event " + std::to_string(broken)));
  CHECK(logs.contains("event " + std::to_string(bad_date) +
                      " skipped, malformed: Created is not a time"));
  CHECK(logs.contains("event " + std::to_string(to_nobody) +
                      " skipped, malformed: addressed to nobody"));
  auto listed = b.find_rejected_rows();
  CHECK(listed.size() >= 5);
  CHECK(std::any_of(listed.begin(), listed.end(),
                    [&](const rejected_row& r) { return r.row.id == to_nobody; }));
  CHECK(b.cursor() == std::to_string(g2) + ";db=" + incarnation_of(db));
}

TEST_CASE("a cursor ahead of the newest Id (restored database) raises Missed and resumes") {
  temp_dir dir;
  auto db = dir.file("e.db");
  { queue b("sqlite:" + db, test_options("b")); }
  sqlite_exec(db, "UPDATE Properties SET Value = '9223372036854775807' WHERE Key = 'EQStamp_b'");
  queue a("sqlite:" + db, test_options("a"));
  auto old = a.raise_raw("t", nlohmann::json::object(), raise_mode::globally);
  queue b("sqlite:" + db, test_options("b"));
  std::vector<std::string> reasons;
  auto m = b.on_missed([&](const missed_info& i) { reasons.push_back(i.reason); });
  std::vector<std::int64_t> got;
  auto sub =
      b.subscribe_all([&](const event_record& r, const nlohmann::json&) { got.push_back(r.id); });
  b.poll_once();
  REQUIRE(reasons.size() == 1);
  CHECK(reasons[0].find("ahead") != std::string::npos);
  CHECK(b.cursor() == std::to_string(old) + ";db=" + incarnation_of(db));
  auto next = a.raise_raw("t", nlohmann::json::object(), raise_mode::globally);
  b.poll_once();
  CHECK(got == std::vector<std::int64_t>{next});
}

TEST_CASE("the file has an incarnation of its own, and cursors carry it") {
  temp_dir dir;
  { queue q("sqlite:" + dir.file("a.db"), test_options("a")); }
  { queue q("sqlite:" + dir.file("b.db"), test_options("a")); }
  auto a = incarnation_of(dir.file("a.db"));
  CHECK(std::regex_match(a, std::regex("[0-9a-f]{32}")));
  CHECK(a != incarnation_of(dir.file("b.db")));
  { queue q("sqlite:" + dir.file("a.db"), test_options("b")); }  // opening again keeps it
  CHECK(incarnation_of(dir.file("a.db")) == a);
  CHECK(sqlite_text(dir.file("a.db"), "SELECT Value FROM Properties WHERE Key = 'EQStamp_b'") ==
        "0;db=" + a);
}

TEST_CASE("a cursor from before schema 7 (a plain Id) is read without Missed and gains one") {
  temp_dir dir;
  auto db = dir.file("e.db");
  queue a("sqlite:" + db, test_options("a"));
  auto first = a.raise_raw("t", nlohmann::json::object(), raise_mode::globally);
  { queue b("sqlite:" + db, test_options("b")); }
  sqlite_exec(
      db, "UPDATE Properties SET Value = '" + std::to_string(first) + "' WHERE Key = 'EQStamp_b'");
  auto second = a.raise_raw("t", nlohmann::json::object(), raise_mode::globally);
  queue b("sqlite:" + db, test_options("b"));
  std::vector<std::string> missed;
  auto m = b.on_missed([&](const missed_info& i) { missed.push_back(i.reason); });
  std::vector<std::int64_t> got;
  auto sub =
      b.subscribe_all([&](const event_record& r, const nlohmann::json&) { got.push_back(r.id); });
  b.poll_once();
  CHECK(missed.empty());
  CHECK(got == std::vector<std::int64_t>{second});
  CHECK(sqlite_text(db, "SELECT Value FROM Properties WHERE Key = 'EQStamp_b'") ==
        std::to_string(second) + ";db=" + incarnation_of(db));
}

TEST_CASE("a file replaced by another database under a running instance: one Missed") {
  // b has read Ids 1..3 of file A. The file is then replaced (sqlite3's .restore) by another
  // database B that holds 5 events of its own: without the incarnation, b took Ids 4 and 5 of
  // B as the events after its cursor, and Ids 1..3 of B were skipped without a word.
  temp_dir dir;
  auto db = dir.file("e.db");
  auto with_secret = [](const std::string& name) {
    auto o = test_options(name);
    o.secret = "one secret for both databases";  // B's rows verify: only the Ids tell them apart
    return o;
  };
  queue a("sqlite:" + db, with_secret("a"));
  queue b("sqlite:" + db, with_secret("b"));
  std::vector<std::int64_t> got;
  std::vector<std::string> missed;
  auto sub =
      b.subscribe_all([&](const event_record& r, const nlohmann::json&) { got.push_back(r.id); });
  auto m = b.on_missed([&](const missed_info& i) { missed.push_back(i.reason); });
  for (int i = 0; i < 3; ++i) a.raise_raw("t", {{"n", i}}, raise_mode::globally);
  b.poll_once();
  REQUIRE(got == std::vector<std::int64_t>{1, 2, 3});
  auto old_incarnation = incarnation_of(db);
  {
    queue c("sqlite:" + dir.file("other.db"), with_secret("c"));
    for (int i = 0; i < 5; ++i) c.raise_raw("t", {{"other", i}}, raise_mode::globally);
  }
  sqlite_restore(db, dir.file("other.db"));
  REQUIRE(incarnation_of(db) != old_incarnation);
  b.poll_once();
  REQUIRE(missed.size() == 1);
  CHECK(missed[0].find("replaced or restored") != std::string::npos);
  CHECK(missed[0].find(old_incarnation) != std::string::npos);
  CHECK(got == std::vector<std::int64_t>{1, 2, 3});   // nothing of B taken for what follows 3
  CHECK(b.cursor() == "5;db=" + incarnation_of(db));  // the stated point: B's newest event
  auto next = a.raise_raw("t", {{"n", 3}}, raise_mode::globally);
  b.poll_once();
  b.poll_once();
  CHECK(missed.size() == 1);
  CHECK(got == std::vector<std::int64_t>{1, 2, 3, next});
}

TEST_CASE("rows deleted by hand in the middle of a page or a paged backlog give one Missed") {
  // Id 5 of 8 deleted. One page of 500: in the middle of it. Pages of 3: the backlog reads
  // 1,2,3 then 4,6,7: in the middle of the second page, not at its start (where a check of
  // each page's first row alone would see it).
  for (std::size_t page_size : {std::size_t{500}, std::size_t{3}}) {
    CAPTURE(page_size);
    temp_dir dir;
    auto db = dir.file("e.db");
    queue a("sqlite:" + db, test_options("a"));
    auto ob = test_options("b");
    ob.page_size = page_size;
    queue b("sqlite:" + db, ob);
    std::vector<std::int64_t> ids;
    for (int i = 0; i < 8; ++i) ids.push_back(a.raise_raw("t", {{"n", i}}, raise_mode::globally));
    sqlite_exec(db, "DELETE FROM EventQueue WHERE Id = " + std::to_string(ids[4]));
    std::vector<std::int64_t> got;
    std::vector<std::string> missed;
    auto sub =
        b.subscribe_all([&](const event_record& r, const nlohmann::json&) { got.push_back(r.id); });
    auto m = b.on_missed([&](const missed_info& i) { missed.push_back(i.reason); });
    b.poll_once();
    b.poll_once();
    REQUIRE(missed.size() == 1);
    CHECK(missed[0].find("between Id " + std::to_string(ids[4]) + " and") != std::string::npos);
    CHECK(got == std::vector<std::int64_t>{ids[0], ids[1], ids[2], ids[3], ids[5], ids[6], ids[7]});
  }
}

TEST_CASE("a raise with a name no reader accepts fails at the call; a concurrent raise commits") {
  temp_dir dir;
  auto url = "sqlite:" + dir.file("e.db");
  queue a(url, test_options("a"));
  CHECK_THROWS_AS(queue(url, test_options("caf\xe9")), error);
  std::atomic<int> refused{0}, other_errors{0};
  std::thread bad([&] {
    for (int i = 0; i < 30; ++i) {
      try {
        a.raise_raw("caf\xe9", nlohmann::json::object(), raise_mode::both);
      } catch (const error& e) {
        (e.code() == errc::invalid_argument ? refused : other_errors)++;
      }
    }
  });
  for (int i = 0; i < 30; ++i) a.raise_raw("t", {{"n", i}}, raise_mode::both);
  bad.join();
  CHECK(refused == 30);
  CHECK(other_errors == 0);
  CHECK(sqlite_int(dir.file("e.db"), "SELECT count(*) FROM EventQueue") == 30);
  CHECK_THROWS_AS(a.raise_raw("t", nlohmann::json::object(), raise_mode::none), error);
}

// The filtered page names the index of migration 9; an operator who drops it must not stop the
// queue: it reads every type then, filters in the library, and says so once.
TEST_CASE("a dropped EventQueue_Type index: typed listeners still get their events") {
  temp_dir dir;
  const auto db = dir.file("e.db");
  log_capture logs;
  queue a("sqlite:" + db, test_options("a"));
  queue b("sqlite:" + db, test_options("b", &logs));
  sqlite_exec(db, "DROP INDEX EventQueue_Type");
  std::atomic<int> got{0};
  auto sub = b.subscribe_raw("wanted", [&](const event_record&, const nlohmann::json&) { ++got; });
  for (int i = 0; i < 5; ++i) {
    a.raise_raw("other", nlohmann::json::object(), raise_mode::globally);
    a.raise_raw("wanted", nlohmann::json::object(), raise_mode::globally);
  }
  for (int i = 0; i < 3; ++i) b.poll_once();
  CHECK(got == 5);
  CHECK(b.stats().poll_errors == 0);
  CHECK(logs.count("the index EventQueue_Type is missing") == 1);
}
