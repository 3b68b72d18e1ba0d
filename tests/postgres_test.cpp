// PostgreSQL-specific guarantees: the snapshot cursor against out-of-order commits and long
// transactions, NOTIFY latency, concurrent migration, the outbox raise, server restarts,
// consumer crashes and a multi-process torture run. Each test case uses a fresh schema.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <algorithm>
#include <atomic>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "eventq/postgres.h"
#include "pg_support.h"
#include "support.h"

namespace {

// "c0", "c1", ...: appended, not "c" + std::to_string(i), on which GCC 12 at -O2 warns
// (-Wrestrict) inside operator+.
std::string numbered(const char* prefix, int i) {
  std::string s = prefix;
  s += std::to_string(i);
  return s;
}

using namespace std::chrono_literals;
using eventq::raise_mode;
using eventq::test::test_options;
namespace pg = eventq::test::pg;

struct inbox {
  std::mutex mutex;
  std::vector<std::int64_t> ids;
  std::vector<nlohmann::json> payloads;
  eventq::raw_handler handler() {
    return [this](const eventq::event_record& r, const nlohmann::json& j) {
      std::lock_guard lk(mutex);
      ids.push_back(r.id);
      payloads.push_back(j);
    };
  }
  std::size_t size() {
    std::lock_guard lk(mutex);
    return ids.size();
  }
  std::vector<std::int64_t> snapshot() {
    std::lock_guard lk(mutex);
    return ids;
  }
};

// A started instance "p" that polls only every `interval`, collecting "ping" events: it
// learns of a raise sooner only through a NOTIFY.
struct slow_poller {
  inbox got;
  std::unique_ptr<eventq::queue> q;
  eventq::subscription sub;
  slow_poller(const std::string& url, std::chrono::milliseconds interval) {
    auto o = test_options("p");
    o.poll_interval = interval;
    q = std::make_unique<eventq::queue>(url, o);
    sub = q->subscribe_raw("ping", got.handler());
    q->start();
  }
};

// Raises one event inside `tx` the way an application does (the outbox helper).
std::int64_t outbox_raise(pqxx::transaction_base& tx, const std::string& schema,
                          const std::string& instance, const std::string& type,
                          const std::string& json, raise_mode mode = raise_mode::globally) {
  auto p = eventq::postgres::insert_parameters({type, json, mode}, instance, pg::db_key(schema));
  auto r = tx.exec_params(eventq::postgres::insert_statement(schema), p[0], p[1], p[2], p[3], p[4],
                          p[5], p[6], p[7]);
  return r.at(0).at(0).as<std::int64_t>();
}

std::int64_t mono_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::vector<std::int64_t> read_ids(const std::string& path) {
  std::vector<std::int64_t> out;
  std::istringstream in(eventq::test::read_file(path));
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(std::stoll(line));
  }
  return out;
}

// Waits until instance `name` has stored a cursor (its queue is open).
bool registered(const std::string& schema, const std::string& name) {
  return eventq::test::wait_until(
      [&] {
        try {
          return !pg::text(schema,
                           "SELECT Value FROM Properties WHERE Key = 'EQStamp_" + name + "'")
                      .empty();
        } catch (const std::exception&) {
          return false;  // schema not created yet
        }
      },
      30s);
}

}  // namespace

TEST_CASE("a transaction that commits after a later one is delivered; Id > last skips it") {
  auto schema = pg::fresh_schema();
  auto url = pg::url_with_schema(schema);
  eventq::queue b(url, test_options("b"));
  inbox ib;
  auto sub = b.subscribe_all(ib.handler());

  auto conn_a = pg::connect(schema);
  auto conn_b = pg::connect(schema);
  auto conn_naive = pg::connect(schema);
  pqxx::work ta(*conn_a);
  auto id_a = outbox_raise(ta, schema, "app", "t", R"({"tx":"A"})");  // A stays open
  std::int64_t id_b = 0;
  {
    pqxx::work tb(*conn_b);
    id_b = outbox_raise(tb, schema, "app", "t", R"({"tx":"B"})");
    tb.commit();
  }
  REQUIRE(id_a < id_b);

  CHECK(b.poll_once() == 1);
  CHECK(ib.snapshot() == std::vector<std::int64_t>{id_b});
  // The naive reader: remembers the highest Id seen.
  std::int64_t naive_last = 0;
  {
    pqxx::nontransaction n(*conn_naive);
    for (const auto& row : n.exec("SELECT Id FROM EventQueue WHERE Id > 0 ORDER BY Id")) {
      naive_last = std::max(naive_last, row[0].as<std::int64_t>());
    }
  }
  CHECK(naive_last == id_b);

  ta.commit();
  CHECK(b.poll_once() == 1);
  CHECK(ib.snapshot() == std::vector<std::int64_t>{id_b, id_a});
  CHECK(b.stats().missed == 0);

  pqxx::nontransaction n(*conn_naive);
  auto naive = n.exec("SELECT Id FROM EventQueue WHERE Id > " + std::to_string(naive_last));
  CHECK(naive.empty());  // the naive cursor never sees A: the bug the snapshot cursor avoids
}

