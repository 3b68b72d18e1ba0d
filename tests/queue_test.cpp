// The queue's API on a real SQLite file: errors at the call, subscriptions, the poller thread.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <atomic>
#include <fstream>
#include <set>
#include <thread>

#include "../src/sqlite/sqlite_storage.h"
#include "support.h"

using namespace eventq;
using namespace eventq::test;
using namespace std::chrono_literals;

namespace {

errc code_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const error& e) {
    return e.code();
  }
  FAIL("expected an eventq::error");
  return errc::closed;
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const error& e) {
    return e.what();
  }
  return "";
}

// A real SQLite storage whose reads fail while `failing` is set: the poller must survive.
struct flaky_storage : storage {
  std::unique_ptr<storage> inner;
  std::atomic<bool> failing{false};
  explicit flaky_storage(std::unique_ptr<storage> s) : inner(std::move(s)) {}
  std::string_view backend_name() const override { return "flaky"; }
  std::vector<std::int64_t> append(std::span<const event_record> e) override {
    return inner->append(e);
  }
  std::string head_cursor() override { return inner->head_cursor(); }
  std::string oldest_cursor() override { return inner->oldest_cursor(); }
  std::optional<std::string> load_cursor(std::string_view i) override {
    return inner->load_cursor(i);
  }
  void store_cursor(std::string_view i, std::string_view c) override { inner->store_cursor(i, c); }
  read_result read(std::string_view c, std::size_t n) override {
    if (failing) throw error(errc::database_unavailable, "injected: database went away");
    return inner->read(c, n);
  }
  bool wait_for_change(std::chrono::milliseconds t) override { return inner->wait_for_change(t); }
  void interrupt() override { inner->interrupt(); }
  std::string get_or_insert_property(std::string_view k, std::string_view v) override {
    return inner->get_or_insert_property(k, v);
  }
  int schema_version() override { return inner->schema_version(); }
  void register_instance(const instance_registration& w, std::chrono::milliseconds l) override {
    inner->register_instance(w, l);
  }
  bool renew_instance(std::string_view n, std::string_view t,
                      std::chrono::milliseconds l) override {
    if (failing_renewals) throw error(errc::database_unavailable, "injected: renewal failed");
    return inner->renew_instance(n, t, l);
  }
  void release_instance(std::string_view n, std::string_view t) override {
    inner->release_instance(n, t);
  }
  std::vector<instance_info> instances() override { return inner->instances(); }
  queue_summary summary() override { return inner->summary(); }
  bool acquire_task(std::string_view t, std::string_view h, std::chrono::milliseconds l,
                    std::chrono::milliseconds m) override {
    return inner->acquire_task(t, h, l, m);
  }
  void release_task(std::string_view t, std::string_view h, bool c, std::string_view r) override {
    inner->release_task(t, h, c, r);
  }
  std::size_t count_expired(const expiry& b) override { return inner->count_expired(b); }
  std::size_t delete_expired(const expiry& b, std::size_t n) override {
    return inner->delete_expired(b, n);
  }
  std::size_t remove_dead_instances(const expiry& b) override {
    return inner->remove_dead_instances(b);
  }
  std::size_t delete_old_failures(const expiry& b, bool dry_run) override {
    return inner->delete_old_failures(b, dry_run);
  }
  std::atomic<bool> failing_renewals{false};
};

}  // namespace

TEST_CASE("bad input gets a clear error at the call") {
  temp_dir dir;
  auto url = "sqlite:" + dir.file("e.db");
  CHECK(code_of([&] { queue q(url, test_options("")); }) == errc::invalid_argument);
  CHECK(message_of([&] { queue q(url, test_options("")); }).find("instance_name is empty") !=
        std::string::npos);
  CHECK(code_of([&] { queue q(url, test_options(std::string(201, 'n'))); }) ==
        errc::invalid_argument);
  CHECK(code_of([&] { queue q(url, test_options("tab\there")); }) == errc::invalid_argument);
  CHECK(code_of([&] { queue q("mysql://db/x", test_options("a")); }) == errc::invalid_url);
  CHECK(message_of([&] { queue q("mysql://db/x", test_options("a")); }).find("sqlite:/") !=
        std::string::npos);
  CHECK(code_of([&] { queue q("sqlite:", test_options("a")); }) == errc::invalid_url);
  CHECK(code_of([&] { queue q("sqlite::memory:", test_options("a")); }) == errc::invalid_url);
  CHECK(code_of([&] { queue q("sqlite:?watch=off", test_options("a")); }) == errc::invalid_url);
  CHECK(code_of([&] { queue q("sqlite::memory:?watch=off", test_options("a")); }) ==
        errc::invalid_url);
  CHECK(message_of([&] {
          queue q("sqlite:" + dir.file("p.db") + "?wach=off", test_options("a"));
        }).find("unknown parameter 'wach=off'") != std::string::npos);
  auto unreadable = "sqlite:" + dir.file("no/such/dir/e.db");
  CHECK(code_of([&] { queue q(unreadable, test_options("a")); }) == errc::database_unavailable);
  CHECK(message_of([&] { queue q(unreadable, test_options("a")); }).find("no/such/dir/e.db") !=
        std::string::npos);
  // A file that is not an SQLite database.
  { std::ofstream(dir.file("text.db")) << "this is not a database, just some text in a file\n"; }
  CHECK(code_of([&] { queue q("sqlite:" + dir.file("text.db"), test_options("a")); }) ==
        errc::database_unavailable);
  auto o = test_options("a");
  o.page_size = 0;
  CHECK(code_of([&] { queue q(url, o); }) == errc::invalid_argument);
  o = test_options("a");
  o.poll_interval = 0ms;
  CHECK(code_of([&] { queue q(url, o); }) == errc::invalid_argument);
  queue q(url, test_options("a"));
  CHECK(code_of([&] { (void)q.subscribe_raw("t", nullptr); }) == errc::invalid_argument);
  CHECK(code_of([&] { (void)q.cleanup(std::chrono::seconds(-1)); }) == errc::invalid_argument);
  CHECK(to_string(errc::payload_too_large) == "payload_too_large");
  CHECK(to_string(raise_mode::both) == "both");
}

