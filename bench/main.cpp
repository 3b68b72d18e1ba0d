// eventq_bench: every measurement of bench/run, printed as a table and written as JSON.
//
//   eventq_bench [--sqlite FILE] [--pg URL] [--scale X] [--json OUT]
//   eventq_bench latency URL on|off N     (one latency measurement alone, for profiling)
//   eventq_bench raise URL THREADS shared|own   (3 s of raises alone, for profiling)
//   eventq_bench batch URL N                     (3 s of N-event batch raises alone)
//   eventq_bench sessions URL ROWS               (the event-session lines alone)
//
// --scale shrinks durations and event counts (0.05 for a quick correctness run). The program
// also runs as its own child process for the cross-process measurements (latency, idle, memory).
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <thread>

#include "bench.h"
#include "eventq/signing.h"

namespace {

std::string loadavg() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

std::string fmt(double v) {
  char buf[32];
  if (v >= 1000) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else if (v >= 10) {
    std::snprintf(buf, sizeof buf, "%.1f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.2f", v);
  }
  return buf;
}

void print_table(const nlohmann::json& results) {
  std::printf("%-11s %-55s %12s %12s %7s  %-10s %-22s %s\n", "backend", "measure", "eventq",
              "reference", "ratio", "unit", "target", "met");
  for (const auto& r : results) {
    std::string ref = r.contains("reference") ? fmt(r["reference"].get<double>()) : "-";
    std::string ratio = r.contains("ratio") ? fmt(r["ratio"].get<double>()) + "x" : "-";
    std::string met = r.contains("met") ? (r["met"].get<bool>() ? "yes" : "NO") : "-";
    std::printf("%-11s %-55s %12s %12s %7s  %-10s %-22s %s\n",
                r["backend"].get<std::string>().c_str(), r["measure"].get<std::string>().c_str(),
                fmt(r["eventq"].get<double>()).c_str(), ref.c_str(), ratio.c_str(),
                r["unit"].get<std::string>().c_str(), r["target"].get<std::string>().c_str(),
                met.c_str());
    if (r.contains("extra") && r["measure"].get<std::string>().rfind("latency", 0) == 0) {
      const auto& x = r["extra"];
      std::printf("%-11s   p50 %s ms, p99 %s ms, max %s ms over %d events\n", "",
                  fmt(x["p50_ms"].get<double>()).c_str(), fmt(x["p99_ms"].get<double>()).c_str(),
                  fmt(x["max_ms"].get<double>()).c_str(), x["events"].get<int>());
    }
    if (r.contains("extra") && r["extra"].contains("queries_per_min") &&
        r["unit"].get<std::string>() == "per min") {
      const auto& x = r["extra"];
      std::printf(
          "%-11s   per min: %s queries (%s per poll interval, allowed %s), %s lease, %s "
          "change checks\n",
          "", fmt(x["queries_per_min"].get<double>()).c_str(),
          fmt(x["queries_per_poll_interval"].get<double>()).c_str(),
          fmt(x["allowed_queries_per_poll_interval"].get<double>()).c_str(),
          fmt(x["lease_statements_per_min"].get<double>()).c_str(),
          fmt(x["change_checks_per_min"].get<double>()).c_str());
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    if (!args.empty()) {
      std::vector<std::string> rest(args.begin() + 1, args.end());
      if (args[0] == "latency-recv") return bench::child_latency_receiver(rest);
      if (args[0] == "idle") return bench::child_idle(rest);
      if (args[0] == "memory") return bench::child_memory(rest);
      if (args[0] == "raise" && rest.size() == 3) {  // raise rate alone: URL threads shared|own
        auto rate = bench::eventq_raise_rate(rest[0], std::stoi(rest[1]), rest[2] == "shared",
                                             std::chrono::milliseconds(3000));
        std::cout << nlohmann::json{{"events_per_s", rate}}.dump() << std::endl;
        return 0;
      }
      if (args[0] == "ref-raise" && rest.size() == 3) {  // PostgreSQL reference: URL threads rows
        auto rate = bench::postgres_reference_rate(rest[0], std::stoi(rest[1]), std::stoi(rest[2]),
                                                   std::chrono::milliseconds(3000));
        std::cout << nlohmann::json{{"events_per_s", rate}}.dump() << std::endl;
        return 0;
      }
      if (args[0] == "drain" && rest.size() == 2) {  // SQLite drain line: FILE rows
        std::cout << bench::sqlite_drain_line(rest[0], std::stoll(rest[1])).dump() << std::endl;
        return 0;
      }
      if (args[0] == "pg-drain" && rest.size() == 3) {  // eventq alone: URL rows instances
        std::cout
            << bench::postgres_drain_line(rest[0], std::stoll(rest[1]), std::stoi(rest[2])).dump()
            << std::endl;
        return 0;
      }
      if (args[0] == "cleanup" && rest.size() == 2) {  // PostgreSQL cleanup line: URL rows
        std::cout << bench::postgres_cleanup_line(rest[0], std::stoll(rest[1]), true).dump()
                  << std::endl;
        return 0;
      }
      if (args[0] == "long-tx" && rest.size() == 2) {  // PostgreSQL long-transaction line
        std::cout << bench::postgres_long_tx_line(rest[0], std::stoll(rest[1]), 200).dump()
                  << std::endl;
        return 0;
      }
      if (args[0] == "sessions" && rest.size() == 2) {  // session lines alone: URL rows
        auto fill = [&](std::int64_t n) {  // raised in batches (the full run fills with SQL)
          eventq::queue q(rest[0], bench::bench_options("session-filler"));
          for (std::int64_t i = 0; i < n;) {
            eventq::batch b;
            for (int k = 0; k < 1000 && i < n; ++k, ++i) {
              b.add(bench::make_event(i), eventq::raise_mode::globally);
            }
            q.raise(b);
          }
        };
        nlohmann::json out = nlohmann::json::array();
        for (const auto& r : bench::session_lines(rest[0], std::stoll(rest[1]), fill, 200)) {
          out.push_back(bench::to_json(r));
        }
        std::cout << out.dump(2) << std::endl;
        return 0;
      }
      if (args[0] == "batch" && rest.size() == 2) {  // batch raise rate alone: URL N
        auto rate =
            bench::eventq_batch_rate(rest[0], std::stoi(rest[1]), std::chrono::milliseconds(3000));
        std::cout << nlohmann::json{{"events_per_s", rate}}.dump() << std::endl;
        return 0;
      }
#ifdef EVENTQ_BENCH_WITH_POSTGRES
      if (args[0] == "farm-child") return bench::child_farm(rest);
      if (args[0] == "farm" && rest.size() == 5) {  // URL PROCESSES QUEUES IDLE_S PINGS
        bench::settings s;
        s.self = "/proc/self/exe";
        char self[4096];
        auto len = readlink("/proc/self/exe", self, sizeof self - 1);
        if (len > 0) s.self.assign(self, static_cast<std::size_t>(len));
        std::cout << bench::postgres_farm_line(s, rest[0], std::stoi(rest[1]), std::stoi(rest[2]),
                                               std::stoi(rest[3]), std::stoi(rest[4]))
                         .dump()
                  << std::endl;
        return 0;
      }
#endif
      if (args[0] == "latency" && rest.size() == 3) {  // one latency line alone: URL on|off N
        bench::settings s;
        s.self = "/proc/self/exe";
        std::cout << bench::eventq_latency(s, rest[0], rest[1] == "on", std::stoi(rest[2])).dump()
                  << std::endl;
        return 0;
      }
    }
    bench::settings s;
    s.self = "/proc/self/exe";
    char self[4096];
    auto len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len > 0) s.self.assign(self, static_cast<std::size_t>(len));
    std::string json_out;
    for (std::size_t i = 0; i + 1 < args.size(); i += 2) {
      if (args[i] == "--sqlite") {
        s.sqlite_path = args[i + 1];
      } else if (args[i] == "--pg") {
        s.pg_url = args[i + 1];
      } else if (args[i] == "--scale") {
        s.scale = std::stod(args[i + 1]);
      } else if (args[i] == "--json") {
        json_out = args[i + 1];
      } else {
        std::cerr << "usage: eventq_bench [--sqlite FILE] [--pg URL] [--scale X] [--json OUT]\n";
        return 64;
      }
    }
    nlohmann::json doc;
    utsname u{};
    uname(&u);
    doc["machine"] = {{"cpus", std::thread::hardware_concurrency()},
                      {"kernel", std::string(u.sysname) + " " + u.release},
                      {"load_at_start", loadavg()}};
    std::time_t now = std::time(nullptr);
    char when[32];
    std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
    doc["started"] = when;
    doc["scale"] = s.scale;
    doc["results"] = nlohmann::json::array();
    auto t0 = bench::clock_type::now();
    if (!s.sqlite_path.empty()) {
      for (const auto& r : bench::run_sqlite(s)) doc["results"].push_back(bench::to_json(r));
    }
#ifdef EVENTQ_BENCH_WITH_POSTGRES
    if (!s.pg_url.empty()) {
      for (const auto& r : bench::run_postgres(s)) doc["results"].push_back(bench::to_json(r));
    }
#endif
    {
      // The drain lines read rows filled by SQL, unsigned, with verification off: this line is
      // what verifying adds per row (one HMAC-SHA256 over the canonical form, 200-byte payload).
      eventq::event_record row{0,
                               "bench.item_changed",
                               bench::payload_text(1),
                               "filler",
                               eventq::raise_mode::globally,
                               std::chrono::system_clock::now(),
                               "1",
                               {}};
      eventq::signing_key key{"1", std::string(32, 'k')};
      row.signature = eventq::sign(row, key);
      const int n = 200000;
      auto t1 = bench::clock_type::now();
      std::size_t ok = 0;
      for (int i = 0; i < n; ++i) ok += eventq::sign(row, key) == row.signature;
      double per_row_us = bench::seconds_since(t1) * 1e6 / n;
      bench::result r;
      r.backend = "both";
      r.measure = "signature check, one row";
      r.unit = "us/row";
      r.eventq = per_row_us;
      r.higher_is_better = false;
      r.extra = {{"rows_checked", ok}};
      doc["results"].push_back(bench::to_json(r));
    }
    doc["machine"]["load_at_end"] = loadavg();
    doc["seconds"] = bench::seconds_since(t0);
    print_table(doc["results"]);
    std::printf("load average at start %s, at end %s; %.0f s\n",
                doc["machine"]["load_at_start"].get<std::string>().c_str(),
                doc["machine"]["load_at_end"].get<std::string>().c_str(),
                doc["seconds"].get<double>());
    if (!json_out.empty()) std::ofstream(json_out) << doc.dump(2) << '\n';
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "eventq_bench: " << e.what() << '\n';
    return 1;
  }
}