TEST_CASE("pages follow transaction order across a power of ten (999 < 1000 as numbers)") {
  // Stamps written by hand (older than any running transaction, so committed as far as any
  // snapshot is concerned) straddle 1000: sorted as text, "1000" < "998", and paging would skip
  // 998 and 999. The cursor is set back before them, as an operator restoring it would.
  auto schema = pg::fresh_schema();
  auto url = pg::url_with_schema(schema);
  { eventq::queue init(url, test_options("b")); }
  // Make sure the server's transaction counter is past the stamps used below.
  {
    auto c = pg::connect(schema);
    pqxx::nontransaction n(*c);  // COMMIT inside DO needs autocommit
    n.exec("DO $$ BEGIN WHILE pg_current_xact_id() < '1100'::xid8 LOOP COMMIT; END LOOP; END $$");
  }
  {
    // Signed like any outbox row (verification is on), only the Stamp is forced.
    auto c = pg::connect(schema);
    pqxx::work tx(*c);
    // Stamps are forced by the owner, past the trigger that sets them (schema 4).
    tx.exec("ALTER TABLE EventQueue DISABLE TRIGGER EventQueue_Stamp");
    for (int stamp : {1001, 998, 1000, 999, 997}) {
      auto p = eventq::postgres::insert_parameters(
          {"t", "{\"stamp\": " + std::to_string(stamp) + "}", raise_mode::globally}, "x",
          pg::db_key(schema));
      tx.exec_params(
          "INSERT INTO EventQueue (EventType, InstanceData, InstanceName, RaiseLocally, "
          "RaiseGlobally, Created, KeyId, Signature, Stamp) VALUES ($1, $2::json, $3, "
          "$4::boolean, $5::boolean, $6::timestamptz, $7, $8, $9::xid8)",
          p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], std::to_string(stamp));
    }
    tx.commit();
  }
  pg::exec(schema, "UPDATE Properties SET Value = '990:990:' WHERE Key = 'EQStamp_b'");
  auto ob = test_options("b");
  ob.page_size = 2;
  eventq::queue b(url, ob);
  std::vector<int> stamps;
  auto sub = b.subscribe_all([&](const eventq::event_record&, const nlohmann::json& j) {
    stamps.push_back(j.at("stamp").get<int>());
  });
  CHECK(b.poll_once() == 5);
  CHECK(stamps == std::vector<int>{997, 998, 999, 1000, 1001});
  CHECK(b.stats().missed == 0);
}

TEST_CASE("a backlog in a never-analyzed table is read in index order, not scanned per page") {
  // Without statistics the planner guessed a few rows and scanned the whole Stamp range (and
  // sorted it) for every page: the index entries read grew with pages x backlog. Both reads:
  // unfiltered (a subscriber for every type) through EventQueue_Stamp, filtered (the only
  // subscriber names its type) through EventQueue_Type as well.
  for (bool typed : {false, true}) {
    CAPTURE(typed);
    auto schema = pg::fresh_schema();
    auto url = pg::url_with_schema(schema);
    auto opts = test_options("d");
    opts.page_size = 250;
    opts.verify = eventq::verify_mode::off;  // rows written by SQL carry no signature
    eventq::queue d(url, opts);
    const int rows = 20000;
    pg::exec(schema,
             "INSERT INTO EventQueue (EventType, InstanceData, InstanceName, RaiseLocally, "
             "RaiseGlobally) SELECT 'fill', json_build_object('n', g), 'sql', false, true "
             "FROM generate_series(1, " +
                 std::to_string(rows) + ") g");
    auto index_reads = [&] {
      return std::stoll(pg::text(
          schema, "SELECT sum(idx_tup_read) FROM pg_stat_user_indexes WHERE schemaname = '" +
                      schema + "' AND indexrelname IN ('eventqueue_stamp', 'eventqueue_type')"));
    };
    auto before = index_reads();
    std::atomic<int> got{0};
    auto count = [&](const eventq::event_record&, const nlohmann::json&) { ++got; };
    auto sub = typed ? d.subscribe_raw("fill", count) : d.subscribe_all(count);
    d.poll_once();
    CHECK(got == rows);
    // Statistics reach the view within a second or so of the reader going idle.
    eventq::test::wait_until([&] { return index_reads() - before >= rows; }, 10s);
    auto read = index_reads() - before;
    MESSAGE("index entries read for " << rows << " rows in " << rows / 250 << " pages: " << read);
    CHECK(read >= rows);
    CHECK(read < 3 * rows);  // a whole-range scan per page reads ~40x more
  }
}

