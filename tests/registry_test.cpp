// The EPiServer-style event API (eventq/registry.h) and eventq::guid. Built twice:
// registry_test (SQLite) and postgres_registry_test (PostgreSQL, EVENTQ_TEST_POSTGRES).
// tests/registry_peer.cpp is the site process of the multi-process test.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <barrier>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>
#include <unordered_set>

#include "support.h"
#ifdef EVENTQ_TEST_POSTGRES
#include "pg_support.h"
#endif

using namespace eventq;
using namespace eventq::test;
using namespace std::chrono_literals;

namespace {

#ifdef EVENTQ_TEST_POSTGRES
struct database {
  std::string schema = pg::fresh_schema();
  std::string url = pg::url_with_schema(schema);
  void exec(const std::string& sql) { pg::exec(schema, sql); }
  std::string text(const std::string& sql) { return pg::text(schema, sql); }
  std::int64_t rows() { return std::stoll(text("SELECT count(*) FROM EventQueue")); }
};
#else
struct database {
  temp_dir dir;
  std::string path = dir.file("e.db");
  std::string url = "sqlite:" + path;
  void exec(const std::string& sql) { sqlite_exec(path, sql); }
  std::string text(const std::string& sql) { return sqlite_text(path, sql); }
  std::int64_t rows() { return sqlite_int(path, "SELECT count(*) FROM EventQueue"); }
};
#endif

const auto k_raiser_id = guid::parse("F080ABD6-9BB0-4DC0-9D95-265472FA1CC6");
const auto k_event_id = guid::parse("888B5C89-9B0F-4E67-A3B0-6E660AB9A60F");
const auto k_other_event_id = guid::parse("{2F1E6C2B-3C5D-4E7F-8A9B-0C1D2E3F4A5B}");

// The seed's custom event argument.
struct my_event_data {
  std::string message;
  int my_number = 0;
  bool operator==(const my_event_data&) const = default;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(my_event_data, message, my_number)

// A parameter type whose to_json fails, as nlohmann reports it.
struct unencodable {};
void to_json(nlohmann::json&, const unencodable&) {
  throw nlohmann::json::type_error::create(302, "this parameter cannot be encoded", nullptr);
}

// Notifications received by a handler, for checking from the test thread.
struct inbox {
  std::mutex mutex;
  std::vector<event_notification> got;
  notification_handler handler() {
    return [this](const event_notification& n) {
      std::lock_guard lk(mutex);
      got.push_back(n);
    };
  }
  std::vector<event_notification> snapshot() {
    std::lock_guard lk(mutex);
    return got;
  }
  std::size_t size() { return snapshot().size(); }
};

std::vector<std::string> lines_of_file(const std::string& path) {
  std::vector<std::string> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

bool has_line(const std::string& path, const std::string& line) {
  auto lines = lines_of_file(path);
  return std::find(lines.begin(), lines.end(), line) != lines.end();
}

}  // namespace

#ifndef EVENTQ_TEST_POSTGRES
TEST_CASE("guid: parse with or without braces in any case, format canonical, compare, hash") {
  const std::string canonical = "888b5c89-9b0f-4e67-a3b0-6e660ab9a60f";
  for (const std::string text :
       {"888B5C89-9B0F-4E67-A3B0-6E660AB9A60F", "888b5c89-9b0f-4e67-a3b0-6e660ab9a60f",
        "{888B5C89-9b0f-4E67-a3B0-6E660AB9A60F}", "{888b5c89-9b0f-4e67-a3b0-6e660ab9a60f}"}) {
    INFO(text);
    auto g = guid::parse(text);
    CHECK(g.to_string() == canonical);
    CHECK(g == k_event_id);
  }
  CHECK(k_event_id.bytes()[0] == 0x88);
  CHECK(k_event_id.bytes()[15] == 0x0f);
  CHECK(guid().is_nil());
  CHECK(guid().to_string() == "00000000-0000-0000-0000-000000000000");
  CHECK(guid::parse("00000000-0000-0000-0000-000000000001") > guid());
  CHECK(k_raiser_id > k_event_id);  // byte order is the order of the texts
  CHECK(k_raiser_id != k_event_id);
  std::unordered_set<guid> set{k_event_id, guid::parse(canonical), k_raiser_id};
  CHECK(set.size() == 2);
  CHECK(std::hash<guid>{}(k_event_id) == std::hash<guid>{}(guid::parse(canonical)));
  nlohmann::json j = k_event_id;
  CHECK(j == canonical);
  CHECK(j.get<guid>() == k_event_id);
}

TEST_CASE("guid: anything else is an invalid_argument naming the text") {
  for (const std::string& bad : std::vector<std::string>{
           "", "888b5c89-9b0f-4e67-a3b0-6e660ab9a60", "888b5c89-9b0f-4e67-a3b0-6e660ab9a60f0",
           "888b5c899b0f4e67a3b06e660ab9a60f", "888b5c89-9b0f-4e67-a3b06e660ab9a60f-",
           "888b5c89_9b0f-4e67-a3b0-6e660ab9a60f", "888b5c8-99b0f-4e67-a3b0-6e660ab9a60f",
           "g88b5c89-9b0f-4e67-a3b0-6e660ab9a60f", " 888b5c89-9b0f-4e67-a3b0-6e660ab9a60f",
           "888b5c89-9b0f-4e67-a3b0-6e660ab9a60f\n", "{888b5c89-9b0f-4e67-a3b0-6e660ab9a60f",
           "(888b5c89-9b0f-4e67-a3b0-6e660ab9a60f)", "{888b5c89-9b0f-4e67-a3b0-6e660ab9a60f}}",
           "+88b5c89-9b0f-4e67-a3b0-6e660ab9a60f",
           std::string("888b5c89-9b0f-4e67-a3b0-6e660ab9a6\0f", 36)}) {
    INFO("'" << bad << "'");
    try {
      guid::parse(bad);
      FAIL("accepted");
    } catch (const error& e) {
      CHECK(e.code() == errc::invalid_argument);
      std::string what = e.what();
      CHECK(what.find("not a GUID") != std::string::npos);
      CHECK(what.find("8-4-4-4-12") != std::string::npos);
      if (bad.size() > 10 && bad.find('\0') == std::string::npos &&
          bad.find('\n') == std::string::npos) {
        CHECK(what.find(bad.substr(0, 10)) != std::string::npos);
      }
    }
  }
  CHECK_THROWS_AS(nlohmann::json("nope").get<guid>(), error);
  CHECK_THROWS_AS(nlohmann::json(42).get<guid>(), nlohmann::json::type_error);
}

TEST_CASE("guid::random: version 4, RFC 4122 variant, all different") {
  std::set<guid> seen;
  for (int i = 0; i < 1000; ++i) {
    auto g = guid::random();
    CHECK((g.bytes()[6] >> 4) == 4);
    CHECK((g.bytes()[8] & 0xc0) == 0x80);
    CHECK(g.to_string()[14] == '4');
    seen.insert(g);
  }
  CHECK(seen.size() == 1000);
}
#endif

TEST_CASE("seed 001's test: a page edited on site #2 is refreshed in site #1's cache") {
  database db;
  temp_dir dir;
  std::string pages = dir.path();
  {
    std::ofstream f(pages + "/42");
    f << "v1\n";
  }
  auto out1 = dir.file("site1.out"), out2 = dir.file("site2.out");
  // Each site has its own raiser id (see README, "EPiServer-style events").
  const std::string raiser1 = "0b8f7b6e-6a4f-4c59-9d1c-000000000001";
  const std::string raiser2 = "0b8f7b6e-6a4f-4c59-9d1c-000000000002";
  // 1. On site #1, navigate to the page (it is now in #1's cache).
  child_process site1({EVENTQ_REGISTRY_PEER, "view", db.url, "site-1", raiser1, pages, out1});
  REQUIRE(wait_until([&] { return has_line(out1, "render 42 v1"); }, 30s));
  // 2, 3. On site #2, edit the page and publish.
  child_process site2({EVENTQ_REGISTRY_PEER, "edit", db.url, "site-2", raiser2, pages, out2});
  REQUIRE(site2.wait(60s) == 0);
  // 4. On site #1, the page shows the new text.
  CHECK(wait_until([&] { return has_line(out1, "render 42 v2"); }, 30s));
  {
    queue q(db.url, test_options("operator"));
    event_registry registry(q);
    registry.get(guid::parse("5e0d5c8a-0000-4000-8000-00000000570f"))
        .raise(guid::random(), nullptr);
  }
  REQUIRE(site1.wait(60s) == 0);
  CHECK(lines_of_file(out1) ==
        std::vector<std::string>{"render 42 v1",
                                 "raised local=0 raiser=" + raiser2 + " param=42 invalidated",
                                 "render 42 v2", "done"});
  // #2 saw its own raise once, locally, and skipped it by raiser id.
  CHECK(lines_of_file(out2) ==
        std::vector<std::string>{"raised local=1 raiser=" + raiser2 + " param=42 skipped", "done"});
  // The row as an operator reads it: the GUID as EventType, raiser and param in the payload,
  // signed.
  CHECK(db.text("SELECT EventType FROM EventQueue WHERE InstanceName = 'site-2'") ==
        k_event_id.to_string());
  auto payload = nlohmann::json::parse(
      db.text("SELECT InstanceData FROM EventQueue WHERE InstanceName = 'site-2'"));
  CHECK(payload == nlohmann::json{{"param", 42}, {"raiser_id", raiser2}});
  CHECK(db.text("SELECT Signature FROM EventQueue WHERE InstanceName = 'site-2'").size() == 64);
}

TEST_CASE("raise: local handlers at once on the calling thread once durable; others once") {
  database db;
  queue a(db.url, test_options("a"));
  queue b(db.url, test_options("b"));
  event_registry ra(a), rb(b);
  inbox at_a, at_b;
  std::int64_t rows_when_notified = -1;
  std::thread::id thread_notified;
  auto sa = ra.get(k_event_id).on_raised(at_a.handler());
  auto check = ra.get(k_event_id).on_raised([&](const event_notification& n) {
    thread_notified = std::this_thread::get_id();
    rows_when_notified = std::stoll(
        db.text("SELECT count(*) FROM EventQueue WHERE Id = " + std::to_string(n.row_id)));
  });
  auto sb = rb.get(k_event_id).on_raised(at_b.handler());

  auto id = ra.get(k_event_id).raise(k_raiser_id, nlohmann::json("page 42"));
  CHECK(id > 0);
  REQUIRE(at_a.size() == 1);  // before raise() returned
  CHECK(thread_notified == std::this_thread::get_id());
  CHECK(rows_when_notified == 1);  // the row was durable when the handler ran
  auto n = at_a.snapshot()[0];
  CHECK(n.local);
  CHECK(n.event_id == k_event_id);
  CHECK(n.raiser_id == k_raiser_id);
  CHECK(n.param == "page 42");
  CHECK(n.row_id == id);
  CHECK(n.instance == "a");

  b.poll_once();
  REQUIRE(at_b.size() == 1);
  auto r = at_b.snapshot()[0];
  CHECK_FALSE(r.local);
  CHECK(r.raiser_id == k_raiser_id);  // the original raiser
  CHECK(r.param == "page 42");
  CHECK(r.row_id == id);
  CHECK(r.instance == "a");

  a.poll_once();  // the raiser reads the table too: its own row is not delivered again
  b.poll_once();
  CHECK(at_a.size() == 1);
  CHECK(at_b.size() == 1);
  CHECK(ra.stats().raised == 1);
  CHECK(ra.stats().received == 0);
  CHECK(rb.stats().received == 1);
}

TEST_CASE("typed parameters round-trip; one that does not decode reaches no handler, counted") {
  database db;
  log_capture logs;
  queue a(db.url, test_options("a"));
  queue b(db.url, test_options("b", &logs));
  event_registry ra(a), rb(b);
  std::vector<my_event_data> typed;
  std::vector<guid> raisers;
  auto s1 = rb.get(k_event_id)
                .on_raised<my_event_data>([&](const my_event_data& d, const event_notification& n) {
                  typed.push_back(d);
                  raisers.push_back(n.raiser_id);
                });
  inbox raw;
  auto s2 = rb.get(k_event_id).on_raised(raw.handler());

  my_event_data sent{"Hello", 42};
  ra.get(k_event_id).raise(k_raiser_id, sent);
  ra.get(k_event_id).raise(k_raiser_id, nlohmann::json("not my_event_data"));
  // A row with the event's GUID but not written by a registry: no raiser id.
  auto bare = a.raise_raw(k_event_id.to_string(), {{"param", 1}}, raise_mode::globally);
  b.poll_once();

  CHECK(typed == std::vector<my_event_data>{sent});
  CHECK(raisers == std::vector<guid>{k_raiser_id});
  CHECK(raw.size() == 2);  // the raw handler sees both registry rows, not the bare one
  CHECK(rb.stats().received == 2);
  CHECK(rb.stats().undecodable == 2);  // the param for the typed handler, and the bare row
  CHECK(b.stats().undecodable == 1);   // the bare row, counted by the queue as well
  CHECK(logs.contains("event " + std::to_string(bare)));
  CHECK(logs.contains("does not decode"));
  CHECK(rb.stats().handler_errors == 0);
}

TEST_CASE("over a session: rows arrive on its handler threads; a non-registry row is a failure") {
  database db;
  queue a(db.url, test_options("a"));
  queue b(db.url, test_options("b"));
  session_config cfg;
  cfg.threads = 2;
  cfg.retries = 0;
  auto s = b.create_session(cfg);
  event_registry ra(a), rb(b, s);
  std::mutex m;
  std::vector<std::string> params;
  std::set<std::thread::id> threads;
  auto sub = rb.get(k_event_id).on_raised([&](const event_notification& n) {
    std::lock_guard lk(m);
    params.push_back(n.param.dump());
    threads.insert(std::this_thread::get_id());
  });
  auto other = rb.get(k_other_event_id).on_raised([&](const event_notification&) {
    std::lock_guard lk(m);
    params.push_back("other");
  });
  ra.get(k_event_id).raise(k_raiser_id, 1);
  auto bare = a.raise_raw(k_event_id.to_string(), {{"param", 2}}, raise_mode::globally);
  ra.get(k_event_id).raise(k_raiser_id, 3);
  b.poll_once();
  REQUIRE(s.drain(10s));
  {
    std::lock_guard lk(m);
    CHECK(params == std::vector<std::string>{"1", "3"});    // in row order, the bare row not
    CHECK(threads.count(std::this_thread::get_id()) == 0);  // a handler thread, not poll_once's
  }
  CHECK(rb.stats().received == 2);
  CHECK(rb.stats().undecodable == 1);
  CHECK(s.stats().failures == 1);
  CHECK(wait_until([&] { return db.text("SELECT count(*) FROM EventQueueFailures") == "1"; }));
  CHECK(db.text("SELECT EventId FROM EventQueueFailures") == std::to_string(bare));
  // The local raise still notifies at once, on the raising thread, through the queue.
  rb.get(k_event_id).raise(k_raiser_id, 4);
  {
    std::lock_guard lk(m);
    CHECK(params.back() == "4");
  }
  CHECK(rb.stats().raised == 1);
}

TEST_CASE("two GUIDs: a subscriber of one never sees the other") {
  database db;
  queue a(db.url, test_options("a"));
  queue b(db.url, test_options("b"));
  event_registry ra(a), rb(b);
  inbox first_a, second_a, first_b, second_b;
  auto s1 = ra.get(k_event_id).on_raised(first_a.handler());
  auto s2 = ra.get(k_other_event_id).on_raised(second_a.handler());
  auto s3 = rb.get(k_event_id).on_raised(first_b.handler());
  auto s4 = rb.get(k_other_event_id).on_raised(second_b.handler());
  for (int i = 0; i < 3; ++i) ra.get(k_event_id).raise(k_raiser_id, i);
  ra.get(k_other_event_id).raise(k_raiser_id, "other");
  b.poll_once();
  CHECK(first_a.size() == 3);
  CHECK(second_a.size() == 1);
  REQUIRE(first_b.size() == 3);
  REQUIRE(second_b.size() == 1);
  for (auto& n : first_b.snapshot()) CHECK(n.event_id == k_event_id);
  CHECK(second_b.snapshot()[0].event_id == k_other_event_id);
  CHECK(second_b.snapshot()[0].param == "other");
  CHECK(first_b.snapshot()[2].param == 2);
}

TEST_CASE("get() from 8 threads at once returns one object, subscribed once") {
  database db;
  queue a(db.url, test_options("a"));
  queue b(db.url, test_options("b"));
  event_registry rb(b);
  std::vector<remote_event*> got(8);
  std::vector<subscription> subs(8);
  std::atomic<int> calls{0};
  for (int round = 0; round < 20; ++round) {
    auto id = guid::random();
    std::barrier start(8);
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&, t] {
        start.arrive_and_wait();
        got[t] = &rb.get(id);
        if (round == 0) subs[t] = got[t]->on_raised([&](const event_notification&) { ++calls; });
      });
    }
    for (auto& t : threads) t.join();
    for (auto* p : got) CHECK(p == got[0]);
    CHECK(got[0]->id() == id);
    if (round == 0) {
      event_registry ra(a);
      ra.get(id).raise(k_raiser_id, nullptr);
      b.poll_once();
      CHECK(calls == 8);  // 8 handlers, one row: one delivery each
      CHECK(rb.stats().received == 1);
    }
  }
}

