// The eventq side of every measurement; the same code runs against both backends.
#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <span>
#include <sstream>
#include <thread>

#include "bench.h"

namespace bench {

using namespace std::chrono_literals;

eventq::options bench_options(const std::string& instance) {
  eventq::options o;
  o.instance_name = instance;
  o.logger = [](eventq::log_level level, std::string_view msg) {
    if (level >= eventq::log_level::warning) std::cerr << "eventq: " << msg << '\n';
  };
  return o;
}

// For instances that consume rows the bench filled with SQL (drain, memory): those rows carry
// no signature, so verification is off there. docs/performance.md states it, and the
// "signature check" line measures what checking one row costs.
eventq::options filled_options(const std::string& instance) {
  auto o = bench_options(instance);
  o.verify = eventq::verify_mode::off;
  return o;
}

double eventq_raise_rate(const std::string& url, int threads, bool shared_queue,
                         std::chrono::milliseconds d) {
  std::vector<std::unique_ptr<eventq::queue>> queues;
  int n_queues = shared_queue ? 1 : threads;
  // The queues of a process share pool_size PostgreSQL connections (1 by default): a process
  // that raises from several threads at once asks for as many, as the README says, so that the
  // line compares with the reference's one connection per thread.
  std::string queue_url = url;
  if (!shared_queue && threads > 1 && url.rfind("postgres", 0) == 0 &&
      url.find("pool_size=") == std::string::npos) {
    queue_url += (url.find('?') == std::string::npos ? "?" : "&") +
                 ("pool_size=" + std::to_string(threads));
  }
  for (int i = 0; i < n_queues; ++i) {
    queues.push_back(
        std::make_unique<eventq::queue>(queue_url, bench_options("raiser-" + std::to_string(i))));
  }
  std::atomic<std::int64_t> seq{0};
  return rate(threads, d, [&](int t) {
    auto& q = *queues[shared_queue ? 0 : static_cast<std::size_t>(t)];
    q.raise(make_event(seq++), eventq::raise_mode::globally);
    return std::size_t{1};
  });
}

double eventq_batch_rate(const std::string& url, int batch_size, std::chrono::milliseconds d) {
  eventq::queue q(url, bench_options("batcher"));
  std::int64_t seq = 0;
  return rate(1, d, [&](int) {
    eventq::batch b;
    for (int i = 0; i < batch_size; ++i) b.add(make_event(seq++), eventq::raise_mode::globally);
    q.raise(b);
    return static_cast<std::size_t>(batch_size);
  });
}

double eventq_drain_rate(const std::string& url, const std::vector<std::string>& instances,
                         std::size_t expected) {
  std::vector<std::unique_ptr<eventq::queue>> queues;
  std::vector<std::size_t> counts(instances.size(), 0);
  std::vector<eventq::subscription> subs;
  for (std::size_t i = 0; i < instances.size(); ++i) {
    queues.push_back(std::make_unique<eventq::queue>(url, filled_options(instances[i])));
    subs.push_back(queues.back()->subscribe<item_changed>(
        [&counts, i](const item_changed& e) { counts[i] += e.seq >= 0 ? 1 : 0; }));
  }
  auto t0 = clock_type::now();
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < queues.size(); ++i) {
    threads.emplace_back([&, i] { queues[i]->poll_once(); });
  }
  for (auto& t : threads) t.join();
  double secs = seconds_since(t0);
  std::size_t total = 0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    if (counts[i] != expected) {
      std::cerr << "bench: instance " << instances[i] << " got " << counts[i]
                << " events, expected " << expected << '\n';
    }
    total += counts[i];
  }
  return static_cast<double>(total) / secs;
}

// ---- latency -----------------------------------------------------------------------------------

std::string polling_only_url(const std::string& url) {
  bool sqlite = url.rfind("sqlite:", 0) == 0;
  return url + (url.find('?') == std::string::npos ? "?" : "&") +
         (sqlite ? "watch=off" : "notify=off");
}

