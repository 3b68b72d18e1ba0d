// The session engine on its own: batches by size and time, order, coalescing, filters,
// backpressure, retries and failure records, and the "finished up to" watermark.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <atomic>
#include <thread>

#include "session_engine.h"
#include "support.h"

using namespace eventq;
using namespace eventq::detail;
using namespace std::chrono_literals;

namespace {

struct page_changed {
  static constexpr std::string_view event_type = "page.changed";
  std::string url;
};
void from_json(const nlohmann::json& j, page_changed& p) { j.at("url").get_to(p.url); }

struct fixture {
  std::mutex mutex;
  std::vector<failure_record> failures;
  test::log_capture logs;
  std::uint64_t next = 1;

  std::shared_ptr<session_engine> make(session_config cfg) {
    if (cfg.name.empty()) cfg.name = "test";
    validate_session_config(cfg);
    auto e = std::make_shared<session_engine>(cfg, logs.function(),
                                              [this](std::vector<failure_record> f) {
                                                std::lock_guard lk(mutex);
                                                for (auto& r : f) failures.push_back(std::move(r));
                                              });
    e->start_threads();
    return e;
  }

  delivered_ptr event(
      std::string type, nlohmann::json data,
      std::chrono::system_clock::time_point created = std::chrono::system_clock::now()) {
    auto d = std::make_shared<delivered_event>();
    d->position = next++;
    d->row.id = static_cast<std::int64_t>(d->position) * 10;
    d->row.type = std::move(type);
    d->row.data = data.dump();
    d->row.created = created;
    d->data = std::move(data);
    return d;
  }
  std::vector<delivered_ptr> events(int n, const std::string& type = "t") {
    std::vector<delivered_ptr> v;
    for (int i = 0; i < n; ++i) v.push_back(event(type, {{"n", i}}));
    return v;
  }
  // Offers `rows` as one page; returns false if it gave up (stopping).
  bool offer(
      session_engine& e, const std::vector<delivered_ptr>& rows,
      const std::function<bool()>& stopping = [] { return false; }) {
    std::vector<char> taken(rows.size(), 0);
    return e.consume(rows, rows.empty() ? next - 1 : rows.back()->position, stopping, taken);
  }
  std::size_t failure_count() {
    std::lock_guard lk(mutex);
    return failures.size();
  }
};

// Records the batches one listener got (sizes and ids), thread-safe.
struct recorder {
  std::mutex mutex;
  std::vector<std::vector<std::int64_t>> batches;
  batch_function fn() {
    return [this](const batch_input& in) {
      std::vector<std::int64_t> ids;
      for (const auto& r : in.rows) ids.push_back(r.id);
      std::lock_guard lk(mutex);
      batches.push_back(std::move(ids));
    };
  }
  std::size_t events() {
    std::lock_guard lk(mutex);
    std::size_t n = 0;
    for (const auto& b : batches) n += b.size();
    return n;
  }
  std::vector<std::vector<std::int64_t>> copy() {
    std::lock_guard lk(mutex);
    return batches;
  }
};

// A listener that blocks until released.
struct gate {
  std::mutex mutex;
  std::condition_variable cv;
  bool open = false;
  std::atomic<int> entered{0};
  void wait() {
    ++entered;
    std::unique_lock lk(mutex);
    cv.wait(lk, [this] { return open; });
  }
  void release() {
    {
      std::lock_guard lk(mutex);
      open = true;
    }
    cv.notify_all();
  }
};

}  // namespace

TEST_CASE("batches are cut by size, and the rest waits for batch_time") {
  fixture f;
  session_config cfg;
  cfg.batch_size = 10;
  cfg.batch_time = 300ms;
  auto e = f.make(cfg);
  recorder r;
  e->add_listener({}, r.fn());
  auto t0 = std::chrono::steady_clock::now();
  f.offer(*e, f.events(25));
  REQUIRE(test::wait_until([&] { return r.events() >= 20; }, 2s));
  CHECK(std::chrono::steady_clock::now() - t0 < 250ms);
  CHECK(r.events() == 20);
  CHECK(e->finished() == 20);  // the last 5 wait for batch_time: the cursor waits for them
  REQUIRE(e->drain(3s));
  auto b = r.copy();
  REQUIRE(b.size() == 3);
  CHECK(b[0].size() == 10);
  CHECK(b[1].size() == 10);
  CHECK(b[2].size() == 5);
  CHECK(std::chrono::steady_clock::now() - t0 >= 300ms);
  CHECK(e->finished() == 25);
  CHECK(e->stats().batches == 3);
}

