// The farm lines (issue 12): PROCESSES app servers, each with QUEUES queues (one schema each) on
// one PostgreSQL server. While they sit idle: their connections (pg_stat_activity) and the CPU
// of the server's processes and of the farm's; then raise→handler latency across all of them
// for events raised in the first schema.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <pqxx/pqxx>
#include <sstream>
#include <thread>

#include "bench.h"

namespace bench {

using namespace std::chrono_literals;

namespace {

// utime + stime of a process, in seconds; 0 once it is gone.
double process_cpu_seconds(const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto close = text.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(text.substr(close + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14 || i == 15) ticks += std::stod(field);  // utime, stime
  }
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

std::string comm_of(const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/comm");
  std::string name;
  std::getline(in, name);
  return name;
}

// CPU seconds used so far by the PostgreSQL server processes of this host.
double server_cpu_seconds() {
  double total = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    auto pid = entry.path().filename().string();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    if (comm_of(pid).rfind("postgres", 0) == 0) total += process_cpu_seconds(pid);
  }
  return total;
}

}  // namespace

nlohmann::json postgres_farm_line(const settings& s, const std::string& url, int processes,
                                  int queues, int idle_seconds, int pings) {
  std::vector<std::string> urls;
  for (int i = 0; i < queues; ++i) {
    auto u =
        url + (url.find('?') == std::string::npos ? "?" : "&") + "schema=farm" + std::to_string(i);
    { eventq::queue create(u, bench_options("farm-setup")); }
    urls.push_back(u);
  }
  std::vector<std::unique_ptr<child>> farm;
  for (int p = 0; p < processes; ++p) {
    std::vector<std::string> args{s.self, "farm-child", "app" + std::to_string(p),
                                  std::to_string(pings)};
    args.insert(args.end(), urls.begin(), urls.end());
    farm.push_back(std::make_unique<child>(args));
  }
  std::vector<std::string> pids;
  for (auto& c : farm) pids.push_back(c->read_line());  // each prints its pid once it polls
  std::this_thread::sleep_for(2s);                      // the first polls and renewals settle

  pqxx::connection admin(url.substr(0, url.find('?')));
  auto count_connections = [&] {
    pqxx::nontransaction tx(admin);
    return tx
        .exec1(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'eventq pid %'")[0]
        .as<int>();
  };
  const int connections = count_connections();
  auto farm_cpu = [&] {
    double total = 0;
    for (const auto& pid : pids) total += process_cpu_seconds(pid);
    return total;
  };
  const double server0 = server_cpu_seconds(), farm0 = farm_cpu();
  const auto t0 = clock_type::now();
  std::this_thread::sleep_for(std::chrono::seconds(idle_seconds));
  const double secs = seconds_since(t0);
  const double server_cpu = (server_cpu_seconds() - server0) / secs * 100;
  const double farm_cpu_pct = (farm_cpu() - farm0) / secs * 100;

  // Latency: events raised 100 ms apart in the first schema, each to every process.
  std::vector<std::int64_t> sent(static_cast<std::size_t>(pings));
  {
    eventq::queue raiser(urls.front(), bench_options("farm-raiser"));
    for (int i = 0; i < pings; ++i) {
      sent[static_cast<std::size_t>(i)] = now_ns();
      raiser.raise(make_event(i), eventq::raise_mode::globally);
      std::this_thread::sleep_for(100ms);
    }
  }
  std::vector<double> ms;
  std::size_t received = 0;
  for (auto& c : farm) {
    for (std::string line = c->read_line(); !line.empty() && line != "end"; line = c->read_line()) {
      std::istringstream in(line);
      std::int64_t seq = 0, t = 0;
      in >> seq >> t;
      if (seq < 0 || seq >= pings) continue;
      ms.push_back(static_cast<double>(t - sent[static_cast<std::size_t>(seq)]) / 1e6);
      ++received;
    }
    c->wait();
  }
  return {{"processes", processes},
          {"queues_per_process", queues},
          {"connections", connections},
          {"idle_seconds", secs},
          {"server_cpu_percent", server_cpu},
          {"farm_cpu_percent", farm_cpu_pct},
          {"events", pings},
          {"deliveries", received},
          {"deliveries_expected", pings * processes},
          {"latency_p50_ms", percentile(ms, 50)},
          {"latency_p99_ms", percentile(ms, 99)}};
}

// argv: NAME PINGS URL...: opens a queue per URL, prints its pid once all poll, then prints
// "seq receive_ns" for each event of the first queue until PINGS arrived (or 60 s), then "end".
int child_farm(const std::vector<std::string>& args) {
  const std::string& name = args.at(0);
  const auto pings = static_cast<std::size_t>(std::stoi(args.at(1)));
  std::mutex m;
  std::vector<std::pair<std::int64_t, std::int64_t>> got;
  std::vector<std::unique_ptr<eventq::queue>> queues;
  std::vector<eventq::subscription> subs;
  for (std::size_t i = 2; i < args.size(); ++i) {
    queues.push_back(std::make_unique<eventq::queue>(args[i], bench_options(name)));
    if (i == 2) {
      subs.push_back(queues.back()->subscribe<item_changed>([&](const item_changed& e) {
        auto t = now_ns();
        std::lock_guard lk(m);
        got.emplace_back(e.seq, t);
      }));
    } else {
      subs.push_back(queues.back()->subscribe<item_changed>([](const item_changed&) {}));
    }
    queues.back()->start();
  }
  std::cout << getpid() << std::endl;
  auto deadline = clock_type::now() + 600s;  // the idle window comes first
  for (;;) {
    {
      std::lock_guard lk(m);
      if (got.size() >= pings) break;
    }
    if (clock_type::now() > deadline) break;
    std::this_thread::sleep_for(50ms);
  }
  for (auto& q : queues) q->stop();
  for (auto [seq, t] : got) std::cout << seq << ' ' << t << '\n';
  std::cout << "end" << std::endl;
  return 0;
}

}  // namespace bench
