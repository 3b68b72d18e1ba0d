// Issue 12: a farm on a default PostgreSQL. Forty OS processes, each an app server with three
// queues (three schemas, as Sitecore keeps core, master and web), on a server with PostgreSQL's
// default max_connections = 100: all open, pg_stat_activity shows at most two connections per
// process (the shared statement connection and the shared LISTEN connection), and an event
// raised in each schema reaches every process. With a connection or more per queue, the
// processes cannot all open.
//
// Runs under its own scripts/with-postgres --max-connections 100 (see tests/CMakeLists.txt).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "eventq/eventq.h"
#include "pg_support.h"
#include "support.h"

using namespace eventq;
using namespace eventq::test;
using namespace std::chrono_literals;

namespace {

constexpr int k_processes = 40;
constexpr int k_queues = 3;

std::map<std::string, int> connections_by_application(const std::string& url) {
  pqxx::connection c(url);
  pqxx::nontransaction tx(c);
  std::map<std::string, int> out;
  for (const auto& row : tx.exec("SELECT application_name, count(*) FROM pg_stat_activity "
                                 "WHERE application_name LIKE 'eventq pid %' GROUP BY 1")) {
    out[row[0].as<std::string>()] = row[1].as<int>();
  }
  return out;
}

}  // namespace

TEST_CASE("40 processes with 3 queues each share two connections per process on a default server") {
  const std::string server = pg::server_url();
  {
    pqxx::connection c(server);
    pqxx::nontransaction tx(c);
    REQUIRE_MESSAGE(tx.exec1("SHOW max_connections")[0].as<int>() == 100,
                    "run under scripts/with-postgres --max-connections 100");
  }
  std::vector<std::string> urls;
  for (int i = 0; i < k_queues; ++i) {
    urls.push_back(pg::url_with_schema(pg::fresh_schema()));
    queue migrate(urls.back(), test_options("migrate"));  // creates the schema
  }

  temp_dir dir;
  std::vector<std::unique_ptr<child_process>> farm;
  for (int i = 0; i < k_processes; ++i) {
    std::vector<std::string> argv{peer_program(), "farm", "app" + std::to_string(i),
                                  dir.file("ready" + std::to_string(i))};
    argv.insert(argv.end(), urls.begin(), urls.end());
    farm.push_back(std::make_unique<child_process>(argv));
  }
  auto all_ready = [&] {
    for (int i = 0; i < k_processes; ++i) {
      if (!std::filesystem::exists(dir.file("ready" + std::to_string(i)))) return false;
    }
    return true;
  };
  auto exited = [&] {
    for (auto& p : farm) {
      if (p->wait(0ms)) return true;
    }
    return false;
  };
  REQUIRE(wait_until([&] { return all_ready() || exited(); }, 180s));
  REQUIRE_MESSAGE(!exited(), "a process of the farm exited before all opened (see its stderr)");
  REQUIRE(all_ready());

  // Every process polls on three queues: each has its statement connection and its listener.
  auto by_app = connections_by_application(server);
  std::map<long, int> by_pid;
  for (const auto& [name, n] : by_app) {
    by_pid[std::stol(name.substr(std::string("eventq pid ").size()))] += n;
  }
  int farm_total = 0;
  for (auto& p : farm) {
    const int n = by_pid[static_cast<long>(p->pid())];
    CHECK_MESSAGE(n <= 2, "process " << p->pid() << " holds " << n << " connections");
    CHECK_MESSAGE(n >= 1, "process " << p->pid() << " holds no connection");
    farm_total += n;
  }
  MESSAGE("the farm holds " << farm_total << " connections for " << k_processes * k_queues
                            << " queues");
  CHECK(farm_total <= 2 * k_processes);

  // One event raised in each schema reaches all forty processes.
  for (int i = 0; i < k_queues; ++i) {
    queue raiser(urls[static_cast<std::size_t>(i)], test_options("raiser"));
    raiser.raise_raw("farm.ping", nlohmann::json::object(), raise_mode::globally);
  }
  int delivered = 0;
  for (auto& p : farm) {
    auto status = p->wait(60s);
    CHECK_MESSAGE(status.has_value(), "process " << p->pid() << " is still waiting");
    if (status == 0) ++delivered;
  }
  CHECK(delivered == k_processes);
}