TEST_CASE("a batch is cut by time when batch_size is not reached") {
  fixture f;
  session_config cfg;
  cfg.batch_size = 100;
  cfg.batch_time = 150ms;
  auto e = f.make(cfg);
  recorder r;
  e->add_listener({}, r.fn());
  f.offer(*e, f.events(5));
  std::this_thread::sleep_for(80ms);
  CHECK(r.events() == 0);
  CHECK(e->finished() == 0);
  REQUIRE(test::wait_until([&] { return r.events() == 5; }, 2s));
  CHECK(r.copy().size() == 1);
}

TEST_CASE("each listener gets its events in row order, whatever the threads") {
  fixture f;
  session_config cfg;
  cfg.threads = 4;
  cfg.batch_size = 7;
  auto e = f.make(cfg);
  recorder a, b, c;
  e->add_listener({}, a.fn());
  e->add_listener({}, b.fn());
  e->add_listener({}, c.fn());
  for (int page = 0; page < 20; ++page) f.offer(*e, f.events(50));
  REQUIRE(e->drain(10s));
  for (auto* r : {&a, &b, &c}) {
    std::vector<std::int64_t> all;
    for (const auto& batch : r->copy()) {
      CHECK(batch.size() <= 7);
      all.insert(all.end(), batch.begin(), batch.end());
    }
    REQUIRE(all.size() == 1000);
    CHECK(std::is_sorted(all.begin(), all.end()));
  }
  CHECK(e->finished() == 1000);
}

TEST_CASE("coalescing keeps the latest of equal events in a batch") {
  fixture f;
  session_config cfg;
  cfg.batch_size = 10;
  cfg.batch_time = 10s;
  cfg.coalesce = true;
  auto e = f.make(cfg);
  recorder r;
  e->add_listener({}, r.fn());
  std::vector<delivered_ptr> rows;
  for (int i = 0; i < 10; ++i) rows.push_back(f.event("cache.drop", {{"key", i % 3}}));
  f.offer(*e, rows);
  REQUIRE(e->drain(3s));
  auto b = r.copy();
  REQUIRE(b.size() == 1);
  // keys 0,1,2,0,1,2,0,1,2,0 at positions 1..10: the latest are 8 (key 1), 9 (key 2), 10 (0)
  CHECK(b[0] == std::vector<std::int64_t>{80, 90, 100});
  CHECK(e->stats().coalesced == 7);
  CHECK(e->stats().delivered == 3);
}

TEST_CASE("filters: type names, prefixes and payload containment") {
  event_filter f;
  f.types = {"page.changed", "media.*"};
  CHECK(f.matches_type("page.changed"));
  CHECK(f.matches_type("media.deleted"));
  CHECK(f.matches_type("media.image.resized"));
  CHECK_FALSE(f.matches_type("media"));
  CHECK_FALSE(f.matches_type("media."));
  CHECK_FALSE(f.matches_type("mediax.deleted"));
  CHECK_FALSE(f.matches_type("page.changed.more"));
  f.match = {{"site", "web"}, {"tags", {"a"}}};
  CHECK(f.matches("page.changed", {{"site", "web"}, {"tags", {"b", "a"}}, {"x", 1}}));
  CHECK_FALSE(f.matches("page.changed", {{"site", "web"}, {"tags", {"b"}}}));
  CHECK_FALSE(f.matches("page.changed", {{"site", "intranet"}, {"tags", {"a"}}}));
  CHECK_FALSE(f.matches("page.changed", {{"tags", {"a"}}}));
  CHECK(json_contains({{"n", 1.0}}, {{"n", 1}}));
  CHECK(json_contains({{"a", {{"b", {{"c", true}}}}}}, {{"a", {{"b", nlohmann::json::object()}}}}));

  fixture fx;
  auto e = fx.make({});
  recorder pages, media, web;
  event_filter pf;
  pf.types = {"page.changed"};
  event_filter mf;
  mf.types = {"media.*"};
  event_filter wf;
  wf.match = {{"site", "web"}};
  e->add_listener(pf, pages.fn());
  e->add_listener(mf, media.fn());
  e->add_listener(wf, web.fn());
  std::vector<delivered_ptr> rows{
      fx.event("page.changed", {{"site", "web"}}), fx.event("media.deleted", {{"site", "intra"}}),
      fx.event("user.created", {{"site", "web"}}), fx.event("other", {{"site", "intra"}})};
  std::vector<char> taken(rows.size(), 0);
  e->consume(
      rows, 4, [] { return false; }, taken);
  CHECK(taken == std::vector<char>{1, 1, 1, 0});
  REQUIRE(e->drain(3s));
  CHECK(pages.events() == 1);
  CHECK(media.events() == 1);
  CHECK(web.events() == 2);
  CHECK(e->finished() == 4);  // the row nobody wanted does not hold the watermark back
  CHECK(e->wanted_types() == std::nullopt);  // one listener wants every type

  event_filter bad;
  bad.types = {"media*"};
  CHECK_THROWS_AS(e->add_listener(bad, pages.fn()), error);
  bad.types = {".*"};
  CHECK_THROWS_AS(e->add_listener(bad, pages.fn()), error);
}