TEST_CASE("start=oldest: retained rows, then a transaction that was running at open") {
  auto schema = pg::fresh_schema();
  auto url = pg::url_with_schema(schema);
  eventq::queue a(url, test_options("a"));
  auto conn_x = pg::connect(schema);
  pqxx::work tx(*conn_x);
  auto late = outbox_raise(tx, schema, "app", "t", R"({"n":"late"})");
  auto early = a.raise_raw("t", {{"n", "early"}}, raise_mode::globally);
  auto od = test_options("d");
  od.start = eventq::start_position::oldest;
  eventq::queue d(url, od);
  inbox id;
  auto sub = d.subscribe_all(id.handler());
  CHECK(d.poll_once() == 1);
  tx.commit();
  CHECK(d.poll_once() == 1);
  CHECK(id.snapshot() == std::vector<std::int64_t>{early, late});
  CHECK(d.stats().missed == 0);
}

TEST_CASE("a long unrelated write transaction does not stall delivery") {
  auto schema = pg::fresh_schema();
  auto url = pg::url_with_schema(schema);
  auto ob = test_options("b");
  ob.poll_interval = 2s;
  // NOTIFY off: delivery must come from polling alone, within one interval.
  eventq::queue b(pg::url_with_schema(schema, "&notify=off"), ob);
  eventq::queue a(url, test_options("a"));
  pg::exec(schema, "CREATE TABLE scratch (x int)");
  auto blocker_conn = pg::connect(schema);
  pqxx::work blocker(*blocker_conn);
  blocker.exec("INSERT INTO scratch VALUES (1)");  // holds an xid, uncommitted, for the whole test

  std::mutex m;
  std::map<int, std::chrono::steady_clock::time_point> got;
  auto sub = b.subscribe_raw("t", [&](const eventq::event_record&, const nlohmann::json& j) {
    std::lock_guard lk(m);
    got[j.at("n").get<int>()] = std::chrono::steady_clock::now();
  });
  b.start();
  std::vector<std::chrono::steady_clock::time_point> sent;
  for (int i = 0; i < 4; ++i) {
    sent.push_back(std::chrono::steady_clock::now());
    a.raise_raw("t", {{"n", i}}, raise_mode::globally);
    CHECK(eventq::test::wait_until(
        [&] {
          std::lock_guard lk(m);
          return got.count(i) == 1;
        },
        3s));
    std::this_thread::sleep_for(500ms);
  }
  b.stop();
  std::lock_guard lk(m);
  REQUIRE(got.size() == 4);
  for (int i = 0; i < 4; ++i) {
    auto took = std::chrono::duration_cast<std::chrono::milliseconds>(got[i] - sent[i]);
    INFO("event " << i << " took " << took.count() << " ms");
    CHECK(took < 2500ms);
  }
  blocker.abort();
}

TEST_CASE("NOTIFY wakes another process well within the poll interval") {
  auto schema = pg::fresh_schema();
  auto url = pg::url_with_schema(schema);
  eventq::queue a(url, test_options("a"));
  eventq::test::temp_dir dir;
  const int count = 30;
  eventq::test::child_process peer(
      {eventq::test::peer_program(), "latency", url, "p", std::to_string(count), dir.file("lat")});
  REQUIRE(registered(schema, "p"));
  std::this_thread::sleep_for(500ms);  // let it reach its first wait
  for (int i = 0; i < count; ++i) {
    a.raise_raw("ping", {{"t", mono_ns()}}, raise_mode::globally);
    std::this_thread::sleep_for(30ms);
  }
  REQUIRE(peer.wait(30s) == 0);
  auto us = read_ids(dir.file("lat"));
  REQUIRE(us.size() == static_cast<std::size_t>(count));
  std::sort(us.begin(), us.end());
  auto p50 = us[us.size() / 2], p90 = us[us.size() * 9 / 10], max = us.back();
  MESSAGE("NOTIFY latency across processes: p50 " << p50 << " us, p90 " << p90 << " us, max " << max
                                                  << " us (poll interval 2 s)");
  CHECK(p90 < 100000);
  CHECK(max < 1000000);
}

