// SQLite-specific behaviour: the file, the schema, migrations, hostile rows written by raw SQL.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

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
  return out;
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
  CHECK(sqlite_int(dir.file("migrated.db"), "SELECT max(Version) FROM EventQueueSchema") == 8);
}

TEST_CASE("the file is in WAL mode and Stamp is the Id") {
  temp_dir dir;
  auto db = dir.file("e.db");
  queue q("sqlite:" + db, test_options("a"));
  auto id = q.raise_raw("t", nlohmann::json::object(), raise_mode::globally);
  CHECK(sqlite_text(db, "PRAGMA journal_mode") == "wal");
  CHECK(sqlite_int(db, "SELECT Stamp FROM EventQueue") == id);
  CHECK(sqlite_text(db, "SELECT Value FROM Properties WHERE Key = 'EQStamp_a'") == "0");
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
    CHECK(msg.find("up to 8") != std::string::npos);
  }
  CHECK(sqlite_int(db, "SELECT count(*) FROM Properties WHERE Key = 'EQStamp_b'") == 0);
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
    CHECK(sqlite_int(dir.file("e.db"), "SELECT count(*) FROM EventQueueSchema") == 4);
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
  insert("'{broken'");
  auto broken = g1 + 1;
  insert("'\"not an object but valid json\"'");
  insert("'{\"n\": 2}'", "not a date");
  insert("X'7B226E223A22FF227D'");  // {"n":"\xff"}: invalid UTF-8
  sqlite_exec(db,
              "INSERT INTO EventQueue (EventType, InstanceData, InstanceName, RaiseLocally, "
              "RaiseGlobally) VALUES ('t', '{}', 'x', 0, 0)");  // addressed to nobody
  auto g2 = a.raise_raw("t", {{"n", 3}}, raise_mode::globally);
  b.poll_once();
  // The bad date still reaches a raw handler (it receives what is there); the broken JSON, the
  // non-object and the invalid UTF-8 are refused.
  CHECK(got.front() == g1);
  CHECK(got.back() == g2);
  CHECK(std::find(got.begin(), got.end(), broken) == got.end());
  CHECK(b.stats().undecodable == 3);
  CHECK(logs.contains("event " + std::to_string(broken)));
  CHECK(b.cursor() == std::to_string(g2));
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
  CHECK(b.cursor() == std::to_string(old));
  auto next = a.raise_raw("t", nlohmann::json::object(), raise_mode::globally);
  b.poll_once();
  CHECK(got == std::vector<std::int64_t>{next});
}