TEST_CASE("the watermark never passes an event a listener has not finished") {
  fixture f;
  session_config cfg;
  cfg.threads = 2;
  auto e = f.make(cfg);
  gate g;
  recorder fast;
  e->add_listener({}, [&](const batch_input& in) {
    if (in.rows.front().id == 30) g.wait();
  });
  e->add_listener({}, fast.fn());
  f.offer(*e, f.events(10));
  REQUIRE(test::wait_until([&] { return g.entered == 1; }, 2s));
  REQUIRE(test::wait_until([&] { return fast.events() == 10; }, 2s));
  CHECK(e->finished() == 2);  // event 3 (id 30) is running: the cursor may pass 1 and 2 only
  g.release();
  REQUIRE(e->drain(3s));
  CHECK(e->finished() == 10);
}

TEST_CASE("a full buffer makes the poller wait; nothing is dropped") {
  fixture f;
  session_config cfg;
  cfg.max_pending = 5;
  auto e = f.make(cfg);
  gate g;
  std::atomic<int> handled{0};
  e->add_listener({}, [&](const batch_input&) {
    g.wait();
    ++handled;
  });
  auto rows = f.events(20);
  std::atomic<bool> give_up{false};
  CHECK_FALSE(f.offer(*e, rows, [&] {
    std::this_thread::sleep_for(1ms);
    return give_up.exchange(true);  // first call: keep waiting; then stop
  }));
  CHECK(e->stats().pending == 5);
  CHECK(e->stats().backpressure_waits == 1);
  CHECK(e->finished() == 0);
  // Offered again (as the poller does after a stop), with the listener released meanwhile.
  std::thread releaser([&] {
    std::this_thread::sleep_for(50ms);
    g.release();
  });
  CHECK(f.offer(*e, rows));
  releaser.join();
  REQUIRE(e->drain(3s));
  CHECK(handled == 25);  // the 5 of the first offer, again: at least once
  CHECK(e->finished() == 20);
}

TEST_CASE("a throwing listener is retried with backoff, then its events are recorded as failed") {
  fixture f;
  session_config cfg;
  cfg.retries = 2;
  cfg.retry_backoff = 10ms;
  cfg.batch_size = 3;
  auto e = f.make(cfg);
  std::atomic<int> calls{0};
  e->add_listener({}, [&](const batch_input& in) {
    ++calls;
    if (in.rows.front().id == 10) throw std::runtime_error("index unavailable");
  });
  f.offer(*e, f.events(6));
  REQUIRE(e->drain(3s));
  CHECK(calls == 3 + 1);  // the failing batch 3 times, the next once
  auto s = e->stats();
  CHECK(s.retries == 2);
  CHECK(s.failures == 3);
  CHECK(s.batches == 1);
  REQUIRE(f.failure_count() == 3);
  CHECK(f.failures[0].event_id == 10);
  CHECK(f.failures[0].attempts == 3);
  CHECK(f.failures[0].error == "index unavailable");
  CHECK(f.failures[0].session == "test");
  CHECK(e->finished() == 6);  // the queue moves on
  CHECK(f.logs.count("recorded in EventQueueFailures") == 1);
}