TEST_CASE("the URL forms for SQLite all open the same file") {
  temp_dir dir;
  auto path = dir.file("e.db");
  queue a("sqlite:" + path, test_options("a"));
  queue b("sqlite://" + path, test_options("b"));  // sqlite:///abs/path
  std::vector<std::int64_t> got;
  auto s =
      b.subscribe_all([&](const event_record& r, const nlohmann::json&) { got.push_back(r.id); });
  auto id = a.raise_raw("t", nlohmann::json::object(), raise_mode::globally);
  b.poll_once();
  CHECK(got == std::vector<std::int64_t>{id});
}

TEST_CASE("watch=off: polling only, no wake-up from other queue objects") {
  temp_dir dir;
  auto path = dir.file("e.db");
  queue raiser("sqlite:" + path, test_options("r"));
  auto slow = test_options("p");
  slow.poll_interval = std::chrono::seconds(2);
  queue poller("sqlite:" + path + "?watch=off", slow);
  std::atomic<int> got{0};
  auto s = poller.subscribe_all([&](const event_record&, const nlohmann::json&) { ++got; });
  poller.start();  // polls at once, then sleeps 2 s
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  raiser.raise_raw("t", nlohmann::json::object(), raise_mode::globally);
  // With the watch on it would be delivered within milliseconds (same process: at once).
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  CHECK(got == 0);
  CHECK(wait_until([&] { return got == 1; }, std::chrono::seconds(5)));
  // Its own raises still wake it at once.
  auto t0 = std::chrono::steady_clock::now();
  poller.raise_raw("t", nlohmann::json::object(), raise_mode::both);
  CHECK(wait_until([&] { return got == 2; }, std::chrono::seconds(5)));
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(1500));
}

TEST_CASE("unsubscribing from inside a handler does not deadlock") {
  temp_dir dir;
  auto url = "sqlite:" + dir.file("e.db");
  queue q(url, test_options("a"));
  int calls = 0;
  subscription sub;
  sub = q.subscribe_all([&](const event_record&, const nlohmann::json&) {
    ++calls;
    sub.reset();
  });
  q.raise_raw("t", nlohmann::json::object(), raise_mode::locally);
  q.raise_raw("t", nlohmann::json::object(), raise_mode::locally);
  q.poll_once();
  CHECK(calls == 1);
}

TEST_CASE("reset() from another thread waits for the running handler to return") {
  temp_dir dir;
  queue q("sqlite:" + dir.file("e.db"), test_options("a"));
  std::atomic<bool> entered{false}, finished{false};
  auto sub = q.subscribe_all([&](const event_record&, const nlohmann::json&) {
    entered = true;
    std::this_thread::sleep_for(300ms);
    finished = true;
  });
  q.raise_raw("t", nlohmann::json::object(), raise_mode::locally);
  q.start();
  REQUIRE(wait_until([&] { return entered.load(); }));
  sub.reset();
  CHECK(finished);  // reset returned only after the handler did
  q.stop();
}

