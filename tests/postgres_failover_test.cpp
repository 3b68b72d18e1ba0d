// Issue 12: failover to a synchronous standby. A primary and a streaming standby (pg_basebackup,
// synchronous_standby_names naming it) started by scripts/with-postgres --standby; two raiser
// and three consumer processes on one libpq multi-host URL (target_session_attrs=read-write).
// The primary is stopped with `pg_ctl stop -m immediate` mid-stream and the standby promoted:
// every event whose raise returned is delivered to every consumer, no consumer is told Missed
// (nothing was lost), and the raises that could not reach a primary failed with
// database_unavailable within a bounded time.
//
// What it guards: a cursor taken on the old primary must not skip rows of the new one. A
// consumer that restarted from the new primary's snapshot at the change of timeline (Missed)
// skipped the events raised between the promotion and its first read there; one that kept its
// snapshot whole could pass over rows of transaction ids the new primary handed out again.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "eventq/eventq.h"
#include "pg_support.h"
#include "support.h"

using namespace eventq;
using namespace eventq::test;
using namespace std::chrono_literals;

namespace {

constexpr int k_raisers = 2;
constexpr int k_consumers = 3;

std::string env(const char* name) {
  const char* v = std::getenv(name);
  REQUIRE_MESSAGE((v && *v), name << " is not set: run under scripts/with-postgres --standby");
  return v;
}

void run_script(const std::string& script, const std::string& args) {
  std::string cmd = script + " " + args + " >/dev/null";
  REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, "failed: " << cmd);
}

struct raise_log {
  std::vector<std::int64_t> returned;  // ids of the raises that returned
  std::map<std::string, int> errors;   // error code -> count
  long long slowest_ms = 0;            // the longest raise, returned or failed
  std::size_t lines = 0;
  std::size_t ok_after_first_error = 0;  // raises that returned after the first failure
};

raise_log read_raise_log(const std::string& path) {
  raise_log out;
  std::istringstream in(read_file(path));
  std::string kind, what;
  long long ms = 0;
  while (in >> kind >> what >> ms) {
    ++out.lines;
    out.slowest_ms = std::max(out.slowest_ms, ms);
    if (kind == "ok") {
      out.returned.push_back(std::stoll(what));
      if (!out.errors.empty()) ++out.ok_after_first_error;
    } else {
      ++out.errors[what];
    }
  }
  return out;
}

std::set<std::int64_t> read_ids(const std::string& path) {
  std::set<std::int64_t> out;
  std::istringstream in(read_file(path));
  std::int64_t id = 0;
  while (in >> id) out.insert(id);
  return out;
}

}  // namespace

TEST_CASE("a failover to a synchronous standby: every returned raise is delivered, none hangs") {
  const std::string url = env("EVENTQ_TEST_PG_FAILOVER_URL") + "&schema=" + pg::fresh_schema();
  const std::string primary_ctl = env("EVENTQ_TEST_PG_CTL");
  const std::string standby_ctl = env("EVENTQ_TEST_PG_STANDBY_CTL");
  {
    queue setup(url, test_options("setup"));  // creates the schema on the primary
  }

  temp_dir dir;
  std::vector<std::unique_ptr<child_process>> consumers, raisers;
  for (int i = 0; i < k_consumers; ++i) {
    consumers.push_back(std::make_unique<child_process>(
        std::vector<std::string>{peer_program(), "consume", url, "c" + std::to_string(i),
                                 dir.file("c" + std::to_string(i))}));
  }
  // Once a first tick reached every consumer, they all read from a cursor of this timeline.
  {
    queue starter(url, test_options("starter"));
    auto all_got_one = [&] {
      for (int i = 0; i < k_consumers; ++i) {
        if (read_ids(dir.file("c" + std::to_string(i))).empty()) return false;
      }
      return true;
    };
    REQUIRE(wait_until(
        [&] {
          starter.raise_raw("tick", nlohmann::json::object(), raise_mode::globally);
          return wait_until(all_got_one, 1s);
        },
        60s));
  }
  const std::string stop = dir.file("stop");
  for (int i = 0; i < k_raisers; ++i) {
    raisers.push_back(std::make_unique<child_process>(
        std::vector<std::string>{peer_program(), "failover-raise", url, "r" + std::to_string(i),
                                 stop, dir.file("r" + std::to_string(i))}));
  }
  auto returned = [&](int i) { return read_raise_log(dir.file("r" + std::to_string(i))); };
  auto all_raised = [&](std::size_t n) {
    for (int i = 0; i < k_raisers; ++i) {
      if (returned(i).returned.size() < n) return false;
    }
    return true;
  };
  REQUIRE(wait_until([&] { return all_raised(100); }, 60s));

  // Mid-stream: the primary dies; for a moment there is none; the standby is promoted.
  run_script(primary_ctl, "stop -m immediate");
  std::this_thread::sleep_for(1500ms);
  run_script(standby_ctl, "promote");

  // The raisers go on through the same URL, on the new primary.
  auto all_resumed = [&] {
    for (int i = 0; i < k_raisers; ++i) {
      if (returned(i).ok_after_first_error < 100) return false;
    }
    return true;
  };
  CHECK(wait_until(all_resumed, 90s));
  std::ofstream(stop) << "stop\n";
  for (auto& r : raisers) CHECK(r->wait(60s) == 0);

  {
    queue stopper(url, test_options("stopper"));
    stopper.raise_raw("stop", nlohmann::json::object(), raise_mode::globally);
  }
  for (auto& c : consumers) CHECK(c->wait(90s) == 0);

  std::vector<std::int64_t> all_returned;
  for (int i = 0; i < k_raisers; ++i) {
    auto log = returned(i);
    MESSAGE("raiser " << i << ": " << log.returned.size() << " returned, " << log.lines
                      << " raises, slowest " << log.slowest_ms << " ms");
    // The raises tried while no primary was there failed, and with the right code.
    CHECK(!log.errors.empty());
    for (const auto& [code, n] : log.errors) {
      CHECK_MESSAGE(code == "database_unavailable", n << " raises failed with " << code);
    }
    // None hung: each returned or failed within the bounds (connect_timeout 10 s).
    CHECK(log.slowest_ms < 30000);
    all_returned.insert(all_returned.end(), log.returned.begin(), log.returned.end());
  }
  for (int i = 0; i < k_consumers; ++i) {
    auto got = read_ids(dir.file("c" + std::to_string(i)));
    std::size_t lost = 0;
    std::int64_t first_lost = 0;
    for (auto id : all_returned) {
      if (!got.count(id)) {
        if (lost++ == 0) first_lost = id;
      }
    }
    CHECK_MESSAGE(lost == 0, "consumer "
                                 << i << " never got " << lost << " of " << all_returned.size()
                                 << " returned raises (the first: Id " << first_lost << ")");
    const std::string missed = read_file(dir.file("c" + std::to_string(i)) + ".missed");
    CHECK_MESSAGE(missed.empty(), "consumer " << i << " was told Missed: " << missed);
  }
}