nlohmann::json eventq_latency(const settings& s, const std::string& url, bool wakeups, int events) {
  std::string u = wakeups ? url : polling_only_url(url);
  child receiver({s.self, "latency-recv", u, wakeups ? "on" : "off", std::to_string(events)});
  if (receiver.read_line() != "ready") throw std::runtime_error("latency receiver did not start");
  eventq::queue q(u, bench_options("latency-sender"));
  std::vector<std::int64_t> returned(static_cast<std::size_t>(events));
  auto interval = 5ms;  // 200 events/s, steady
  auto next = clock_type::now();
  for (int i = 0; i < events; ++i) {
    std::this_thread::sleep_until(next);
    next += interval;
    q.raise(make_event(i), eventq::raise_mode::globally);
    returned[static_cast<std::size_t>(i)] = now_ns();
  }
  std::vector<double> ms;
  for (;;) {
    std::string line = receiver.read_line();
    if (line.empty() || line == "end") break;
    std::istringstream in(line);
    std::int64_t seq = 0, t = 0;
    in >> seq >> t;
    if (seq < 0 || seq >= events) continue;
    // Clamped at 0: NOTIFY can wake the receiver before the raiser has read COMMIT's reply.
    ms.push_back(std::max<double>(
        0, static_cast<double>(t - returned[static_cast<std::size_t>(seq)]) / 1e6));
  }
  receiver.wait();
  nlohmann::json j{{"events", ms.size()}, {"expected", events}};
  j["p50_ms"] = percentile(ms, 50);
  j["p99_ms"] = percentile(ms, 99);
  j["max_ms"] = ms.empty() ? 0 : *std::max_element(ms.begin(), ms.end());
  return j;
}

int child_latency_receiver(const std::vector<std::string>& args) {
  const std::string& url = args.at(0);  // args.at(1), "on" or "off", is in the URL already
  int events = std::stoi(args.at(2));
  auto o = bench_options("latency-receiver");
  eventq::queue q(url, o);
  std::mutex m;
  std::vector<std::pair<std::int64_t, std::int64_t>> got;
  got.reserve(static_cast<std::size_t>(events));
  auto sub = q.subscribe<item_changed>([&](const item_changed& e) {
    auto t = now_ns();
    std::lock_guard lk(m);
    got.emplace_back(e.seq, t);
  });
  q.start();
  std::cout << "ready" << std::endl;
  auto deadline = clock_type::now() + std::chrono::seconds(60 + events / 100);
  for (;;) {
    {
      std::lock_guard lk(m);
      if (got.size() >= static_cast<std::size_t>(events)) break;
    }
    if (clock_type::now() > deadline) break;
    std::this_thread::sleep_for(50ms);
  }
  q.stop();
  for (auto [seq, t] : got) std::cout << seq << ' ' << t << '\n';
  std::cout << "end" << std::endl;
  return 0;
}

// ---- idle --------------------------------------------------------------------------------------

nlohmann::json eventq_idle(const settings& s, const std::string& url, int seconds) {
  child c({s.self, "idle", url, std::to_string(seconds)});
  auto line = c.read_line();
  c.wait();
  return nlohmann::json::parse(line);
}