TEST_CASE("the poller survives a failing database, counts it, and catches up") {
  temp_dir dir;
  log_capture logs;
  auto path = dir.file("e.db");
  auto ob = test_options("b", &logs);
  auto inner = std::make_unique<sqlite::sqlite_storage>(path, ob);
  auto flaky = std::make_unique<flaky_storage>(std::move(inner));
  auto* control = flaky.get();
  queue b(std::move(flaky), ob);
  queue a("sqlite:" + path, test_options("a"));
  std::atomic<int> got{0};
  auto sub = b.subscribe_all([&](const event_record&, const nlohmann::json&) { ++got; });
  control->failing = true;
  b.start();
  a.raise_raw("t", nlohmann::json::object(), raise_mode::globally);
  REQUIRE(wait_until([&] { return b.stats().poll_errors >= 3; }));
  CHECK(got == 0);
  CHECK(logs.contains("injected: database went away"));
  control->failing = false;
  CHECK(wait_until([&] { return got == 1; }));
  b.stop();
}

TEST_CASE(
    "stop() is prompt even with a long poll interval; the destructor stops a running poller") {
  temp_dir dir;
  auto o = test_options("a");
  o.poll_interval = 30s;
  auto q = std::make_unique<queue>("sqlite:" + dir.file("e.db"), o);
  q->start();
  q->start();  // no-op
  std::this_thread::sleep_for(50ms);
  auto t0 = std::chrono::steady_clock::now();
  q->stop();
  CHECK(std::chrono::steady_clock::now() - t0 < 1s);
  q->start();
  t0 = std::chrono::steady_clock::now();
  q.reset();
  CHECK(std::chrono::steady_clock::now() - t0 < 1s);
}

TEST_CASE("metrics count polls and time them") {
  temp_dir dir;
  queue q("sqlite:" + dir.file("e.db"), test_options("a"));
  auto s = q.subscribe_all([](const event_record&, const nlohmann::json&) {});
  q.poll_once();
  q.poll_once();
  auto m = q.stats();
  CHECK(m.polls == 2);
  CHECK(m.last_poll_duration.count() > 0);
  CHECK(q.config().instance_name == "a");
  CHECK(q.backend().backend_name() == "sqlite");
}

TEST_CASE("raises from many threads on one queue object are all delivered once") {
  temp_dir dir;
  auto url = "sqlite:" + dir.file("e.db");
  queue a(url, test_options("a"));
  queue b(url, test_options("b"));
  std::mutex m;
  std::set<std::int64_t> seen;
  std::atomic<int> dupes{0};
  auto sub = b.subscribe_all([&](const event_record& r, const nlohmann::json&) {
    std::lock_guard lk(m);
    if (!seen.insert(r.id).second) ++dupes;
  });
  b.start();
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 100; ++i) a.raise_raw("t", {{"i", i}}, raise_mode::globally);
    });
  }
  for (auto& t : threads) t.join();
  CHECK(wait_until([&] {
    std::lock_guard lk(m);
    return seen.size() == 800;
  }));
  b.stop();
  CHECK(dupes == 0);
}

TEST_CASE("polling flat out while another connection raises never mistakes a new row for a gap") {
  // An empty page and the sequence check must come from one snapshot: a commit between them
  // would look like deleted rows, and the cursor would jump over the new event.
  temp_dir dir;
  auto url = "sqlite:" + dir.file("e.db");
  queue a(url, test_options("a"));
  queue b(url, test_options("b"));
  std::vector<std::int64_t> got;
  auto sub =
      b.subscribe_all([&](const event_record& r, const nlohmann::json&) { got.push_back(r.id); });
  std::atomic<bool> done{false};
  std::vector<std::int64_t> raised;
  std::thread raiser([&] {
    for (int i = 0; i < 3000; ++i)
      raised.push_back(a.raise_raw("t", {{"i", i}}, raise_mode::globally));
    done = true;
  });
  while (!done) b.poll_once();
  raiser.join();
  b.poll_once();
  CHECK(b.stats().missed == 0);
  CHECK(got == raised);
}

TEST_CASE("a failed lease renewal is reported, counted and retried until it succeeds") {
  temp_dir dir;
  log_capture logs;
  auto path = dir.file("e.db");
  auto o = test_options("r", &logs);
  o.lease = 300ms;
  std::mutex m;
  std::string reason;
  std::atomic<int> calls{0};
  o.on_renewal_failed = [&](std::string_view why) {
    std::lock_guard lk(m);
    reason = why;
    ++calls;
  };
  auto flaky = std::make_unique<flaky_storage>(std::make_unique<sqlite::sqlite_storage>(path, o));
  auto* control = flaky.get();
  queue q(std::move(flaky), o);
  control->failing_renewals = true;
  REQUIRE(wait_until([&] { return calls >= 2; }));
  {
    std::lock_guard lk(m);
    CHECK(reason.find("injected: renewal failed") != std::string::npos);
  }
  CHECK(q.stats().lease_renewal_failures >= 2);
  CHECK(logs.contains("lease renewal failed"));
  control->failing_renewals = false;
  auto before = q.stats().lease_renewals;
  REQUIRE(wait_until([&] { return q.stats().lease_renewals > before; }));
  CHECK_THROWS_AS(queue("sqlite:" + path, test_options("r")), error);  // the name is still held
}