TEST_CASE("Missed: rows deleted by hand while an instance is down reach every event's on_missed") {
  database db;
  queue a(db.url, test_options("a"));
  const std::vector<guid> ids{k_event_id, k_other_event_id, guid::random()};
  { queue b(db.url, test_options("b")); }  // b registered, then down
  event_registry ra(a);
  for (int i = 0; i < 5; ++i) ra.get(ids[static_cast<std::size_t>(i) % 3]).raise(k_raiser_id, i);
  db.exec("DELETE FROM EventQueue");

  queue b(db.url, test_options("b"));
  event_registry rb(b);
  std::vector<int> missed(3, 0);
  std::vector<subscription> subs;
  inbox raised;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    subs.push_back(rb.get(ids[i]).on_missed([&missed, i](const missed_info& info) {
      CHECK_FALSE(info.reason.empty());
      ++missed[i];
    }));
    subs.push_back(rb.get(ids[i]).on_raised(raised.handler()));
  }
  int second_handler = 0;
  auto extra = rb.get(ids[0]).on_missed([&](const missed_info&) { ++second_handler; });
  b.poll_once();
  CHECK(missed == std::vector<int>{1, 1, 1});
  CHECK(second_handler == 1);
  CHECK(raised.size() == 0);
  CHECK(rb.stats().missed == 1);
  // Then events flow again, and Missed is not repeated.
  ra.get(ids[1]).raise(k_raiser_id, "after");
  b.poll_once();
  REQUIRE(raised.size() == 1);
  CHECK(raised.snapshot()[0].param == "after");
  CHECK(missed == std::vector<int>{1, 1, 1});
}