int child_idle(const std::vector<std::string>& args) {
  const std::string& url = args.at(0);
  int seconds = std::stoi(args.at(1));
  auto o = bench_options("idle");
  eventq::queue q(url, o);
  auto sub = q.subscribe<item_changed>([](const item_changed&) {});
  q.start();
  std::this_thread::sleep_for(1s);
  auto counts = [] {
    return std::array<std::uint64_t, 3>{statements(statement_kind::query),
                                        statements(statement_kind::change_check),
                                        statements(statement_kind::lease)};
  };
  auto c0 = counts();
  auto polls0 = q.stats().polls, renewals0 = q.stats().lease_renewals;
  auto cpu0 = cpu_seconds();
  auto t0 = clock_type::now();
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  double secs = seconds_since(t0);
  double cpu = cpu_seconds() - cpu0;
  auto c1 = counts();
  auto polls = q.stats().polls - polls0, renewals = q.stats().lease_renewals - renewals0;
  q.stop();
  double intervals = secs / std::chrono::duration<double>(o.poll_interval).count();
  auto d = [&](int k) { return static_cast<double>(c1[k] - c0[k]); };
  double all = d(0) + d(1) + d(2);
  // The target: at most one query per poll interval, plus the lease renewals (one UPDATE each,
  // counted apart as "lease"). A renewal's commit wakes the poller like any other commit, so
  // one read per renewal is allowed on top. SQLite's change checks (PRAGMA data_version, which
  // reads the WAL index in shared memory, no table) are counted and shown apart.
  double allowed = std::ceil(intervals) + static_cast<double>(renewals);
  nlohmann::json j{{"seconds", secs},
                   {"statements_per_min", all * 60 / secs},
                   {"queries_per_min", d(0) * 60 / secs},
                   {"change_checks_per_min", d(1) * 60 / secs},
                   {"lease_statements_per_min", d(2) * 60 / secs},
                   {"queries_per_poll_interval", d(0) / intervals},
                   {"allowed_queries_per_poll_interval", allowed / intervals},
                   {"within_target", d(0) <= allowed},
                   {"polls", polls},
                   {"lease_renewals", renewals},
                   {"cpu_s_per_hour", cpu * 3600 / secs}};
  std::cout << j.dump() << std::endl;
  return 0;
}

// ---- memory ------------------------------------------------------------------------------------

nlohmann::json eventq_memory(const settings& s, const std::string& url, const std::string& instance,
                             std::size_t count) {
  child c({s.self, "memory", url, instance, std::to_string(count)});
  auto line = c.read_line();
  c.wait();
  return nlohmann::json::parse(line);
}

int child_memory(const std::vector<std::string>& args) {
  eventq::queue q(args.at(0), filled_options(args.at(1)));
  std::size_t expected = std::stoul(args.at(2));
  std::size_t n = 0;
  auto sub = q.subscribe<item_changed>([&](const item_changed&) { ++n; });
  long start = rss_kib();
  auto t0 = clock_type::now();
  while (n < expected && q.poll_once() > 0) {
  }
  double secs = seconds_since(t0);
  nlohmann::json j{{"start_kib", start},
                   {"peak_kib", peak_rss_kib()},
                   {"end_kib", rss_kib()},
                   {"delivered", n},
                   {"seconds", secs},
                   {"ratio", static_cast<double>(peak_rss_kib()) / static_cast<double>(start)}};
  std::cout << j.dump() << std::endl;
  return 0;
}

// ---- cleanup -----------------------------------------------------------------------------------

nlohmann::json eventq_cleanup(const std::string& url) {
  eventq::queue cleaner(url, bench_options("cleaner"));
  eventq::queue raiser(url, bench_options("cleanup-raiser"));
  std::atomic<bool> stop{false};
  std::vector<double> ms;
  std::thread t([&] {
    std::int64_t seq = 0;
    while (!stop) {
      auto t0 = clock_type::now();
      raiser.raise(make_event(seq++), eventq::raise_mode::globally);
      ms.push_back(seconds_since(t0) * 1000);
    }
  });
  std::this_thread::sleep_for(200ms);
  auto t0 = clock_type::now();
  std::size_t deleted = cleaner.cleanup(std::chrono::hours(24));
  double secs = seconds_since(t0);
  stop = true;
  t.join();
  nlohmann::json j{{"seconds", secs}, {"deleted", deleted}, {"raises", ms.size()}};
  j["max_stall_ms"] = ms.empty() ? 0 : *std::max_element(ms.begin(), ms.end());
  j["p99_raise_ms"] = percentile(ms, 99);
  j["p50_raise_ms"] = percentile(ms, 50);
  return j;
}

// ---- event sessions ----------------------------------------------------------------------------

