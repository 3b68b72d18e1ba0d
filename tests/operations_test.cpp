// Operating a queue across processes: the instance registry and its leases, cleanup of a large
// backlog while another process raises, the scheduled cleanup. Built twice: operations_test
// (SQLite) and postgres_operations_test (PostgreSQL, EVENTQ_TEST_POSTGRES).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <set>
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
  // What a pause longer than the lease leaves: the lease of `name` has expired.
  void expire_lease(const std::string& name) {
    exec("UPDATE EventQueueInstances SET LeaseUntil = now() - interval '1 hour' WHERE Name = '" +
         name + "'");
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
  void expire_lease(const std::string& name) {
    exec("UPDATE EventQueueInstances SET LeaseUntil = '2000-01-01 00:00:00.000' WHERE Name = '" +
         name + "'");
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

TEST_CASE("a lease taken over: the old holder's cursor write is refused and reported") {
  INFO("backend " << k_backend);
  database db;
  queue raiser(db.url, test_options("raiser"));
  auto tools = open_storage(db.url, test_options("tools"));
  log_capture logs;
  std::mutex m;
  std::vector<std::string> reasons;
  auto oa = test_options("web-01", &logs);
  oa.lease = 60s;  // A's own renewals (every 20 s) do not notice the takeover during the test
  oa.on_renewal_failed = [&](std::string_view why) {
    std::lock_guard lk(m);
    reasons.emplace_back(why);
  };
  auto said = [&](const std::string& needle) {
    std::lock_guard lk(m);
    return std::any_of(reasons.begin(), reasons.end(),
                       [&](const std::string& r) { return r.find(needle) != std::string::npos; });
  };
  queue a(db.url, oa);
  std::vector<std::int64_t> got_a;
  auto sa = a.subscribe_all([&](const event_record& r, const nlohmann::json&) {
    std::lock_guard lk(m);
    got_a.push_back(r.id);
  });
  auto raise = [&] { return raiser.raise_raw("t", nlohmann::json::object(), raise_mode::both); };
  auto e1 = raise();
  CHECK(a.poll_once() == 1);
  CHECK(tools->load_cursor("web-01") == a.cursor());

  // A is paused past its lease; B takes the name and the cursor stored for it.
  db.expire_lease("web-01");
  auto b = std::make_unique<queue>(db.url, test_options("web-01"));
  const auto b_cursor = tools->load_cursor("web-01");
  REQUIRE(b_cursor);
  CHECK(b->cursor() == *b_cursor);
  auto sb = b->subscribe_all([](const event_record&, const nlohmann::json&) {});

  // A wakes up and delivers the page it read, but its cursor write is refused.
  auto e2 = raise();
  a.poll_once();
  CHECK(a.stats().cursor_writes_refused == 1);
  CHECK(tools->load_cursor("web-01") == b_cursor);
  CHECK(logs.count("cursor write refused by the database") == 1);
  CHECK(wait_until([&] {
    return said("was taken over by another process (host '") &&
           said("pid " + std::to_string(getpid()) + ")");
  }));
  CHECK(a.stats().lease_renewal_failures >= 1);

  // Until it holds the name again, A delivers and stores nothing.
  auto e3 = raise();
  CHECK(a.poll_once() == 0);
  CHECK(a.poll_once() == 0);
  {
    std::lock_guard lk(m);
    CHECK(got_a == std::vector<std::int64_t>{e1, e2});
  }
  CHECK(tools->load_cursor("web-01") == b_cursor);
  CHECK(a.stats().cursor_writes_refused == 1);
  CHECK(logs.count("cursor write refused by the database") == 1);

  // B, the holder, stores its cursor; once B closes, A takes the name back at a renewal and
  // continues from B's cursor (e3, which B processed, is not delivered to A again).
  CHECK(b->poll_once() == 2);
  const auto b_after = tools->load_cursor("web-01");
  CHECK(b_after != b_cursor);
  CHECK(b_after == b->cursor());
  sb.reset();
  b.reset();
  auto e4 = raise();
  REQUIRE(wait_until([&] { return a.poll_once() > 0; }));
  {
    std::lock_guard lk(m);
    CHECK(got_a == std::vector<std::int64_t>{e1, e2, e4});
  }
  CHECK(tools->load_cursor("web-01") == a.cursor());
  CHECK(a.stats().cursor_writes_refused == 1);
  CHECK(logs.contains("is held by this process again"));
  (void)e3;
}

TEST_CASE("an instance killed with SIGKILL restarts at once on its host; elsewhere it waits") {
  INFO("backend " << k_backend);
  database db;
  { queue init(db.url, test_options("init")); }
  auto tools = open_storage(db.url, test_options("tools"));
  auto start_and_kill = [&] {
    child_process holder({peer_program(), "hold", db.url, "web-01", "30000"});
    REQUIRE(wait_until([&] {
      auto i = find_instance(*tools, "web-01");
      return i && i->live && i->pid == holder.pid();
    }));
    holder.kill(SIGKILL);
    REQUIRE(holder.wait(10s) == 128 + SIGKILL);
  };

  SUBCASE("same host: the dead process's name is taken over without waiting") {
    start_and_kill();
    log_capture logs;
    auto t0 = std::chrono::steady_clock::now();
    queue again(db.url, test_options("web-01", &logs));  // a 30 s lease is left: no retry here
    CHECK(std::chrono::steady_clock::now() - t0 < 2s);
    CHECK(logs.contains("took over instance name 'web-01' from process"));
    CHECK(find_instance(*tools, "web-01")->pid == getpid());
  }
  SUBCASE("another host: refused, saying how long until the lease expires") {
    start_and_kill();
    db.exec("UPDATE EventQueueInstances SET Host = 'elsewhere' WHERE Name = 'web-01'");
    try {
      queue again(db.url, test_options("web-01"));
      FAIL("expected instance_name_in_use");
    } catch (const error& e) {
      CHECK(e.code() == errc::instance_name_in_use);
      std::string msg = e.what();
      MESSAGE(msg);
      auto at = msg.find("which expires in ");
      REQUIRE(at != std::string::npos);
      double left = std::stod(msg.substr(at + 17));
      CHECK(left > 20.0);
      CHECK(left <= 30.0);
    }
  }
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
  CHECK(find_instance(a.backend(), "a").has_value());
}

TEST_CASE("cleanup deletes failure records older than the hard maximum age") {
  INFO("backend " << k_backend);
  database db;
  queue a(db.url, test_options("a"));
  auto now = std::chrono::system_clock::now();
  std::vector<failure_record> records(3);
  for (std::size_t i = 0; i < records.size(); ++i) {
    records[i].instance = "a";
    records[i].session = "s";
    records[i].event_id = static_cast<std::int64_t>(i + 1);
    records[i].event_type = "t";
    records[i].error = "listener down";
    records[i].attempts = 1;
  }
  records[0].failed_at = now - std::chrono::hours(24 * 8);  // past the 7 days
  records[1].failed_at = now - std::chrono::hours(24 * 6);
  records[2].failed_at = now;
  a.backend().record_failures(records);
  cleanup_settings dry;
  dry.dry_run = true;
  auto would = run_cleanup(a.backend(), dry, "test");
  CHECK(would.failures_removed == 1);
  CHECK(would.summary().find("and 1 old failure record") != std::string::npos);
  CHECK(a.backend().failure_count() == 3);
  auto report = run_cleanup(a.backend(), cleanup_settings{}, "test");
  CHECK(report.failures_removed == 1);
  CHECK(report.summary().find("deleted 1 old failure record") != std::string::npos);
  auto left = a.backend().failures(10, "");
  REQUIRE(left.size() == 2);
  CHECK(left[0].event_id == 3);
  CHECK(left[1].event_id == 2);
}

TEST_CASE("an instance whose cursor cleanup removed comes back with Missed, then reads on") {
  INFO("backend " << k_backend);
  database db;
  { queue gone(db.url, test_options("gone")); }  // its cursor: before everything below
  queue a(db.url, test_options("a"));
  db.insert_old(5, "ancient", "x", 8 * 24);  // past the hard maximum age: deleted, unread by gone
  for (int i = 0; i < 3; ++i) a.raise_raw("young", {{"i", i}}, raise_mode::globally);
  db.exec(
      "UPDATE EventQueueInstances SET LeaseUntil = '2000-01-01 00:00:00.000', "
      "Heartbeat = '2000-01-01 00:00:00.000' WHERE Name = 'gone'");
  a.cleanup();
  REQUIRE_FALSE(find_instance(a.backend(), "gone").has_value());
  auto marker = a.backend().load_cursor("gone");
  REQUIRE(marker.has_value());
  CHECK(marker->starts_with("removed;at="));
  CHECK(db.count("EventType = 'ancient'") == 0);

  std::vector<std::string> missed;
  int young = 0;
  {
    queue back(db.url, test_options("gone"));
    auto m = back.on_missed([&](const missed_info& info) {
      missed.push_back(info.reason);
      CHECK(info.old_cursor == *marker);
    });
    auto s = back.subscribe_all(
        [&](const event_record& r, const nlohmann::json&) { young += r.type == "young"; });
    back.poll_once();
    back.poll_once();
  }
  REQUIRE(missed.size() == 1);
  CHECK(missed[0].find("cleanup removed its cursor") != std::string::npos);
  CHECK(young == 3);  // what cleanup kept is delivered
  auto cursor = a.backend().load_cursor("gone");
  REQUIRE(cursor.has_value());
  CHECK_FALSE(cursor->starts_with("removed;at="));

  // Told once: the next start reads on from the stored cursor, without Missed.
  a.raise_raw("young", {{"i", 3}}, raise_mode::globally);
  queue again(db.url, test_options("gone"));
  auto m = again.on_missed([&](const missed_info& info) { missed.push_back(info.reason); });
  auto s = again.subscribe_all([&](const event_record&, const nlohmann::json&) { ++young; });
  again.poll_once();
  CHECK(missed.size() == 1);
  CHECK(young == 4);
}

TEST_CASE("status: events per minute, refused rows, Prometheus text with a TYPE for every sample") {
  INFO("backend " << k_backend);
  database db;
  queue a(db.url, test_options("a"));
  db.insert_old(40, "old", "x", 2);  // outside the hour: not in the chart
  batch b;
  for (int i = 0; i < 3; ++i) b.add_raw("new", {{"i", i}}, raise_mode::globally);
  a.raise(b);
  std::string flags = k_backend == "sqlite" ? "0, 1" : "false, true";
  db.exec(
      "INSERT INTO EventQueue (EventType, InstanceData, InstanceName, RaiseLocally, "
      "RaiseGlobally) VALUES ('forged\"type', '{}', 'x', " +
      flags + ")");  // unsigned: refused

  status_reader reader(db.url, test_options("status"));
  auto st = reader.read();
  CHECK(st.backend == k_backend);
  REQUIRE(st.events_per_minute.size() == 60);
  std::int64_t in_chart = 0;
  for (auto n : st.events_per_minute) in_chart += n;
  CHECK(in_chart == 4);
  CHECK(st.events_per_minute.back() + st.events_per_minute[58] == 4);  // this minute or the last
  CHECK(st.summary.rows == 44);
  REQUIRE(st.rejected.size() == 41);  // the old rows are unsigned too
  CHECK(st.rejected.back().row.type == "forged\"type");
  REQUIRE(st.instances.size() == 1);
  CHECK(st.instances[0].name == "a");

  auto j = status_json(st);
  CHECK(j.at("rows") == 44);
  CHECK(j.at("rejected").size() == 41);
  CHECK(j.at("events_per_minute").at("counts").size() == 60);

  std::ostringstream prom;
  write_prometheus(prom, st);
  CHECK(prom.str().find("eventq_rows_by_type{type=\"forged\\\"type\"} 1\n") != std::string::npos);
  CHECK(prom.str().find("\neventq_rejected_rows 41\n") != std::string::npos);
  CHECK(prom.str().find("\neventq_events_last_hour 4\n") != std::string::npos);

  std::ostringstream own;
  write_prometheus(own, a.stats(), {{"instance", "a\\b"}, {"role", "web"}});
  CHECK(own.str().find("\neventq_raised_total{instance=\"a\\\\b\",role=\"web\"} 3\n") !=
        std::string::npos);
  CHECK(own.str().find("# TYPE eventq_raised_total counter\n") != std::string::npos);
  for (const auto& text : {prom.str(), own.str()}) {
    std::set<std::string> typed;
    std::istringstream lines(text);
    std::string line;
    while (std::getline(lines, line)) {
      INFO(line);
      if (line.rfind("# TYPE ", 0) == 0) {
        typed.insert(line.substr(7, line.find(' ', 7) - 7));
      } else if (line.rfind("# HELP ", 0) != 0) {
        auto name = line.substr(0, line.find_first_of("{ "));
        CHECK(typed.count(name) == 1);
      }
    }
  }
  std::ostringstream bad;
  CHECK_THROWS_AS(write_prometheus(bad, a.stats(), {{"not a name", "x"}}), error);
  CHECK(bad.str().empty());
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
  CHECK(pg::text(migrated, "SELECT max(Version) FROM EventQueueSchema") ==
        eventq::test::latest_schema_version_text());
}
#endif