TEST_CASE("remote_events = false: local subscribers notified, no row written, none read") {
  database db;
  queue a(db.url, test_options("a"));
  queue b(db.url, test_options("b"));
  registry_options local_only;
  local_only.remote_events = false;
  event_registry ra(a, local_only), rb(b);
  CHECK_FALSE(ra.config().remote_events);
  inbox at_a, at_b;
  auto sa = ra.get(k_event_id).on_raised(at_a.handler());
  auto sb = rb.get(k_event_id).on_raised(at_b.handler());
  auto before = db.rows();
  CHECK(ra.get(k_event_id).raise(k_raiser_id, "page 42") == 0);
  REQUIRE(at_a.size() == 1);
  CHECK(at_a.snapshot()[0].local);
  CHECK(at_a.snapshot()[0].row_id == 0);
  CHECK(at_a.snapshot()[0].param == "page 42");
  CHECK(db.rows() == before);
  b.poll_once();
  CHECK(at_b.size() == 0);
  // Nor does it read the others' rows: the events stay inside the process.
  rb.get(k_event_id).raise(k_raiser_id, "from b");
  a.poll_once();
  CHECK(at_a.size() == 1);
  CHECK(ra.stats().raised == 1);
}

TEST_CASE("bad input: clear errors at the call, nothing written, no handler called") {
  database db;
  for (bool remote : {true, false}) {
    INFO("remote_events " << remote);
    options o = test_options("a");
    o.max_payload_bytes = 1024;
    queue a(db.url, o);
    registry_options ro;
    ro.remote_events = remote;
    event_registry ra(a, ro);
    inbox at_a;
    auto s = ra.get(k_event_id).on_raised(at_a.handler());
    auto before = db.rows();
    auto expect = [&](auto&& call, errc code, const std::string& words) {
      try {
        call();
        FAIL("no error");
      } catch (const error& e) {
        CHECK(e.code() == code);
        CHECK(std::string(e.what()).find(words) != std::string::npos);
      }
    };
    expect([&] { guid::parse("888B5C89-9B0F-4E67-A3B0"); }, errc::invalid_argument, "not a GUID");
    expect([&] { ra.get(k_event_id).raise(k_raiser_id, std::string(2000, 'x')); },
           errc::payload_too_large, "limit is 1024");
    expect([&] { ra.get(k_event_id).raise(k_raiser_id, unencodable{}); }, errc::encode_failed,
           k_event_id.to_string());
    expect([&] { ra.get(k_event_id).raise(k_raiser_id, std::string("bad \xff UTF-8")); },
           errc::encode_failed, k_event_id.to_string());
    CHECK(db.rows() == before);
    CHECK(at_a.size() == 0);
    CHECK(ra.stats().raised == 0);
    // A parameter just under the limit passes.
    ra.get(k_event_id).raise(k_raiser_id, std::string(900, 'x'));
    CHECK(at_a.size() == 1);
  }
}

