// Operating a queue across processes: the instance registry and its leases, cleanup of a large
// backlog while another process raises, the scheduled cleanup. Built twice: operations_test
// (SQLite) and postgres_operations_test (PostgreSQL, EVENTQ_TEST_POSTGRES).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <thread>

#include "support.h"
#ifdef EVENTQ_TEST_POSTGRES
#include "pg_support.h"
#endif

using namespace eventq;
using namespace eventq::test;
using namespace std::chrono_literals;

namespace {

#ifdef EVENTQ_TEST_POSTGRES
const std::string k_backend = "postgresql";
struct database {
  std::string schema = pg::fresh_schema();
  std::string url = pg::url_with_schema(schema);
  void exec(const std::string& sql) { pg::exec(schema, sql); }
  std::int64_t count(const std::string& where) {
    return std::stoll(pg::text(schema, "SELECT count(*) FROM EventQueue WHERE " + where));
  }
  // `n` rows of `type` raised by `from` to everyone else, `hours` old.
  void insert_old(int n, const std::string& type, const std::string& from, int hours) {
    exec(
        "INSERT INTO EventQueue (EventType, InstanceData, InstanceName, RaiseLocally, "
        "RaiseGlobally, Created) SELECT '" +
        type + "', json_build_object('n', n), '" + from + "', false, true, now() - interval '" +
        std::to_string(hours) + " hours' FROM generate_series(1, " + std::to_string(n) + ") n");
  }
};
#else
const std::string k_backend = "sqlite";
struct database {
  temp_dir dir;
  std::string path = dir.file("e.db");
  std::string url = "sqlite:" + path;
  void exec(const std::string& sql) { sqlite_exec(path, sql); }
  std::int64_t count(const std::string& where) {
    return sqlite_int(path, "SELECT count(*) FROM EventQueue WHERE " + where);
  }
  void insert_old(int n, const std::string& type, const std::string& from, int hours) {
    exec("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < " +
         std::to_string(n) +
         ") INSERT INTO EventQueue (EventType, InstanceData, InstanceName, RaiseLocally, "
         "RaiseGlobally, Created) SELECT '" +
         type + "', '{\"n\":' || n || '}', '" + from +
         "', 0, 1, strftime('%Y-%m-%d %H:%M:%f', 'now', '-" + std::to_string(hours) +
         " hours') FROM c");
  }
};
#endif

std::optional<instance_info> find_instance(storage& s, const std::string& name) {
  for (auto& i : s.instances()) {
    if (i.name == name) return i;
  }
  return std::nullopt;
}

}  // namespace

TEST_CASE("a name held by a live process is refused; once its lease expires it can be taken") {
  INFO("backend " << k_backend);
  database db;
  { queue init(db.url, test_options("init")); }
  auto tools = open_storage(db.url, test_options("tools"));
  child_process holder({peer_program(), "hold", db.url, "web-01", "1000"});
  REQUIRE(wait_until([&] {
    auto i = find_instance(*tools, "web-01");
    return i && i->live;
  }));
  auto held = find_instance(*tools, "web-01");
  CHECK(held->pid == holder.pid());
  CHECK(held->version == std::string(version()));
  try {
    queue second(db.url, test_options("web-01"));
    FAIL("expected instance_name_in_use");
  } catch (const error& e) {
    CHECK(e.code() == errc::instance_name_in_use);
    MESSAGE(std::string(e.what()));
    CHECK(std::string(e.what()).find("pid " + std::to_string(holder.pid())) != std::string::npos);
  }
  // The holder keeps renewing: still refused after several lease lengths.
  std::this_thread::sleep_for(2500ms);
  CHECK_THROWS_AS(queue(db.url, test_options("web-01")), error);

  holder.kill(SIGKILL);
  REQUIRE(holder.wait(10s) == 128 + SIGKILL);
  auto killed_at = std::chrono::steady_clock::now();
  std::unique_ptr<queue> taken;
  REQUIRE(wait_until(
      [&] {
        try {
          taken = std::make_unique<queue>(db.url, test_options("web-01"));
          return true;
        } catch (const error& e) {
          CHECK(e.code() == errc::instance_name_in_use);
          return false;
        }
      },
      10s));
  auto waited = std::chrono::steady_clock::now() - killed_at;
  MESSAGE(
      "name free again " << std::chrono::duration_cast<std::chrono::milliseconds>(waited).count()
                         << " ms after SIGKILL (lease 1000 ms)");
  CHECK(waited < 3s);
  auto now_held = find_instance(*tools, "web-01");
  CHECK(now_held->pid == getpid());
}

