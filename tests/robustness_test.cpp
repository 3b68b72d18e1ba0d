// Never hang, never terminate, never lock a restarted instance out, never flood the log: the
// queue-level paths of issue 11 on a real SQLite file (and real OS processes where it is about
// a crashed instance).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <atomic>
#include <memory>
#include <set>
#include <thread>

#include "support.h"

using namespace eventq;
using namespace eventq::test;
using namespace std::chrono_literals;

namespace {

using clock_type = std::chrono::steady_clock;

std::chrono::milliseconds since(clock_type::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - t0);
}

void raise_many(queue& q, int n, const std::string& type = "t") {
  batch b;
  for (int i = 0; i < n; ++i) b.add_raw(type, {{"i", i}}, raise_mode::both);
  q.raise(b);
}

}  // namespace

TEST_CASE("stop() returns after the running handler, not after its page; the rest comes later") {
  temp_dir dir;
  auto url = "sqlite:" + dir.file("e.db");
  std::mutex m;
  std::set<std::int64_t> seen;
  std::atomic<bool> slow{true};
  std::atomic<int> calls{0};
  auto handler = [&](const event_record& r, const nlohmann::json&) {
    ++calls;
    if (slow) std::this_thread::sleep_for(100ms);
    std::lock_guard lk(m);
    seen.insert(r.id);
  };
  {
    queue q(url, test_options("a"));
    auto sub = q.subscribe_all(handler);
    raise_many(q, 500);
    q.start();
    REQUIRE(wait_until([&] { return calls.load() > 0; }));
    auto t0 = clock_type::now();
    q.stop();
    CHECK(since(t0) < 400ms);  // the page holds 500 rows: 50 s if stop() waited for all
    CHECK(calls.load() < 10);
  }
  slow = false;
  queue q(url, test_options("a"));
  auto sub = q.subscribe_all(handler);
  q.poll_once();
  std::lock_guard lk(m);
  CHECK(seen.size() == 500);  // nothing lost: the page left half-way is read again
}

TEST_CASE("subscription::reset() waits for its handler's running call only, not for the page") {
  temp_dir dir;
  queue q("sqlite:" + dir.file("e.db"), test_options("a"));
  std::atomic<int> slow_calls{0}, quick_calls{0};
  auto slow = q.subscribe_all([&](const event_record&, const nlohmann::json&) {
    ++slow_calls;
    std::this_thread::sleep_for(100ms);
  });
  std::atomic<bool> in_quick{false};
  auto quick = q.subscribe_all([&](const event_record&, const nlohmann::json&) {
    in_quick = true;
    ++quick_calls;
    std::this_thread::sleep_for(20ms);
    in_quick = false;
  });
  raise_many(q, 500);
  q.start();
  REQUIRE(wait_until([&] { return quick_calls.load() > 0; }));
  auto t0 = clock_type::now();
  quick.reset();
  CHECK(since(t0) < 400ms);      // another handler keeps the page busy for 50 s
  CHECK_FALSE(in_quick.load());  // it still waited for its own call, had one been running
  int after = quick_calls.load();
  std::this_thread::sleep_for(300ms);
  CHECK(quick_calls.load() == after);  // and that handler is called no more
  CHECK(slow_calls.load() > after);    // while the other one goes on
  q.stop();
}

TEST_CASE(
    "destroying the queue from its own handler on the poller thread neither hangs nor aborts") {
  temp_dir dir;
  auto url = "sqlite:" + dir.file("e.db");
  auto q = std::make_unique<queue>(url, test_options("a"));
  std::atomic<int> calls{0};
  std::atomic<bool> destroyed{false};
  auto sub = q->subscribe_all([&](const event_record&, const nlohmann::json&) {
    if (++calls == 1) {
      q.reset();
      destroyed = true;
    }
  });
  raise_many(*q, 3);
  q->start();
  REQUIRE(wait_until([&] { return destroyed.load(); }));
  // The lease is released once the handler returned: the name opens again.
  std::unique_ptr<queue> again;
  CHECK(wait_until(
      [&] {
        try {
          again = std::make_unique<queue>(url, test_options("a"));
          return true;
        } catch (const error&) {
          return false;
        }
      },
      5s));
  CHECK(calls.load() == 1);  // nothing delivered after the queue was destroyed
}

TEST_CASE("destroying the queue from a handler run by poll_once() is safe") {
  temp_dir dir;
  auto url = "sqlite:" + dir.file("e.db");
  auto q = std::make_unique<queue>(url, test_options("a"));
  int calls = 0;
  auto sub = q->subscribe_all([&](const event_record&, const nlohmann::json&) {
    if (++calls == 1) q.reset();
  });
  raise_many(*q, 3);
  queue* raw = q.get();
  raw->poll_once();
  CHECK(calls == 1);
  CHECK_FALSE(q);
  queue again(url, test_options("a"));  // lease released
}

TEST_CASE("poll_once() and find_rejected_rows() from a handler fail with a clear error") {
  temp_dir dir;
  queue q("sqlite:" + dir.file("e.db"), test_options("a"));
  std::vector<std::string> errors;
  auto sub = q.subscribe_all([&](const event_record&, const nlohmann::json&) {
    for (auto call : {std::function<void()>([&] { q.poll_once(); }),
                      std::function<void()>([&] { q.find_rejected_rows(); })}) {
      try {
        call();
        errors.emplace_back("no error");
      } catch (const error& e) {
        CHECK(e.code() == errc::invalid_argument);
        errors.emplace_back(e.what());
      }
    }
  });
  raise_many(q, 1);
  SUBCASE("from poll_once()") { q.poll_once(); }
  SUBCASE("from the poller thread") {
    q.start();
    REQUIRE(wait_until([&] { return q.stats().delivered == 1; }));
    q.stop();
  }
  REQUIRE(errors.size() == 2);
  CHECK(errors[0].find("poll_once() called from an event handler") != std::string::npos);
  CHECK(errors[1].find("find_rejected_rows() called from an event handler") != std::string::npos);
}

TEST_CASE("stop() from a handler stops the poller once the handler returns; start() resumes") {
  temp_dir dir;
  queue q("sqlite:" + dir.file("e.db"), test_options("a"));
  std::atomic<int> calls{0};
  auto sub = q.subscribe_all([&](const event_record&, const nlohmann::json&) {
    if (++calls == 1) q.stop();
  });
  raise_many(q, 5);
  q.start();
  REQUIRE(wait_until([&] { return !q.running(); }));
  std::this_thread::sleep_for(200ms);
  CHECK(calls.load() == 1);
  q.start();
  CHECK(wait_until([&] { return calls.load() == 6; }));  // the page again: 1 + 5
  q.stop();
}