TEST_CASE("a handler that throws is logged and counted; the others run; raise() succeeds") {
  database db;
  log_capture logs;
  queue a(db.url, test_options("a", &logs));
  queue b(db.url, test_options("b"));
  event_registry ra(a), rb(b);
  auto bad = ra.get(k_event_id).on_raised([](const event_notification&) {
    throw std::runtime_error("cache offline");
  });
  inbox good;
  auto s = ra.get(k_event_id).on_raised(good.handler());
  auto bad_missed = ra.get(k_event_id).on_missed([](const missed_info&) { throw 7; });
  CHECK_NOTHROW(ra.get(k_event_id).raise(k_raiser_id, 1));
  CHECK(good.size() == 1);
  CHECK(ra.stats().handler_errors == 1);
  CHECK(logs.contains("cache offline"));
  inbox at_b;
  auto sb = rb.get(k_event_id).on_raised(at_b.handler());
  b.poll_once();
  CHECK(at_b.size() == 1);  // the row was written all the same
}

TEST_CASE("unsubscribing waits for a call running on another thread; from inside it does not") {
  database db;
  queue a(db.url, test_options("a"));
  event_registry ra(a);
  std::atomic<bool> entered{false}, release{false}, finished{false};
  auto slow = ra.get(k_event_id).on_raised([&](const event_notification&) {
    entered = true;
    while (!release) std::this_thread::sleep_for(1ms);
    finished = true;
  });
  std::thread raiser([&] { ra.get(k_event_id).raise(k_raiser_id, 1); });
  REQUIRE(wait_until([&] { return entered.load(); }));
  std::thread releaser([&] {
    std::this_thread::sleep_for(100ms);
    release = true;
  });
  slow.reset();
  CHECK(finished);  // reset() returned only after the running call
  raiser.join();
  releaser.join();
  CHECK_FALSE(slow.active());

  subscription self;
  int calls = 0;
  self = ra.get(k_event_id).on_raised([&](const event_notification&) {
    ++calls;
    self.reset();  // must not deadlock
  });
  ra.get(k_event_id).raise(k_raiser_id, 2);
  ra.get(k_event_id).raise(k_raiser_id, 3);
  CHECK(calls == 1);
}