TEST_CASE("cleanup of 200,000 old rows while another process raises: short stalls, right rows") {
  INFO("backend " << k_backend);
  database db;
  temp_dir dir;
  auto oc = test_options("cleaner");
  oc.cleanup_interval = 0s;
  queue cleaner(db.url, oc);
  db.insert_old(200000, "old", "ancient", 48);  // before the lagger's cursor: processed
  auto ol = test_options("lagger");
  ol.cleanup_interval = 0s;
  queue lagger(db.url, ol);                         // live, never polls
  db.insert_old(100, "pending", "ancient", 48);     // after its cursor: kept for it
  db.insert_old(50, "too-old", "ancient", 8 * 24);  // after its cursor, past the hard max age
  for (int i = 0; i < 10; ++i) cleaner.raise_raw("young", {{"n", i}}, raise_mode::both);
  cleaner.poll_once();  // the cleaner has read everything; only the lagger holds rows back

  auto stop = dir.file("stop"), out = dir.file("timed.out");
  child_process raiser({peer_program(), "timed", db.url, "raiser", stop, out});
  REQUIRE(wait_until([&] { return db.count("EventType = 'timed'") >= 50; }, 20s));
  auto t0 = std::chrono::steady_clock::now();
  auto deleted = cleaner.cleanup(24h);
  auto t1 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(100ms);
  std::ofstream(stop) << "stop\n";
  REQUIRE(raiser.wait(30s) == 0);

  auto ns = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  };
  std::istringstream lines(read_file(out));
  long long start = 0, took = 0, longest = 0;
  int during = 0, total = 0;
  while (lines >> start >> took) {
    ++total;
    if (start + took < ns(t0) || start > ns(t1)) continue;
    ++during;
    longest = std::max(longest, took);
  }
  MESSAGE(k_backend << ": cleanup deleted " << deleted << " rows in "
                    << std::chrono::duration_cast<std::chrono::milliseconds>(t1 - t0).count()
                    << " ms; " << during << " raises by another process meanwhile, longest "
                    << longest / 1000 << " us");
  CHECK(during >= 20);
  // Cleanup deletes in short batches, so raisers get in between: the longest stall is a small
  // part of the whole run. (The absolute figure, <= 100 ms, is a bench/ target: under sanitizers
  // on a loaded 2-core machine a 16 s cleanup still let raisers through, but some waited 400 ms.)
  auto whole = std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count();
  CHECK(longest < std::max<long long>(100'000'000, whole / 10));
  CHECK(deleted == 200050);
  CHECK(db.count("EventType = 'old'") == 0);
  CHECK(db.count("EventType = 'too-old'") == 0);
  CHECK(db.count("EventType = 'pending'") == 100);
  CHECK(db.count("EventType = 'young'") == 10);
  CHECK(db.count("EventType = 'timed'") == total);
  CHECK(cleaner.stats().cleanup_deleted == 200050);
}

TEST_CASE("the instances clean up by themselves, one at a time, on schedule") {
  INFO("backend " << k_backend);
  database db;
  auto o = [](const std::string& name) {
    auto x = test_options(name);
    x.cleanup_interval = 1s;
    x.retention = 1h;
    x.lease = 600ms;
    return x;
  };
  queue a(db.url, o("a"));
  queue b(db.url, o("b"));
  a.start();  // both read what arrives, so neither holds the old rows back
  b.start();
  db.insert_old(5000, "old", "ancient", 2);
  REQUIRE(wait_until([&] { return db.count("EventType = 'old'") == 0; }, 15s));
  // The rows go before the run that deleted them ends and counts them: wait for that too.
  REQUIRE(wait_until([&] { return a.stats().cleanup_deleted + b.stats().cleanup_deleted == 5000; },
                     15s));
  auto s = a.backend().summary();
  REQUIRE(s.last_cleanup.has_value());
  CHECK(s.last_cleanup_result.find("cleanup: deleted") == 0);
  CHECK(a.stats().cleanup_errors == 0);
  CHECK(b.stats().cleanup_errors == 0);
  CHECK(a.stats().cleanup_deleted + b.stats().cleanup_deleted == 5000);
  CHECK(a.stats().cleanup_runs + b.stats().cleanup_runs >= 1);
}

TEST_CASE("cleanup removes instances dead for longer than the hard maximum age") {
  INFO("backend " << k_backend);
  database db;
  { queue gone(db.url, test_options("gone")); }
  queue a(db.url, test_options("a"));
  db.exec(
      "UPDATE EventQueueInstances SET LeaseUntil = '2000-01-01 00:00:00.000', "
      "Heartbeat = '2000-01-01 00:00:00.000' WHERE Name = 'gone'");
  cleanup_settings dry;
  dry.dry_run = true;
  auto report = run_cleanup(a.backend(), dry, "test");
  CHECK(report.instances_removed == 1);
  CHECK(report.summary().find("would remove 1 dead instance") != std::string::npos);
  CHECK(find_instance(a.backend(), "gone").has_value());
  a.cleanup();
  CHECK_FALSE(find_instance(a.backend(), "gone").has_value());
  CHECK_FALSE(a.backend().load_cursor("gone").has_value());
  CHECK(find_instance(a.backend(), "a").has_value());
}

#ifdef EVENTQ_TEST_POSTGRES
TEST_CASE("the migrations produce exactly the schema documented in schema/postgres.sql") {
  auto migrated = pg::fresh_schema(), documented = pg::fresh_schema();
  { queue q(pg::url_with_schema(migrated), test_options("a")); }
  pg::exec("public", "CREATE SCHEMA " + documented);
  pg::exec(documented, read_file(std::string(EVENTQ_SOURCE_DIR) + "/schema/postgres.sql"));
  auto describe = [](const std::string& schema) {
    return pg::text("public",
                    "SELECT string_agg(table_name || '.' || column_name || ':' || data_type || ':' "
                    "|| is_nullable || ':' || coalesce(column_default, ''), ',' "
                    "ORDER BY table_name, ordinal_position) FROM information_schema.columns "
                    "WHERE table_schema = '" +
                        schema + "'") +
           "|" +
           pg::text("public",
                    "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes "
                    "WHERE schemaname = '" +
                        schema + "'") +
           "|" +
           pg::text("public",
                    "SELECT string_agg(p.proname, ',' ORDER BY p.proname) FROM pg_proc p JOIN "
                    "pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = '" +
                        schema + "'");
  };
  CHECK(describe(migrated) == describe(documented));
  CHECK(pg::text(migrated, "SELECT max(Version) FROM EventQueueSchema") == "8");
}
#endif