TEST_CASE("typed listeners: an undecodable event is recorded and its batch still delivered") {
  fixture f;
  session_config cfg;
  cfg.batch_size = 3;
  cfg.batch_time = 10s;
  auto e = f.make(cfg);
  session s(e);
  std::mutex m;
  std::vector<std::string> urls;
  auto reg = s.add_listener<page_changed>([&](std::span<const page_changed> batch) {
    std::lock_guard lk(m);
    for (const auto& p : batch) urls.push_back(p.url);
  });
  std::vector<delivered_ptr> rows{f.event("page.changed", {{"url", "/a"}}),
                                  f.event("page.changed", {{"nourl", 1}}),
                                  f.event("page.changed", {{"url", "/c"}})};
  f.offer(*e, rows);
  REQUIRE(s.drain(3s));
  {
    std::lock_guard lk(m);
    CHECK(urls == std::vector<std::string>{"/a", "/c"});
  }
  CHECK(s.stats().undecodable == 1);
  CHECK(s.stats().failures == 1);
  REQUIRE(f.failure_count() == 1);
  CHECK(f.failures[0].event_id == 20);
  CHECK(f.failures[0].error.starts_with("cannot decode"));
  CHECK(e->finished() == 3);
}

TEST_CASE("removing a listener drops its buffered events and frees the watermark") {
  fixture f;
  session_config cfg;
  cfg.batch_size = 100;
  cfg.batch_time = 1h;
  auto e = f.make(cfg);
  session s(e);
  recorder r;
  auto reg = s.add_listener({}, [&](std::span<const event_record>) {});
  f.offer(*e, f.events(10));
  CHECK(e->finished() == 0);
  CHECK(reg.active());
  reg.reset();
  CHECK_FALSE(reg.active());
  CHECK(e->finished() == 10);
  CHECK(e->stats().pending == 0);
}

TEST_CASE("threads = 0 runs the listeners on the caller of run_due") {
  fixture f;
  session_config cfg;
  cfg.threads = 0;
  cfg.batch_size = 4;
  auto e = f.make(cfg);
  std::thread::id ran_on;
  std::atomic<int> n{0};
  e->add_listener({}, [&](const batch_input& in) {
    ran_on = std::this_thread::get_id();
    n += static_cast<int>(in.rows.size());
  });
  f.offer(*e, f.events(10));
  CHECK(n == 0);
  CHECK(e->finished() == 0);
  CHECK_FALSE(e->run_due().has_value());
  CHECK(n == 10);
  CHECK(ran_on == std::this_thread::get_id());
  CHECK(e->finished() == 10);
}

TEST_CASE("a lagging session calls on_lagging once per episode") {
  fixture f;
  session_config cfg;
  cfg.lag_alarm = 50ms;
  std::atomic<int> calls{0};
  std::atomic<std::int64_t> oldest{0};
  cfg.on_lagging = [&](const lag_info& l) {
    ++calls;
    oldest = l.oldest_id;
  };
  auto e = f.make(cfg);
  gate g;
  e->add_listener({}, [&](const batch_input&) { g.wait(); });
  auto old = std::chrono::system_clock::now() - 1s;
  f.offer(*e, {f.event("t", {{"n", 1}}, old), f.event("t", {{"n", 2}}, old)});
  REQUIRE(test::wait_until([&] { return calls >= 1; }, 2s));
  e->run_due();
  std::this_thread::sleep_for(50ms);
  CHECK(calls == 1);
  CHECK(oldest == 10);
  CHECK(e->stats().lag_alarms == 1);
  CHECK(e->stats().oldest_pending_age >= 1s);
  g.release();
  REQUIRE(e->drain(3s));
}

TEST_CASE("closing a session drops what is buffered and gates nothing") {
  fixture f;
  session_config cfg;
  cfg.batch_time = 1h;
  cfg.batch_size = 100;
  auto e = f.make(cfg);
  session s(e);
  auto reg = s.add_listener({}, [](std::span<const event_record>) {});
  f.offer(*e, f.events(3));
  s.close();
  CHECK(e->closed());
  CHECK(e->finished() == std::numeric_limits<std::uint64_t>::max());
  CHECK_FALSE(reg.active());
  CHECK_THROWS_AS(s.add_listener({}, [](std::span<const event_record>) {}), error);
}
