// Event sessions through the public queue API, run on every backend (see contract_suite.h):
// batches by size and time, order, coalescing, templates, backpressure, failures, and the
// stored cursor that waits for unfinished work.
#pragma once

#include <doctest/doctest.h>

#include <atomic>
#include <set>
#include <thread>

#include "contract_suite.h"
#include "support.h"

namespace contract {

/// Records the batches a listener got, thread-safe.
struct batch_log {
  std::mutex mutex;
  std::vector<std::vector<std::int64_t>> batches;
  std::vector<std::chrono::steady_clock::time_point> times;
  eventq::batch_listener listener() {
    return [this](std::span<const eventq::event_record> b) {
      std::vector<std::int64_t> ids;
      for (const auto& r : b) ids.push_back(r.id);
      std::lock_guard lk(mutex);
      batches.push_back(std::move(ids));
      times.push_back(std::chrono::steady_clock::now());
    };
  }
  std::vector<std::int64_t> ids() {
    std::lock_guard lk(mutex);
    std::vector<std::int64_t> out;
    for (const auto& b : batches) out.insert(out.end(), b.begin(), b.end());
    return out;
  }
  std::vector<std::size_t> sizes() {
    std::lock_guard lk(mutex);
    std::vector<std::size_t> out;
    for (const auto& b : batches) out.push_back(b.size());
    return out;
  }
};

/// Rows after the stored cursor of `name` (eventq's own lag figure, EventQueueLag.Behind).
inline std::int64_t behind(eventq::queue& q, const std::string& name) {
  for (const auto& i : q.backend().instances()) {
    if (i.name == name) return i.behind.value_or(-1);
  }
  return -1;
}

inline void raise_ticks(eventq::queue& q, int n, const std::string& type = "tick") {
  eventq::batch b;
  for (int i = 0; i < n; ++i) b.add_raw(type, {{"n", i}}, eventq::raise_mode::globally);
  q.raise(b);
}

inline void run_session_contract(backend_fixture& f) {
  using namespace eventq;
  using namespace std::chrono_literals;
  using eventq::test::test_options;
  using eventq::test::wait_until;
  const std::string url = f.fresh_url();

  SUBCASE("batches are cut by size, the rest by time; the cursor waits for the rest") {
    queue q(url, test_options("r"));
    queue raiser(url, test_options("w"));
    session_config cfg;
    cfg.batch_size = 10;
    cfg.batch_time = 700ms;
    auto s = q.create_session(cfg);
    batch_log log;
    auto reg = s.add_listener({}, log.listener());
    q.start();
    auto t0 = std::chrono::steady_clock::now();
    raise_ticks(raiser, 25);
    REQUIRE(wait_until([&] { return log.ids().size() >= 20; }, 5s));
    CHECK(log.sizes() == std::vector<std::size_t>{10, 10});
    // The 5 wait for batch_time: the stored cursor must not pass them.
    CHECK(behind(q, "r") >= 5);
    REQUIRE(wait_until([&] { return log.ids().size() == 25; }, 5s));
    CHECK(log.sizes() == std::vector<std::size_t>{10, 10, 5});
    CHECK(log.times.back() - t0 >= 600ms);
    REQUIRE(wait_until([&] { return behind(q, "r") == 0; }, 5s));
    auto m = s.stats();
    CHECK(m.batches == 3);
    CHECK(m.delivered == 25);
    CHECK(m.pending == 0);
  }

  SUBCASE("within a session each listener gets every event in row order") {
    queue q(url, test_options("r"));
    queue raiser(url, test_options("w"));
    session_config cfg;
    cfg.threads = 3;
    cfg.batch_size = 7;
    auto s = q.create_session(cfg);
    batch_log a, b;
    auto ra = s.add_listener({}, a.listener());
    auto rb = s.add_listener({}, b.listener());
    q.start();
    for (int i = 0; i < 6; ++i) raise_ticks(raiser, 50);
    REQUIRE(wait_until([&] { return a.ids().size() == 300 && b.ids().size() == 300; }, 10s));
    for (auto* l : {&a, &b}) {
      auto ids = l->ids();
      CHECK(std::is_sorted(ids.begin(), ids.end()));
      CHECK(std::set<std::int64_t>(ids.begin(), ids.end()).size() == 300);
      for (auto n : l->sizes()) CHECK(n <= 7);
    }
  }

  SUBCASE("coalescing delivers equal events of a batch once, the latest") {
    queue q(url, test_options("r"));
    queue raiser(url, test_options("w"));
    session_config cfg;
    cfg.batch_size = 12;
    cfg.batch_time = 2s;
    cfg.coalesce = true;
    auto s = q.create_session(cfg);
    batch_log log;
    auto reg = s.add_listener({}, log.listener());
    q.start();
    eventq::batch b;
    for (int i = 0; i < 12; ++i) b.add_raw("cache.drop", {{"key", i % 3}}, raise_mode::globally);
    auto ids = raiser.raise(b);
    REQUIRE(wait_until([&] { return !log.sizes().empty(); }, 5s));
    CHECK(log.ids() == std::vector<std::int64_t>{ids[9], ids[10], ids[11]});
    CHECK(s.stats().coalesced == 9);
  }

  SUBCASE("templates: type names, prefixes, payload containment, typed listeners") {
    queue q(url, test_options("r"));
    queue raiser(url, test_options("w"));
    auto s = q.create_session();
    batch_log named, prefixed, web;
    event_filter nf;
    nf.types = {"page.changed"};
    event_filter pf;
    pf.types = {"media.*"};
    event_filter wf;
    wf.types = {"page.changed", "media.*"};
    wf.match = {{"site", "web"}};
    auto r1 = s.add_listener(nf, named.listener());
    auto r2 = s.add_listener(pf, prefixed.listener());
    auto r3 = s.add_listener(wf, web.listener());
    std::mutex m;
    std::vector<int> pages;
    auto r4 = s.add_listener<page_changed>({{"by", "ann"}}, [&](std::span<const page_changed> b) {
      std::lock_guard lk(m);
      for (const auto& p : b) pages.push_back(p.page);
    });
    q.start();
    auto p1 = raiser.raise_raw("page.changed", {{"page", 1}, {"by", "ann"}, {"site", "web"}},
                               raise_mode::globally);
    auto p2 = raiser.raise_raw("page.changed", {{"page", 2}, {"by", "bob"}, {"site", "intra"}},
                               raise_mode::globally);
    auto m1 = raiser.raise_raw("media.image.resized", {{"site", "web"}}, raise_mode::globally);
    raiser.raise_raw("media", {{"site", "web"}}, raise_mode::globally);
    raiser.raise_raw("user.created", {{"site", "web"}}, raise_mode::globally);
    auto last = raiser.raise_raw("page.changed", {{"page", 3}, {"by", "ann"}, {"site", "intra"}},
                                 raise_mode::globally);
    REQUIRE(wait_until([&] { return behind(q, "r") == 0; }, 5s));
    REQUIRE(s.drain(5s));
    CHECK(named.ids() == std::vector<std::int64_t>{p1, p2, last});
    CHECK(prefixed.ids() == std::vector<std::int64_t>{m1});
    CHECK(web.ids() == std::vector<std::int64_t>{p1, m1});
    std::lock_guard lk(m);
    CHECK(pages == std::vector<int>{1, 3});
  }

  SUBCASE("a full buffer makes the poller wait, and nothing is lost") {
    queue q(url, test_options("r"));
    queue raiser(url, test_options("w"));
    session_config cfg;
    cfg.max_pending = 5;
    auto s = q.create_session(cfg);
    batch_log log;
    auto reg = s.add_listener({}, [&](std::span<const event_record> b) {
      std::this_thread::sleep_for(2ms);
      log.listener()(b);
    });
    q.start();
    raise_ticks(raiser, 200);
    REQUIRE(wait_until([&] { return log.ids().size() >= 200; }, 20s));
    REQUIRE(wait_until([&] { return behind(q, "r") == 0; }, 5s));
    auto ids = log.ids();
    CHECK(std::set<std::int64_t>(ids.begin(), ids.end()).size() == 200);
    CHECK(s.stats().backpressure_waits >= 1);
  }

  SUBCASE("a listener that keeps throwing: retried, recorded in EventQueueFailures, passed") {
    eventq::test::log_capture logs;
    queue q(url, test_options("r", &logs));
    queue raiser(url, test_options("w"));
    session_config cfg;
    cfg.name = "search";
    cfg.retries = 2;
    cfg.retry_backoff = 5ms;
    auto s = q.create_session(cfg);
    batch_log good;
    auto reg = s.add_listener({}, [&](std::span<const event_record> b) {
      if (b.front().type == "bad") throw std::runtime_error("index is read-only");
      good.listener()(b);
    });
    q.start();
    auto bad = raiser.raise_raw("bad", {{"n", 1}}, raise_mode::globally);
    auto ok = raiser.raise_raw("tick", {{"n", 2}}, raise_mode::globally);
    REQUIRE(wait_until([&] { return behind(q, "r") == 0; }, 5s));
    CHECK(good.ids() == std::vector<std::int64_t>{ok});
    auto failures = q.backend().failures(10, "r");
    REQUIRE(failures.size() == 1);
    CHECK(failures[0].event_id == bad);
    CHECK(failures[0].event_type == "bad");
    CHECK(failures[0].session == "search");
    CHECK(failures[0].instance == "r");
    CHECK(failures[0].attempts == 3);
    CHECK(failures[0].error == "index is read-only");
    CHECK(s.stats().retries == 2);
    CHECK(s.stats().failures == 1);
    CHECK(logs.count("recorded in EventQueueFailures") == 1);
    CHECK(q.backend().failures(10, "someone-else").empty());
  }

  SUBCASE("a slow session does not delay a fast one by more than a poll") {
    queue q(url, test_options("r"));
    queue raiser(url, test_options("w"));
    session_config slow_cfg;
    slow_cfg.batch_size = 1;
    auto slow = q.create_session(slow_cfg);
    std::atomic<int> slow_done{0};
    auto rs = slow.add_listener({}, [&](std::span<const event_record>) {
      std::this_thread::sleep_for(50ms);
      ++slow_done;
    });
    auto fast = q.create_session();
    std::mutex m;
    std::vector<std::chrono::milliseconds> lat;
    auto rf = fast.add_listener({}, [&](std::span<const event_record> b) {
      auto now = std::chrono::system_clock::now();
      std::lock_guard lk(m);
      for (const auto& r : b) {
        lat.push_back(std::chrono::duration_cast<std::chrono::milliseconds>(now - r.created));
      }
    });
    q.start();
    for (int i = 0; i < 20; ++i) {
      raise_ticks(raiser, 1);
      std::this_thread::sleep_for(10ms);
    }
    REQUIRE(wait_until(
        [&] {
          std::lock_guard lk(m);
          return lat.size() == 20;
        },
        5s));
    CHECK(slow_done < 20);  // the slow one is still behind...
    std::lock_guard lk(m);
    auto worst = *std::max_element(lat.begin(), lat.end());
    MESSAGE("worst raise-to-handler latency of the fast session: " << worst.count() << " ms");
    CHECK(worst <= q.config().poll_interval + 100ms);  // ...the fast one is not
  }

  SUBCASE("max_backlog: an instance down while 5,000 events were raised gets one Missed") {
    { queue register_first(url, test_options("r")); }
    {
      queue raiser(url, test_options("w"));
      raise_ticks(raiser, 5000);
    }
    auto o = test_options("r");
    o.max_backlog = 1000;
    queue q(url, o);
    std::vector<missed_info> missed;
    std::atomic<int> got{0};
    auto m = q.on_missed([&](const missed_info& i) { missed.push_back(i); });
    auto s = q.create_session();
    auto reg = s.add_listener(
        {}, [&](std::span<const event_record> b) { got += static_cast<int>(b.size()); });
    q.poll_once();
    REQUIRE(missed.size() == 1);
    CHECK(missed[0].reason.find("5000 events were pending") != std::string::npos);
    CHECK(missed[0].reason.find("max_backlog (1000)") != std::string::npos);
    CHECK(behind(q, "r") == 0);
    REQUIRE(s.drain(5s));
    CHECK(got == 0);
    CHECK(q.stats().missed == 1);
    // Later events flow as usual.
    {
      queue raiser(url, test_options("w"));
      raise_ticks(raiser, 10);
    }
    q.poll_once();
    REQUIRE(s.drain(5s));
    CHECK(got == 10);
    CHECK(missed.size() == 1);
  }

  SUBCASE("the default session runs its listeners on the poller thread, one event each") {
    queue q(url, test_options("r"));
    queue raiser(url, test_options("w"));
    std::thread::id sub_thread, session_thread;
    batch_log log;
    auto sub = q.subscribe_all([&](const event_record&, const nlohmann::json&) {
      sub_thread = std::this_thread::get_id();
    });
    std::optional<errc> reentry;
    auto reg = q.default_session().add_listener({}, [&](std::span<const event_record> b) {
      session_thread = std::this_thread::get_id();
      log.listener()(b);
      try {
        q.poll_once();  // would wait for the poll that runs this listener
      } catch (const error& e) {
        reentry = e.code();
      }
    });
    CHECK(q.default_session().name() == "default");
    raise_ticks(raiser, 3);
    q.poll_once();
    CHECK(log.sizes() == std::vector<std::size_t>{1, 1, 1});
    CHECK(session_thread == std::this_thread::get_id());
    CHECK(sub_thread == session_thread);
    CHECK(behind(q, "r") == 0);
    CHECK(reentry == errc::invalid_argument);  // refused, not a deadlock
  }
}

}  // namespace contract
