// Group commit: concurrent raises share a transaction, and none returns before it commits.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "group_commit.h"
#include "support.h"

using namespace eventq;
using namespace eventq::test;
using namespace std::chrono_literals;

namespace {

// A storage stand-in: assigns increasing ids, "commits" after a delay (an fsync), remembers
// what was committed and in which call, and fails the calls it is told to fail.
struct fake_store {
  std::mutex mutex;
  std::int64_t next_id = 1;
  std::set<std::int64_t> committed;        // ids durable so far
  std::map<std::string, int> call_of_row;  // row data -> call number
  std::set<int> failing_calls;             // calls that throw
  std::set<std::string> rows_of_failed_calls;
  int calls = 0;
  std::atomic<int> in_append{0};
  bool overlapped = false;

  std::vector<std::int64_t> append(std::span<const event_record> rows) {
    if (in_append.fetch_add(1) != 0) overlapped = true;
    std::this_thread::sleep_for(1ms);
    std::lock_guard lk(mutex);
    int call = ++calls;
    --in_append;
    for (const auto& r : rows) call_of_row[r.data] = call;
    if (failing_calls.count(call)) {
      for (const auto& r : rows) rows_of_failed_calls.insert(r.data);
      throw error(errc::database_error, "disk on fire in call " + std::to_string(call));
    }
    std::vector<std::int64_t> ids;
    for (std::size_t i = 0; i < rows.size(); ++i) ids.push_back(next_id++);
    committed.insert(ids.begin(), ids.end());
    return ids;
  }
};

std::vector<event_record> rows_for(const std::string& tag, int n) {
  std::vector<event_record> rows;
  for (int i = 0; i < n; ++i) {
    event_record r;
    r.type = "t";
    r.data = tag + "/" + std::to_string(i);
    rows.push_back(r);
  }
  return rows;
}

}  // namespace

TEST_CASE("many threads: every row written once, ids distinct, groups form") {
  fake_store store;
  detail::group_commit gc([&](std::span<const event_record> r) { return store.append(r); });
  constexpr int k_threads = 16, k_each = 100;
  std::mutex results_mutex;
  std::set<std::int64_t> all_ids;
  std::atomic<int> not_durable{0}, not_consecutive{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < k_threads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < k_each; ++i) {
        int n = 1 + (i % 3);
        auto ids = gc.submit(rows_for(std::to_string(t) + "." + std::to_string(i), n));
        REQUIRE(ids.size() == static_cast<std::size_t>(n));
        std::lock_guard lk(results_mutex);
        for (std::size_t k = 0; k < ids.size(); ++k) {
          // One request's rows go in together and in order.
          if (k > 0 && ids[k] != ids[k - 1] + 1) ++not_consecutive;
          all_ids.insert(ids[k]);
          std::lock_guard s(store.mutex);
          if (!store.committed.count(ids[k])) ++not_durable;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  std::size_t expected_rows = 0;
  for (int i = 0; i < k_each; ++i)
    expected_rows += static_cast<std::size_t>(k_threads * (1 + i % 3));
  CHECK(all_ids.size() == expected_rows);
  CHECK(store.committed.size() == expected_rows);
  CHECK(store.call_of_row.size() == expected_rows);
  CHECK(not_durable == 0);
  CHECK(not_consecutive == 0);
  CHECK_FALSE(store.overlapped);  // one append at a time
  // 1,600 requests from 16 threads against a 1 ms commit: far fewer transactions than raises.
  CHECK(gc.commits() < static_cast<std::uint64_t>(k_threads * k_each) / 2);
  CHECK(gc.commits() == static_cast<std::uint64_t>(store.calls));
}

TEST_CASE("a failing append fails exactly the raises of its group") {
  fake_store store;
  store.failing_calls = {3, 7, 8, 20};
  detail::group_commit gc([&](std::span<const event_record> r) { return store.append(r); });
  constexpr int k_threads = 8, k_each = 50;
  std::mutex m;
  std::set<std::string> failed_tags, ok_tags;
  std::vector<std::thread> threads;
  for (int t = 0; t < k_threads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < k_each; ++i) {
        std::string tag = std::to_string(t) + "." + std::to_string(i);
        try {
          gc.submit(rows_for(tag, 2));
          std::lock_guard lk(m);
          ok_tags.insert(tag);
        } catch (const error& e) {
          CHECK(e.code() == errc::database_error);
          CHECK(std::string(e.what()).find("disk on fire") != std::string::npos);
          std::lock_guard lk(m);
          failed_tags.insert(tag);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(failed_tags.size() + ok_tags.size() == k_threads * k_each);
  std::set<std::string> expected_failed;
  for (const auto& row : store.rows_of_failed_calls) {
    expected_failed.insert(row.substr(0, row.find('/')));
  }
  CHECK(failed_tags == expected_failed);
  CHECK_FALSE(failed_tags.empty());
  // A request is never split across a failed and a committed transaction.
  for (const auto& tag : failed_tags) {
    CHECK(store.call_of_row[tag + "/0"] == store.call_of_row[tag + "/1"]);
  }
  // After failures the committer still works.
  CHECK(gc.submit(rows_for("after", 1)).size() == 1);
}

TEST_CASE("a single raiser commits alone, and a large request still goes through") {
  fake_store store;
  detail::group_commit gc([&](std::span<const event_record> r) { return store.append(r); }, 10);
  auto ids = gc.submit(rows_for("big", 25));
  CHECK(ids.size() == 25);
  CHECK(gc.submit(rows_for("one", 1)).size() == 1);
  CHECK(gc.commits() == 2);
}

TEST_CASE("8 threads raising on one SQLite queue: all ids distinct, all delivered") {
  temp_dir dir;
  std::string url = "sqlite:" + dir.file("gc.db");
  queue raiser(url, test_options("raiser"));
  queue reader(url, test_options("reader"));
  std::mutex m;
  std::set<std::int64_t> raised, delivered;
  auto sub = reader.subscribe_raw("gc.test", [&](const event_record& r, const nlohmann::json&) {
    std::lock_guard lk(m);
    delivered.insert(r.id);
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        auto id = raiser.raise_raw("gc.test", {{"t", t}, {"i", i}}, raise_mode::globally);
        std::lock_guard lk(m);
        raised.insert(id);
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(raised.size() == 400);
  CHECK(raiser.stats().raised == 400);
  reader.poll_once();
  CHECK(delivered == raised);
}