namespace {

double session_drain(const std::string& url, std::int64_t rows,
                     const std::function<void(std::int64_t)>& fill_rows, nlohmann::json& extra) {
  { eventq::queue reg(url, filled_options("session-drain")); }
  fill_rows(rows);
  eventq::queue q(url, filled_options("session-drain"));
  std::atomic<std::int64_t> in_default{0};
  auto d = q.default_session().add_listener<item_changed>(
      [&](std::span<const item_changed> b) { in_default += static_cast<std::int64_t>(b.size()); });
  eventq::session_config cfg;
  cfg.threads = 4;
  cfg.batch_size = 100;
  auto s = q.create_session(cfg);
  std::atomic<std::int64_t> in_session{0};
  std::vector<eventq::registration> regs;
  for (int i = 0; i < 4; ++i) {  // four consumers (cache, index, audit, ...): one thread each
    regs.push_back(s.add_listener<item_changed>([&](std::span<const item_changed> b) {
      in_session += static_cast<std::int64_t>(b.size());
    }));
  }
  auto t0 = clock_type::now();
  q.poll_once();
  s.drain(std::chrono::minutes(10));
  double secs = seconds_since(t0);
  if (in_default != rows || in_session != 4 * rows) {
    std::cerr << "bench: session drain got " << in_default << " (default) and " << in_session
              << " (session) events, expected " << rows << " and " << 4 * rows << '\n';
  }
  extra = {{"events", rows}, {"batches", s.stats().batches}, {"seconds", secs}};
  return static_cast<double>(rows) / secs;
}

nlohmann::json session_latency(const std::string& url, std::chrono::milliseconds batch_time,
                               int events) {
  eventq::queue q(url, bench_options("session-latency-recv"));
  eventq::queue sender(url, bench_options("session-latency-send"));
  eventq::session_config cfg;
  cfg.batch_size = 100;
  cfg.batch_time = batch_time;
  auto s = q.create_session(cfg);
  std::vector<std::int64_t> sent(static_cast<std::size_t>(events), 0);
  std::mutex m;
  std::vector<double> ms;
  auto reg = s.add_listener<item_changed>([&](std::span<const item_changed> b) {
    auto now = now_ns();
    std::lock_guard lk(m);
    for (const auto& e : b) {
      if (e.seq >= 0 && e.seq < events) {
        ms.push_back(static_cast<double>(now - sent[static_cast<std::size_t>(e.seq)]) / 1e6);
      }
    }
  });
  q.start();
  auto next = clock_type::now();
  for (int i = 0; i < events; ++i) {
    std::this_thread::sleep_until(next);
    next += 5ms;  // 200 events/s, steady
    {
      std::lock_guard lk(m);
      sent[static_cast<std::size_t>(i)] = now_ns();
    }
    sender.raise(make_event(i), eventq::raise_mode::globally);
  }
  auto deadline = clock_type::now() + 30s;
  for (;;) {
    {
      std::lock_guard lk(m);
      if (static_cast<int>(ms.size()) >= events || clock_type::now() > deadline) break;
    }
    std::this_thread::sleep_for(10ms);
  }
  q.stop();
  std::lock_guard lk(m);
  nlohmann::json j{{"events", ms.size()}, {"expected", events}};
  j["p50_ms"] = percentile(ms, 50);
  j["p99_ms"] = percentile(ms, 99);
  j["max_ms"] = ms.empty() ? 0 : *std::max_element(ms.begin(), ms.end());
  return j;
}

}  // namespace

std::vector<result> session_lines(const std::string& url, std::int64_t rows,
                                  const std::function<void(std::int64_t)>& fill_rows,
                                  int latency_events) {
  std::vector<result> out;
  nlohmann::json extra;
  double rate = session_drain(url, rows, fill_rows, extra);
  out.push_back({"", "drain 200k: session 4 threads, batches of 100 + default", "events/s", rate,
                 std::nullopt, "", true, "(none)", std::nullopt, extra});
  for (auto bt : {0ms, 50ms}) {
    auto j = session_latency(url, bt, latency_events);
    out.push_back(
        {"", "latency raise->session listener, batch_time " + std::to_string(bt.count()) + " ms",
         "ms p50", j["p50_ms"], std::nullopt, "", false, "(none)", std::nullopt, j});
  }
  return out;
}

}  // namespace bench
