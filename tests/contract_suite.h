// The contract every storage backend must pass, run through the public queue API.
// A backend's test file provides a fixture and calls run_contract_suite() from a TEST_CASE.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <set>
#include <thread>

#include <unistd.h>

#include "support.h"

namespace contract {

struct page_changed {
  static constexpr std::string_view event_type = "page.changed";
  int page = 0;
  std::string by;
};
inline void to_json(nlohmann::json& j, const page_changed& e) {
  j = nlohmann::json{{"page", e.page}, {"by", e.by}};
}
inline void from_json(const nlohmann::json& j, page_changed& e) {
  j.at("page").get_to(e.page);
  j.at("by").get_to(e.by);
}

/// What a backend's test supplies.
struct backend_fixture {
  virtual ~backend_fixture() = default;
  /// A URL to a new, empty database (or schema) nobody else uses.
  virtual std::string fresh_url() = 0;
  /// Runs raw SQL against the database at `url`, bypassing the library.
  virtual void exec(const std::string& url, const std::string& sql) = 0;
};

/// Collects what a queue delivers.
struct inbox {
  std::mutex mutex;
  std::vector<std::pair<std::int64_t, nlohmann::json>> events;
  std::vector<eventq::event_record> rows;
  eventq::raw_handler handler() {
    return [this](const eventq::event_record& r, const nlohmann::json& j) {
      std::lock_guard lk(mutex);
      events.emplace_back(r.id, j);
      rows.push_back(r);
    };
  }
  std::size_t size() {
    std::lock_guard lk(mutex);
    return events.size();
  }
  std::vector<std::int64_t> ids() {
    std::lock_guard lk(mutex);
    std::vector<std::int64_t> out;
    for (auto& e : events) out.push_back(e.first);
    return out;
  }
};

inline void run_contract_suite(backend_fixture& f) {
  using namespace eventq;
  using eventq::test::test_options;
  const std::string url = f.fresh_url();

  SUBCASE("flags route events: globally to others, locally to the raiser, both to everyone") {
    queue a(url, test_options("a"));
    queue b(url, test_options("b"));
    inbox ia, ib;
    auto sa = a.subscribe_all(ia.handler());
    auto sb = b.subscribe_all(ib.handler());
    auto g = a.raise_raw("t", {{"k", "global"}}, raise_mode::globally);
    auto l = a.raise_raw("t", {{"k", "local"}}, raise_mode::locally);
    auto both = a.raise_raw("t", {{"k", "both"}}, raise_mode::both);
    CHECK(g < l);
    CHECK(l < both);
    CHECK(a.poll_once() == 2);
    CHECK(b.poll_once() == 2);
    CHECK(ia.ids() == std::vector<std::int64_t>{l, both});
    CHECK(ib.ids() == std::vector<std::int64_t>{g, both});
    CHECK(ib.rows.at(0).instance == "a");
    CHECK(ib.rows.at(0).mode == raise_mode::globally);
    CHECK(ib.rows.at(1).mode == raise_mode::both);
    CHECK(ia.rows.at(0).mode == raise_mode::locally);
    // Nothing is delivered twice in steady state.
    CHECK(a.poll_once() == 0);
    CHECK(b.poll_once() == 0);
    CHECK(ib.size() == 2);
  }

  SUBCASE("typed events round-trip with their row") {
    queue a(url, test_options("a"));
    queue b(url, test_options("b"));
    std::vector<page_changed> got;
    std::vector<event_record> rows;
    auto sub = b.subscribe<page_changed>([&](const page_changed& e, const event_record& r) {
      got.push_back(e);
      rows.push_back(r);
    });
    auto before = std::chrono::system_clock::now() - std::chrono::seconds(2);
    auto id = a.raise(page_changed{42, "alice"}, raise_mode::globally);
    CHECK(b.poll_once() == 1);
    REQUIRE(got.size() == 1);
    CHECK(got[0].page == 42);
    CHECK(got[0].by == "alice");
    CHECK(rows[0].id == id);
    CHECK(rows[0].type == "page.changed");
    CHECK(nlohmann::json::parse(rows[0].data) == nlohmann::json{{"page", 42}, {"by", "alice"}});
    CHECK(rows[0].created > before);
    CHECK(rows[0].created < std::chrono::system_clock::now() + std::chrono::seconds(2));
    CHECK(b.stats().delivered == 1);
    CHECK(a.stats().raised == 1);
  }

  SUBCASE("a batch is written in one go and delivered in order") {
    queue a(url, test_options("a"));
    queue b(url, test_options("b"));
    inbox ib;
    auto sub = b.subscribe_all(ib.handler());
    batch events;
    for (int i = 0; i < 250; ++i) events.add(page_changed{i, "a"}, raise_mode::globally);
    auto ids = a.raise(events);
    REQUIRE(ids.size() == 250);
    CHECK(std::is_sorted(ids.begin(), ids.end()));
    CHECK(b.poll_once() == 250);
    CHECK(ib.ids() == ids);
    // Each returned Id names the event at that position (backends write batches in chunks).
    std::lock_guard lk(ib.mutex);
    REQUIRE(ib.events.size() == 250);
    int misplaced = 0;
    for (int i = 0; i < 250; ++i) {
      if (ib.events[static_cast<std::size_t>(i)].second.value("page", -1) != i) ++misplaced;
    }
    CHECK(misplaced == 0);
    CHECK(a.raise(batch{}).empty());
  }

  SUBCASE("pages: a backlog larger than the page size arrives whole, in order, once") {
    queue a(url, test_options("a"));
    auto ob = test_options("b");
    ob.page_size = 64;
    queue b(url, ob);
    inbox ib;
    auto sub = b.subscribe_all(ib.handler());
    std::vector<std::int64_t> ids;
    for (int chunk = 0; chunk < 10; ++chunk) {
      batch events;
      for (int i = 0; i < 100; ++i)
        events.add(page_changed{chunk * 100 + i, "a"}, raise_mode::both);
      auto part = a.raise(events);
      ids.insert(ids.end(), part.begin(), part.end());
    }
    CHECK(b.poll_once() == 1000);
    CHECK(ib.ids() == ids);
  }

  SUBCASE("a backlog of exactly whole pages: the empty page after them is no Missed") {
    queue a(url, test_options("a"));
    auto ob = test_options("b");
    ob.page_size = 10;
    queue b(url, ob);
    inbox ib;
    auto sub = b.subscribe_all(ib.handler());
    batch events;
    for (int i = 0; i < 30; ++i) events.add(page_changed{i, "a"}, raise_mode::globally);
    auto ids = a.raise(events);
    CHECK(b.poll_once() == 30);  // three full pages, then an empty one
    CHECK(b.poll_once() == 0);
    auto next = a.raise_raw("t", {{"n", 1}}, raise_mode::globally);
    CHECK(b.poll_once() == 1);
    ids.push_back(next);
    CHECK(ib.ids() == ids);
    CHECK(b.stats().missed == 0);
  }

  SUBCASE("the cursor survives a restart; start position applies to new instances only") {
    std::int64_t first = 0, second = 0;
    {
      queue b(url, test_options("b"));  // registers b
      queue a(url, test_options("a"));
      first = a.raise_raw("t", {{"n", 1}}, raise_mode::globally);
      inbox ib;
      auto sub = b.subscribe_all(ib.handler());
      CHECK(b.poll_once() == 1);
      second = a.raise_raw("t", {{"n", 2}}, raise_mode::globally);
    }  // b closes before seeing `second`
    queue b(url, test_options("b"));
    inbox ib;
    auto sub = b.subscribe_all(ib.handler());
    CHECK(b.poll_once() == 1);
    CHECK(ib.ids() == std::vector<std::int64_t>{second});

    queue c(url, test_options("c"));  // new, start now: sees nothing old
    inbox ic;
    auto sc = c.subscribe_all(ic.handler());
    CHECK(c.poll_once() == 0);

    auto od = test_options("d");
    od.start = start_position::oldest;
    queue d(url, od);
    inbox id;
    auto sd = d.subscribe_all(id.handler());
    CHECK(d.poll_once() == 2);
    CHECK(id.ids() == std::vector<std::int64_t>{first, second});
  }

  SUBCASE("an instance registered at open sees events raised before its first poll") {
    queue b(url, test_options("b"));
    queue a(url, test_options("a"));
    auto id = a.raise_raw("t", {{"n", 1}}, raise_mode::globally);
    inbox ib;
    auto sub = b.subscribe_all(ib.handler());
    CHECK(b.poll_once() == 1);
    CHECK(ib.ids() == std::vector<std::int64_t>{id});
  }

  SUBCASE("a handler that throws is counted and the queue goes on") {
    eventq::test::log_capture logs;
    queue a(url, test_options("a"));
    queue b(url, test_options("b", &logs));
    inbox ib;
    auto bad = b.subscribe_raw("t", [](const event_record&, const nlohmann::json& j) {
      if (j.at("n") == 1) throw std::runtime_error("boom");
    });
    auto good = b.subscribe_all(ib.handler());
    auto id1 = a.raise_raw("t", {{"n", 1}}, raise_mode::globally);
    auto id2 = a.raise_raw("t", {{"n", 2}}, raise_mode::globally);
    b.poll_once();
    CHECK(b.stats().handler_errors == 1);
    CHECK(ib.ids() == std::vector<std::int64_t>{id1, id2});
    CHECK(logs.contains("event " + std::to_string(id1)));
    CHECK(logs.contains("boom"));
  }

  SUBCASE("a payload that does not decode into the type is counted and skipped") {
    queue a(url, test_options("a"));
    queue b(url, test_options("b"));
    std::vector<int> pages;
    auto sub = b.subscribe<page_changed>([&](const page_changed& e) { pages.push_back(e.page); });
    a.raise_raw("page.changed", {{"wrong", true}}, raise_mode::globally);
    a.raise(page_changed{7, "a"}, raise_mode::globally);
    b.poll_once();
    CHECK(pages == std::vector<int>{7});
    CHECK(b.stats().undecodable == 1);
    CHECK(b.stats().handler_errors == 0);
  }

  SUBCASE("a type nobody subscribed to is counted") {
    queue a(url, test_options("a"));
    queue b(url, test_options("b"));
    inbox ib;
    auto sub = b.subscribe_raw("known", ib.handler());
    a.raise_raw("unknown", nlohmann::json::object(), raise_mode::globally);
    auto id = a.raise_raw("known", nlohmann::json::object(), raise_mode::globally);
    b.poll_once();
    // b's only subscriber names its type, so the poll asks the database for "known" alone
    // (issue 13). SQLite counts the row it left out; PostgreSQL neither reads nor counts it.
    CHECK(b.stats().unknown_types == (url.rfind("sqlite:", 0) == 0 ? 1u : 0u));
    CHECK(ib.ids() == std::vector<std::int64_t>{id});
    // With a subscriber for every type the row is read, and counted on every backend when no
    // handler takes it: here a session listener whose template matches nothing.
    session_config cfg;
    cfg.threads = 0;
    auto s = b.create_session(cfg);
    event_filter never;
    never.match = {{"never", true}};
    auto reg = s.add_listener(never, [](std::span<const event_record>) {});
    a.raise_raw("unknown", nlohmann::json::object(), raise_mode::globally);
    b.poll_once();
    CHECK(b.stats().unknown_types == (url.rfind("sqlite:", 0) == 0 ? 2u : 1u));
  }

  SUBCASE("cleanup that empties the table never makes the next event invisible") {
    queue a(url, test_options("a"));
    queue b(url, test_options("b"));
    inbox ib;
    auto sub = b.subscribe_all(ib.handler());
    std::int64_t last = 0;
    for (int i = 0; i < 5; ++i) last = a.raise_raw("t", {{"n", i}}, raise_mode::globally);
    CHECK(b.poll_once() == 5);
    a.poll_once();  // cleanup keeps what a live instance has not read
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // Created has ms precision
    CHECK(a.cleanup(std::chrono::seconds(0)) == 5);
    CHECK(a.stats().cleanup_deleted == 5);
    auto next = a.raise_raw("t", {{"n", 99}}, raise_mode::globally);
    CHECK(next > last);  // ids are never reused
    CHECK(b.poll_once() == 1);
    CHECK(ib.ids().back() == next);
    CHECK(b.stats().missed == 0);
  }

  SUBCASE("cleanup keeps rows younger than the retention") {
    auto oa = test_options("a");
    oa.cleanup_batch_size = 3;
    queue a(url, oa);
    for (int i = 0; i < 10; ++i) a.raise_raw("t", {{"n", i}}, raise_mode::globally);
    a.poll_once();  // cleanup keeps what a live instance has not read
    CHECK(a.cleanup(std::chrono::hours(1)) == 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // Created has ms precision
    CHECK(a.cleanup(std::chrono::seconds(0)) == 10);            // several batches of 3
    CHECK(a.cleanup() == 0);
  }

  SUBCASE("rows deleted behind a cursor raise Missed once, then delivery continues") {
    queue a(url, test_options("a"));
    std::int64_t later = 0;
    { queue b(url, test_options("b")); }
    for (int i = 0; i < 3; ++i) a.raise_raw("t", {{"n", i}}, raise_mode::globally);
    f.exec(url, "DELETE FROM EventQueue");
    later = a.raise_raw("t", {{"n", 3}}, raise_mode::globally);
    queue b(url, test_options("b"));
    std::vector<std::string> reasons;
    auto m = b.on_missed([&](const missed_info& info) { reasons.push_back(info.reason); });
    inbox ib;
    auto sub = b.subscribe_all(ib.handler());
    b.poll_once();
    REQUIRE(reasons.size() == 1);
    CHECK(reasons[0].find("deleted") != std::string::npos);
    CHECK(ib.ids() == std::vector<std::int64_t>{later});
    b.poll_once();
    CHECK(reasons.size() == 1);
    CHECK(b.stats().missed == 1);
  }

  SUBCASE("a garbage cursor in Properties raises Missed and the instance recovers") {
    { queue b(url, test_options("b")); }
    f.exec(url,
           "UPDATE Properties SET Value = 'garbage; DROP TABLE EventQueue' "
           "WHERE Key = 'EQStamp_b'");
    queue a(url, test_options("a"));
    queue b(url, test_options("b"));
    int missed = 0;
    auto m = b.on_missed([&](const missed_info&) { ++missed; });
    inbox ib;
    auto sub = b.subscribe_all(ib.handler());
    b.poll_once();
    CHECK(missed == 1);
    auto id = a.raise_raw("t", nlohmann::json::object(), raise_mode::globally);
    b.poll_once();
    CHECK(ib.ids() == std::vector<std::int64_t>{id});
    CHECK(missed == 1);
  }

  SUBCASE("an unsubscribed handler gets nothing more; a handle may outlive its queue") {
    subscription outliving;
    {
      queue a(url, test_options("a"));
      queue b(url, test_options("b"));
      inbox ib;
      auto sub = b.subscribe_all(ib.handler());
      CHECK(sub.active());
      a.raise_raw("t", nlohmann::json::object(), raise_mode::globally);
      b.poll_once();
      sub.reset();
      CHECK_FALSE(sub.active());
      a.raise_raw("t", nlohmann::json::object(), raise_mode::globally);
      b.poll_once();
      CHECK(ib.size() == 1);
      outliving = b.subscribe_all([](const event_record&, const nlohmann::json&) {});
      CHECK(outliving.active());
    }
    CHECK_FALSE(outliving.active());
    outliving.reset();
  }

  SUBCASE("the background poller delivers promptly after a raise in the same process") {
    auto ob = test_options("b");
    ob.poll_interval = std::chrono::seconds(5);
    queue b(url, ob);
    queue a(url, test_options("a"));
    inbox ib;
    auto sub = b.subscribe_all(ib.handler());
    b.start();
    CHECK(b.running());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    auto t0 = std::chrono::steady_clock::now();
    a.raise_raw("t", nlohmann::json::object(), raise_mode::globally);
    CHECK(eventq::test::wait_until([&] { return ib.size() == 1; }, std::chrono::seconds(3)));
    auto took = std::chrono::steady_clock::now() - t0;
    CHECK(took < std::chrono::milliseconds(500));
    b.stop();
    CHECK_FALSE(b.running());
    b.stop();  // idempotent
  }

  SUBCASE("a second live instance under a name is refused clearly; closing frees the name") {
    auto first = std::make_unique<queue>(url, test_options("web-01"));
    try {
      queue second(url, test_options("web-01"));
      FAIL("expected instance_name_in_use");
    } catch (const eventq::error& e) {
      CHECK(e.code() == errc::instance_name_in_use);
      std::string msg = e.what();
      CHECK(msg.find("'web-01'") != std::string::npos);
      CHECK(msg.find("pid " + std::to_string(getpid())) != std::string::npos);
      CHECK(msg.find("options::instance_name") != std::string::npos);
    }
    auto before = first->backend().instances();
    REQUIRE(before.size() == 1);
    CHECK(before[0].live);
    CHECK(before[0].cursor.has_value());
    first.reset();
    {
      queue other(url, test_options("unrelated"));
      auto after = other.backend().instances();  // by name
      REQUIRE(after.size() == 2);
      CHECK(after[1].name == "web-01");
      CHECK_FALSE(after[1].live);
      CHECK(after[0].live);
    }
    queue again(url, test_options("web-01"));
    CHECK(again.backend().instances().size() == 2);
  }

  SUBCASE("a cursor is stored only by the token that holds the name (the lease fence)") {
    auto s = eventq::open_storage(url, test_options("tools"));
    const eventq::instance_registration first{"fenced", "h", 1, "v", "token-1"};
    s->register_instance(first, std::chrono::milliseconds(1));
    const auto head = s->head_cursor();
    CHECK(s->store_cursor_fenced("fenced", "token-1", head));
    CHECK(s->load_cursor("fenced") == head);
    CHECK_FALSE(s->store_cursor_fenced("fenced", "token-2", "1"));
    CHECK_FALSE(s->store_cursor_fenced("unregistered", "token-1", "1"));
    CHECK(s->load_cursor("fenced") == head);
    CHECK_FALSE(s->load_cursor("unregistered"));
    // The lease (1 ms) expired: another process takes the name, and with it the cursor.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    s->register_instance({"fenced", "h", 2, "v", "token-2"}, std::chrono::seconds(30));
    CHECK_FALSE(s->store_cursor_fenced("fenced", "token-1", "1"));
    CHECK(s->load_cursor("fenced") == head);
    CHECK(s->store_cursor_fenced("fenced", "token-2", "cursor-2"));  // opaque to the storage
    CHECK(s->load_cursor("fenced") == std::optional<std::string>("cursor-2"));
  }

  SUBCASE("the lease is renewed while a handler is slow") {
    auto o = test_options("slow");
    o.lease = std::chrono::milliseconds(600);
    queue a(url, test_options("a"));
    queue slow(url, o);
    std::atomic<bool> in_handler{false}, release{false};
    auto sub = slow.subscribe_all([&](const event_record&, const nlohmann::json&) {
      in_handler = true;
      while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    });
    slow.start();
    a.raise_raw("t", nlohmann::json::object(), raise_mode::globally);
    REQUIRE(eventq::test::wait_until([&] { return in_handler.load(); }));
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // 2.5 leases
    CHECK_THROWS_AS(queue(url, test_options("slow")), eventq::error);
    CHECK(slow.stats().lease_renewals >= 3);
    CHECK(slow.stats().lease_renewal_failures == 0);
    release = true;
    slow.stop();
  }

  SUBCASE("cleanup keeps rows a live instance has not processed yet") {
    queue a(url, test_options("a"));
    queue b(url, test_options("b"));
    inbox ib;
    auto sub = b.subscribe_all(ib.handler());
    for (int i = 0; i < 3; ++i) a.raise_raw("t", {{"n", i}}, raise_mode::globally);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // Created has ms precision
    CHECK(a.cleanup(std::chrono::seconds(0)) == 0);             // neither a nor b has read them
    CHECK(b.poll_once() == 3);
    CHECK(a.cleanup(std::chrono::seconds(0)) == 0);  // a reads every row too, even not for it
    CHECK(a.poll_once() == 0);
    CHECK(a.cleanup(std::chrono::seconds(0)) == 3);
    CHECK(b.stats().missed == 0);
    CHECK(a.stats().missed == 0);
  }

  SUBCASE("an instance stopped through a cleanup gets Missed once on restart, then events") {
    queue a(url, test_options("a"));
    { queue b(url, test_options("b")); }  // b ran once, then stopped: its lease is released
    for (int i = 0; i < 3; ++i) a.raise_raw("t", {{"n", i}}, raise_mode::globally);
    a.poll_once();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // Created has ms precision
    CHECK(a.cleanup(std::chrono::seconds(0)) == 3);  // b is not live: nothing protects them
    queue b(url, test_options("b"));
    std::vector<std::string> reasons;
    auto m = b.on_missed([&](const missed_info& info) { reasons.push_back(info.reason); });
    inbox ib;
    auto sub = b.subscribe_all(ib.handler());
    b.poll_once();
    REQUIRE(reasons.size() == 1);
    CHECK(reasons[0].find("deleted before") != std::string::npos);
    auto later = a.raise_raw("t", {{"n", 4}}, raise_mode::globally);
    b.poll_once();
    CHECK(ib.ids() == std::vector<std::int64_t>{later});
    CHECK(reasons.size() == 1);
    CHECK(b.stats().missed == 1);
  }

  SUBCASE("bad input at the call: oversized payload, non-object payload, bad names") {
    auto oa = test_options("a");
    oa.max_payload_bytes = 1024;
    queue a(url, oa);
    queue b(url, test_options("b"));
    inbox ib;
    auto sub = b.subscribe_all(ib.handler());
    std::string big(2000, 'x');
    try {
      a.raise_raw("t", {{"blob", big}}, raise_mode::globally);
      FAIL("expected payload_too_large");
    } catch (const eventq::error& e) {
      CHECK(e.code() == errc::payload_too_large);
      CHECK(std::string(e.what()).find("1024") != std::string::npos);
    }
    batch mixed;
    mixed.add_raw("t", {{"ok", 1}}, raise_mode::globally);
    mixed.add_raw("t", {{"blob", big}}, raise_mode::globally);
    CHECK_THROWS_AS(a.raise(mixed), eventq::error);  // all or nothing
    CHECK_THROWS_AS(a.raise_raw("t", nlohmann::json::array({1, 2}), raise_mode::globally),
                    eventq::error);
    CHECK_THROWS_AS(a.raise_raw("", nlohmann::json::object(), raise_mode::globally), eventq::error);
    CHECK(b.poll_once() == 0);
    CHECK(ib.size() == 0);
  }
}

}  // namespace contract