#ifdef EVENTQ_CLI
namespace {

struct cli_result {
  int code = -1;
  std::string out, err;
};

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs the eventq command (seed 002's EPiServerRemoteEventsListener, send and listen modes).
cli_result eventq_cmd(const std::vector<std::string>& args) {
  temp_dir dir;
  std::string cmd = shell_quote(EVENTQ_CLI);
  for (const auto& a : args) {
    cmd += ' ';  // not " " + shell_quote(a): GCC 12 at -O2 warns (-Wrestrict) inside that operator+
    cmd += shell_quote(a);
  }
  cmd += " 2>" + dir.file("err");
  cli_result r;
  std::FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = read_file(dir.file("err"));
  return r;
}

}  // namespace

TEST_CASE("eventq raise --event-id sends a registry event; eventq tail shows its ids and param") {
  database db;
  queue b(db.url, test_options("site-1"));
  event_registry rb(b);
  inbox got;
  auto s = rb.get(k_event_id).on_raised(got.handler());
  auto r = eventq_cmd(
      {"--db", db.url, "raise", "--event-id", "{888B5C89-9B0F-4E67-A3B0-6E660AB9A60F}", "--raiser",
       "F080ABD6-9BB0-4DC0-9D95-265472FA1CC6", "--param", R"({"message":"Hello","my_number":42})"});
  INFO(r.err);
  REQUIRE(r.code == 0);
  b.poll_once();
  REQUIRE(got.size() == 1);
  auto n = got.snapshot()[0];
  CHECK_FALSE(n.local);
  CHECK(n.raiser_id == k_raiser_id);
  CHECK(n.param.get<my_event_data>() == my_event_data{"Hello", 42});

  // A plain event beside it is shown as before.
  CHECK(eventq_cmd({"--db", db.url, "raise", "--type", "page.changed", "--data", "{}"}).code == 0);
  auto t = eventq_cmd({"--db", db.url, "tail", "--from-start", "--count", "2"});
  REQUIRE(t.code == 0);
  std::istringstream lines(t.out);
  std::string first, second;
  std::getline(lines, first);
  std::getline(lines, second);
  CHECK(first.find(" event 888b5c89-9b0f-4e67-a3b0-6e660ab9a60f raiser "
                   "f080abd6-9bb0-4dc0-9d95-265472fa1cc6 param "
                   R"({"message":"Hello","my_number":42} from eventq-cli (globally))") !=
        std::string::npos);
  CHECK(second.find("page.changed from eventq-cli") != std::string::npos);
  auto j = eventq_cmd({"--db", db.url, "tail", "--from-start", "--count", "1", "--json"});
  REQUIRE(j.code == 0);
  auto row = nlohmann::json::parse(j.out);
  CHECK(row.at("event_id") == k_event_id.to_string());
  CHECK(row.at("raiser_id") == k_raiser_id.to_string());
  CHECK(row.at("param").at("my_number") == 42);
  CHECK(row.at("type") == k_event_id.to_string());

  // The parameter defaults to null; text must be JSON-quoted.
  CHECK(eventq_cmd({"--db", db.url, "raise", "--event-id", k_event_id.to_string(), "--raiser",
                    k_raiser_id.to_string()})
            .code == 0);
  b.poll_once();
  REQUIRE(got.size() == 2);
  CHECK(got.snapshot()[1].param.is_null());
}

TEST_CASE("eventq raise --event-id: bad GUIDs, bad JSON, mixed options are usage errors") {
  database db;
  { queue init(db.url, test_options("init")); }
  auto before = db.rows();
  const auto ev = k_event_id.to_string(), raiser = k_raiser_id.to_string();
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--event-id", "888B5C89-9B0F-4E67", "--raiser", raiser},
           {"--event-id", ev, "--raiser", "nobody"},
           {"--event-id", ev, "--raiser", raiser, "--param", "page 42"},
           {"--event-id", ev},
           {"--raiser", raiser, "--type", "t", "--data", "{}"},
           {"--event-id", ev, "--raiser", raiser, "--type", "t"},
           {"--param", "1"},
           {}}) {
    std::vector<std::string> cmd{"--db", db.url, "raise"};
    cmd.insert(cmd.end(), args.begin(), args.end());
    auto r = eventq_cmd(cmd);
    INFO(r.err);
    CHECK(r.code == 2);
    CHECK(r.err.rfind("eventq: ", 0) == 0);
  }
  auto r = eventq_cmd({"--db", db.url, "raise", "--event-id", "nope", "--raiser", raiser});
  CHECK(r.err.find("not a GUID: 'nope'") != std::string::npos);
  CHECK(db.rows() == before);
}
#endif