TEST_CASE("only a polling queue listens: a raise-only queue holds no LISTEN connection") {
  // Every NOTIFY signals every listening backend, and notifications nobody reads stay in the
  // server's NOTIFY queue: a queue that only raises must not LISTEN.
  auto schema = pg::fresh_schema();
  auto url = pg::url_with_schema(schema);
  std::string channel = "eventq_" + schema;
  std::transform(channel.begin(), channel.end(), channel.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  auto listeners = [&] {
    return std::stoi(pg::text(schema,
                              "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%' "
                              "AND query LIKE '%" +
                                  channel + "%'"));
  };
  eventq::queue raiser(url, test_options("r"));
  for (int i = 0; i < 20; ++i) raiser.raise_raw("ping", {{"i", i}}, raise_mode::globally);
  std::this_thread::sleep_for(200ms);  // the wake-ups went out
  CHECK(listeners() == 0);

  slow_poller poller(url, 5s);
  auto& got = poller.got;
  REQUIRE(eventq::test::wait_until([&] { return listeners() == 1; }, 10s));
  std::this_thread::sleep_for(300ms);  // its first poll is done: it waits now
  // Woken by the NOTIFY, not found by the next poll (5 s away).
  auto t0 = std::chrono::steady_clock::now();
  raiser.raise_raw("ping", {{"i", 20}}, raise_mode::globally);
  REQUIRE(eventq::test::wait_until([&] { return got.size() == 1; }, 10s));
  CHECK(std::chrono::steady_clock::now() - t0 < 2500ms);
  std::lock_guard lk(got.mutex);
  CHECK(got.payloads.front()["i"] == 20);
}

TEST_CASE("queues of one process share NOTIFYs, and every raise is still announced") {
  // Raisers a and b share one stream of wake-ups: a NOTIFY covers the raises that committed
  // before it started, whichever queue sent it. A raise of b right after a's must still wake
  // the poller (which would otherwise find it only at its next poll, 20 s away).
  auto schema = pg::fresh_schema();
  auto url = pg::url_with_schema(schema);
  eventq::queue a(url, test_options("a"));
  eventq::queue b(url, test_options("b"));
  slow_poller poller(url, 20s);
  auto& got = poller.got;
  std::this_thread::sleep_for(300ms);  // listening and waiting
  auto t0 = std::chrono::steady_clock::now();
  for (int round = 0; round < 10; ++round) {
    a.raise_raw("ping", {{"from", "a"}}, raise_mode::globally);
    b.raise_raw("ping", {{"from", "b"}}, raise_mode::globally);
    REQUIRE(eventq::test::wait_until(
        [&] { return got.size() == static_cast<std::size_t>(2 * round + 2); }, 5s));
    if (round % 3 == 0) std::this_thread::sleep_for(5ms);  // some rounds after the gap
  }
  CHECK(std::chrono::steady_clock::now() - t0 < 15s);  // no round waited for a poll
}

TEST_CASE("ten processes opening a fresh schema at once migrate it exactly once") {
  auto schema = pg::fresh_schema();
  auto url = pg::url_with_schema(schema);
  std::vector<std::unique_ptr<eventq::test::child_process>> peers;
  for (int i = 0; i < 10; ++i) {
    peers.push_back(std::make_unique<eventq::test::child_process>(std::vector<std::string>{
        eventq::test::peer_program(), "raise", url, numbered("p", i), "1"}));
  }
  for (auto& p : peers) CHECK(p->wait(60s) == 0);
  CHECK(pg::text(schema, "SELECT count(*) FROM EventQueueSchema") ==
        eventq::test::latest_schema_version_text());
  CHECK(pg::text(schema, "SELECT count(*) FROM EventQueue") == "10");
  // One database secret, and every row signed with it: a new instance accepts them all.
  CHECK(pg::text(schema, "SELECT count(*) FROM Properties WHERE Key = 'EQSecret'") == "1");
  CHECK(eventq::queue(url, test_options("check")).find_rejected_rows().empty());
}

TEST_CASE("transactional raise: the event exists iff the application's transaction commits") {
  auto schema = pg::fresh_schema();
  auto url = pg::url_with_schema(schema);
  auto ob = test_options("b");
  ob.poll_interval = 5s;
  eventq::queue b(url, ob);
  inbox ib;
  auto sub = b.subscribe_all(ib.handler());
  b.start();
  auto conn = pg::connect(schema);
  std::int64_t committed = 0, rolled_back = 0;
  {
    pqxx::work tx(*conn);
    tx.exec("CREATE TABLE pages (id int)");
    tx.exec("INSERT INTO pages VALUES (42)");
    committed = outbox_raise(tx, schema, "app", "page.changed", R"({"page": 42})");
    tx.commit();
  }
  auto t0 = std::chrono::steady_clock::now();
  CHECK(eventq::test::wait_until([&] { return ib.size() == 1; }, 3s));
  CHECK(std::chrono::steady_clock::now() - t0 < 1s);  // NOTIFY at commit woke the poller
  {
    pqxx::work tx(*conn);
    tx.exec("INSERT INTO pages VALUES (43)");
    rolled_back = outbox_raise(tx, schema, "app", "page.changed", R"({"page": 43})");
    tx.abort();
  }
  auto last = eventq::queue(url, test_options("a"))
                  .raise_raw("page.changed", {{"page", 44}}, raise_mode::globally);
  CHECK(eventq::test::wait_until([&] { return ib.size() == 2; }, 3s));
  b.stop();
  CHECK(ib.snapshot() == std::vector<std::int64_t>{committed, last});
  CHECK(rolled_back < last);
  CHECK(ib.payloads.at(0) == nlohmann::json{{"page", 42}});
  CHECK(pg::text(schema, "SELECT InstanceData::text FROM EventQueue WHERE Id = " +
                             std::to_string(committed)) == R"({"page": 42})");  // kept exactly

  CHECK_THROWS_AS(eventq::postgres::insert_statement("bad; schema"), eventq::error);
  CHECK_THROWS_AS(eventq::postgres::insert_parameters({"t", "[1]", raise_mode::both}, "app",
                                                      pg::db_key(schema)),
                  eventq::error);
  CHECK_THROWS_AS(eventq::postgres::insert_parameters({"t", "{}", raise_mode::both}, "app",
                                                      eventq::signing_key{"1", "too short"}),
                  eventq::error);
}

TEST_CASE("server restart mid-stream: raises fail clearly, nothing committed is lost") {
  auto schema = pg::fresh_schema();
  auto url = pg::url_with_schema(schema);
  eventq::test::log_capture logs;
  eventq::queue b(url, test_options("b", &logs));
  eventq::queue a(url, test_options("a", &logs));
  inbox ib;
  auto sub = b.subscribe_all(ib.handler());
  b.start();
  // Polls rarely: after the restart, only a reconnected LISTEN delivers quickly.
  auto oc = test_options("c", &logs);
  oc.poll_interval = 10s;
  eventq::queue c(url, oc);
  inbox ic;
  auto sc = c.subscribe_raw("late", ic.handler());
  c.start();

  const int total = 200;
  std::atomic<int> acked{0};
  std::atomic<int> unavailable{0};
  std::thread raiser([&] {
    for (int i = 0; i < total; ++i) {
      for (;;) {
        try {
          a.raise_raw("t", {{"n", i}}, raise_mode::globally);
          break;
        } catch (const eventq::error& e) {
          if (e.code() == eventq::errc::database_unavailable) ++unavailable;
          std::this_thread::sleep_for(50ms);
        }
      }
      ++acked;
      std::this_thread::sleep_for(5ms);
    }
  });
  REQUIRE(eventq::test::wait_until([&] { return acked >= 50; }, 20s));
  pg::ctl("stop");
  try {
    a.raise_raw("t", {{"n", -1}}, raise_mode::globally);
    FAIL("raise succeeded with the server stopped");
  } catch (const eventq::error& e) {
    CHECK(e.code() == eventq::errc::database_unavailable);
    INFO(e.what());
    CHECK(std::string(e.what()).find("reconnect") != std::string::npos);
  }
  std::this_thread::sleep_for(300ms);
  pg::ctl("start");
  raiser.join();
  CHECK(unavailable > 0);
  CHECK(eventq::test::wait_until(
      [&] {
        std::lock_guard lk(ib.mutex);
        std::set<int> seen;
        for (auto& j : ib.payloads) seen.insert(j.at("n").get<int>());
        return seen.size() == static_cast<std::size_t>(total);
      },
      30s));
  CHECK(b.running());
  CHECK(b.stats().poll_errors > 0);
  b.stop();
  std::this_thread::sleep_for(1500ms);  // the listener retries once a second
  auto t0 = std::chrono::steady_clock::now();
  a.raise_raw("late", nlohmann::json::object(), raise_mode::globally);
  CHECK(eventq::test::wait_until([&] { return ic.size() == 1; }, 15s));
  CHECK(std::chrono::steady_clock::now() - t0 < 1s);
  c.stop();
  // Every committed row reached b (duplicates allowed only for an in-doubt commit).
  std::set<std::int64_t> delivered(ib.ids.begin(), ib.ids.end());
  auto rows = std::stoll(pg::text(schema, "SELECT count(*) FROM EventQueue WHERE EventType = 't'"));
  CHECK(static_cast<std::int64_t>(delivered.size()) == rows);
}

TEST_CASE("a consumer killed with SIGKILL mid-stream resumes without losing events") {
  auto schema = pg::fresh_schema();
  auto url = pg::url_with_schema(schema);
  eventq::queue a(url, test_options("a"));
  eventq::test::temp_dir dir;
  auto out = dir.file("ids");
  std::vector<std::int64_t> raised;
  auto raise_ticks = [&](int n) {
    for (int i = 0; i < n; i += 50) {
      eventq::batch batch;
      for (int k = 0; k < 50; ++k) batch.add_raw("tick", {{"n", i + k}}, raise_mode::globally);
      auto ids = a.raise(batch);
      raised.insert(raised.end(), ids.begin(), ids.end());
      std::this_thread::sleep_for(2ms);
    }
  };
  {
    eventq::test::child_process c({eventq::test::peer_program(), "consume", url, "c", out});
    REQUIRE(registered(schema, "c"));
    raise_ticks(1000);
    REQUIRE(eventq::test::wait_until([&] { return read_ids(out).size() >= 100; }, 20s));
    c.kill(SIGKILL);
    c.wait(10s);
  }
  raise_ticks(1000);
  eventq::test::child_process c({eventq::test::peer_program(), "consume", url, "c", out});
  a.raise_raw("stop", nlohmann::json::object(), raise_mode::globally);
  REQUIRE(c.wait(60s) == 0);
  auto got = read_ids(out);
  std::set<std::int64_t> seen(got.begin(), got.end());
  std::size_t lost = 0;
  for (auto id : raised) lost += seen.count(id) == 0;
  CHECK(lost == 0);
  CHECK(seen.size() == raised.size());
}

TEST_CASE("torture: 8 raisers with rollbacks, 3 consumer processes, 50000 events") {
  auto schema = pg::fresh_schema();
  auto url = pg::url_with_schema(schema);
  { eventq::queue init(url, test_options("init")); }
  eventq::test::temp_dir dir;
  std::vector<std::unique_ptr<eventq::test::child_process>> consumers;
  for (int i = 0; i < 3; ++i) {
    consumers.push_back(std::make_unique<eventq::test::child_process>(std::vector<std::string>{
        eventq::test::peer_program(), "consume", url, numbered("c", i), dir.file(numbered("c", i)),
        // c2 lags behind: it drains backlogs page by page
        i == 2 ? "50" : "0"}));
  }
  for (int i = 0; i < 3; ++i) REQUIRE(registered(schema, numbered("c", i)));

  const int raisers = 8, per_raiser = 6250;
  std::mutex m;
  std::set<std::int64_t> committed, rolled_back;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  const auto key = pg::db_key(schema);
  for (int r = 0; r < raisers; ++r) {
    threads.emplace_back([&, r] {
      try {
        std::mt19937 rng(static_cast<unsigned>(r * 7919 + 1));
        auto conn = pg::connect(schema);
        auto statement = eventq::postgres::insert_statement(schema);
        conn->prepare("raise", statement);
        int done = 0;
        while (done < per_raiser) {
          int n = std::min(per_raiser - done, 1 + static_cast<int>(rng() % 8));
          std::vector<std::int64_t> ids;
          pqxx::work tx(*conn);
          for (int k = 0; k < n; ++k) {
            auto p = eventq::postgres::insert_parameters(
                {"tick", R"({"r":)" + std::to_string(r) + "}", raise_mode::globally},
                "raiser" + std::to_string(r), key);
            ids.push_back(
                tx.exec_prepared("raise", p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7])[0][0]
                    .as<std::int64_t>());
          }
          if (rng() % 4 == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
          bool commit = rng() % 10 != 0;
          if (commit) {
            tx.commit();
          } else {
            tx.abort();
          }
          std::lock_guard lk(m);
          (commit ? committed : rolled_back).insert(ids.begin(), ids.end());
          done += n;
        }
      } catch (const std::exception& e) {
        std::lock_guard lk(m);
        std::cerr << "raiser " << r << ": " << e.what() << '\n';
        ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  REQUIRE(failures == 0);
  eventq::queue(url, test_options("init"))
      .raise_raw("stop", nlohmann::json::object(), raise_mode::globally);
  for (auto& c : consumers) CHECK(c->wait(120s) == 0);
  MESSAGE(committed.size() << " committed, " << rolled_back.size() << " rolled back");
  CHECK(committed.size() + rolled_back.size() == raisers * per_raiser);
  CHECK(rolled_back.size() > 0);
  for (int i = 0; i < 3; ++i) {
    auto got = read_ids(dir.file(numbered("c", i)));
    std::set<std::int64_t> seen(got.begin(), got.end());
    INFO("consumer c" << i);
    CHECK(got.size() == seen.size());  // no duplicates without a crash
    if (got.size() != seen.size()) {
      std::map<std::int64_t, int> count;
      std::string dupes;
      for (auto id : got) ++count[id];
      for (auto& [id, c] : count) {
        if (c > 1 && dupes.size() < 400)
          dupes += std::to_string(id) + "x" + std::to_string(c) + " ";
      }
      MESSAGE("delivered more than once: " << dupes);
    }
    CHECK(seen == committed);
  }
}

TEST_CASE("cursors that cannot be honoured raise Missed once, and the instance recovers") {
  auto schema = pg::fresh_schema();
  auto url = pg::url_with_schema(schema);
  eventq::queue a(url, test_options("a"));
  for (std::string bad :
       {"999999999:999999999:", "5:3:", "10:20:15,12", "1:2:|1:2:|x:1", "", "100"}) {
    { eventq::queue b(url, test_options("b")); }
    pg::exec(schema, "UPDATE Properties SET Value = '" + bad + "' WHERE Key = 'EQStamp_b'");
    eventq::queue b(url, test_options("b"));
    std::vector<std::string> reasons;
    auto m = b.on_missed([&](const eventq::missed_info& i) { reasons.push_back(i.reason); });
    inbox ib;
    auto sub = b.subscribe_all(ib.handler());
    b.poll_once();
    INFO("cursor '" << bad << "'");
    REQUIRE(reasons.size() == 1);
    if (bad.rfind("999", 0) == 0) CHECK(reasons[0].find("ahead") != std::string::npos);
    auto id = a.raise_raw("t", nlohmann::json::object(), raise_mode::globally);
    b.poll_once();
    CHECK(ib.snapshot() == std::vector<std::int64_t>{id});
    CHECK(reasons.size() == 1);
  }
}

TEST_CASE("open errors: bad schema name, newer schema, unreachable server") {
  auto schema = pg::fresh_schema();
  auto url = pg::url_with_schema(schema);
  try {
    eventq::queue q(pg::url_with_schema("x;drop"), test_options("a"));
    FAIL("expected invalid_url");
  } catch (const eventq::error& e) {
    CHECK(e.code() == eventq::errc::invalid_url);
  }
  { eventq::queue q(url, test_options("a")); }
  pg::exec(schema, "INSERT INTO EventQueueSchema (Version, Description) VALUES (99, 'future')");
  try {
    eventq::queue q(url, test_options("a"));
    FAIL("expected schema_too_new");
  } catch (const eventq::error& e) {
    CHECK(e.code() == eventq::errc::schema_too_new);
    CHECK(std::string(e.what()).find("99") != std::string::npos);
    CHECK(std::string(e.what()).find("up to " + eventq::test::latest_schema_version_text()) !=
          std::string::npos);
  }
  try {
    eventq::queue q("postgresql://eventq:s3cret@127.0.0.1:1/none?schema=x", test_options("a"));
    FAIL("expected database_unavailable");
  } catch (const eventq::error& e) {
    CHECK(e.code() == eventq::errc::database_unavailable);
    CHECK(std::string(e.what()).find("s3cret") == std::string::npos);
  }
  // The keyword form with eventq_schema works too.
  auto c = pg::connect(schema);
  std::string kv = std::string("host=") + c->hostname() + " port=" + c->port() +
                   " user=" + c->username() + " dbname=" + c->dbname() +
                   " eventq_schema=" + pg::fresh_schema();
  eventq::queue q(kv, test_options("kv"));
  CHECK(q.raise_raw("t", nlohmann::json::object(), raise_mode::globally) > 0);
}

TEST_CASE("batch append: fields stay in their rows, unsigned rows store NULL, any bytes") {
  auto schema = pg::fresh_schema();
  auto url = pg::url_with_schema(schema);
  auto store = eventq::open_storage(url, test_options("s"));
  auto now = std::chrono::system_clock::now();
  auto row = [&](std::string type, std::string data, std::string key, std::string sig,
                 raise_mode mode) {
    return eventq::event_record{0,   std::move(type), std::move(data), "s", mode,
                                now, std::move(key),  std::move(sig)};
  };
  auto check_rows = [&](const std::vector<eventq::event_record>& rows) {
    auto ids = store->append(rows);
    REQUIRE(ids.size() == rows.size());
    CHECK(std::is_sorted(ids.begin(), ids.end()));
    auto c = pg::connect(schema);
    pqxx::nontransaction tx(*c);
    for (std::size_t i = 0; i < rows.size(); ++i) {
      CAPTURE(i);
      auto r = tx.exec_params(
          "SELECT EventType, InstanceData::text, RaiseLocally, RaiseGlobally, KeyId, Signature "
          "FROM EventQueue WHERE Id = $1",
          ids[i]);
      REQUIRE(r.size() == 1);
      CHECK(r[0][0].as<std::string>() == rows[i].type);
      CHECK(r[0][1].as<std::string>() == rows[i].data);
      CHECK(r[0][2].as<bool>() == (rows[i].mode != raise_mode::globally));
      CHECK(r[0][3].as<bool>() == (rows[i].mode != raise_mode::locally));
      CHECK(r[0][4].is_null() == rows[i].key_id.empty());
      CHECK(r[0][5].is_null() == rows[i].signature.empty());
      if (!rows[i].key_id.empty()) CHECK(r[0][4].as<std::string>() == rows[i].key_id);
      if (!rows[i].signature.empty()) CHECK(r[0][5].as<std::string>() == rows[i].signature);
    }
  };
  // The usual path: fields joined by a separator the server splits.
  check_rows({row("t.one", R"({"a":1,"s":"x,y \"q\" \\ {}"})", "", "", raise_mode::globally),
              row("t.two", R"({"b":[1,2]})", "k1", "abcd", raise_mode::locally),
              row("t.three", R"({})", "k2", "ef01", raise_mode::both)});
  // A field holding the separator itself (written by other means than the queue API, which
  // refuses control characters): the array-literal path, same result.
  check_rows({row(std::string("a\x1f") + "b", R"({"c":3})", "", "", raise_mode::globally),
              row("t.four", R"({"d":"\u001f"})", "k1", "0a0b", raise_mode::both)});
}

// Issue 12: the queues of a process share its connections whatever their schemas (and, through
// PgBouncer, share server connections with other processes): every statement names its schema,
// so no row and no cursor crosses, even with the same instance name in both.
TEST_CASE("two schemas on one connection: no row or cursor crosses between them") {
  const auto schema_a = pg::fresh_schema();
  const auto schema_b = pg::fresh_schema();
  const auto url_a = pg::url_with_schema(schema_a);
  const auto url_b = pg::url_with_schema(schema_b);
  inbox got_a, got_b, wrong;
  eventq::queue qa(url_a, test_options("same"));
  eventq::queue qb(url_b, test_options("same"));
  auto sa = qa.subscribe_raw("a", got_a.handler());
  auto sb = qb.subscribe_raw("b", got_b.handler());
  auto wa = qa.subscribe_raw("b", wrong.handler());
  auto wb = qb.subscribe_raw("a", wrong.handler());
  qa.start();
  qb.start();
  for (int i = 0; i < 50; ++i) {
    qa.raise_raw("a", {{"i", i}}, raise_mode::both);
    qb.raise_raw("b", {{"i", i}}, raise_mode::both);
  }
  REQUIRE(eventq::test::wait_until([&] { return got_a.size() == 50 && got_b.size() == 50; }, 20s));
  qa.stop();
  qb.stop();
  CHECK(wrong.size() == 0);
  CHECK(pg::text(schema_a, "SELECT string_agg(DISTINCT EventType, ',') FROM EventQueue") == "a");
  CHECK(pg::text(schema_b, "SELECT string_agg(DISTINCT EventType, ',') FROM EventQueue") == "b");
  // Each schema's cursor for "same" points into its own table: after it, nothing is left.
  for (const auto& s : {schema_a, schema_b}) {
    INFO("schema " << s);
    CHECK(pg::text(s,
                   "SELECT count(*) FROM EventQueue e, Properties p WHERE p.Key = "
                   "'EQStamp_same' AND NOT pg_visible_in_snapshot(e.Stamp, "
                   "eventq_cursor_snapshot(p.Value))") == "0");
  }
}
