// A separate OS process for the multi-process tests: an application instance that raises and
// receives events on a shared database, writing what it received to a file.
//
//   peer stress  URL NAME N PEERS OUT   raise N events (mixed flags) while polling; stop once
//                                       the "done" marker of all PEERS arrived; write received
//                                       "from seq id" lines to OUT
//   peer consume URL NAME OUT [US]      append each received id to OUT (flushed per event)
//                                       until a "stop" event arrives; US: handler sleeps that
//                                       many microseconds per event (a consumer that lags);
//                                       each Missed reason goes to OUT.missed
//   peer session-consume URL NAME OUT  as consume, through a session with 2 handler threads,
//                                       batches of up to 100 and batch_time 1 s: appends each
//                                       batch's ids to OUT once the batch is handled
//   peer latency URL NAME COUNT OUT     receive COUNT "ping" events and write, per event, the
//                                       microseconds from the raiser's clock stamp to the handler
//   peer raise   URL NAME N             raise N "tick" events globally
//   peer hold    URL NAME LEASE_MS      open the queue with that lease, print "ready", then sleep
//                                       until killed
//   peer timed   URL NAME STOP OUT      raise "timed" events back to back until the file STOP
//                                       exists; write "start_ns duration_ns" per raise to OUT
//                                       (steady clock, comparable across processes)
//   peer failover-raise URL NAME STOP OUT
//                                       raise "tick" events back to back until the file STOP
//                                       exists, through a database that fails over meanwhile;
//                                       write per raise "ok ID MS" or "error CODE MS" to OUT
//                                       (flushed per line), MS: how long the raise took
//   peer farm    NAME READY URL...       open one queue per URL (a farm's app server with a queue
//                                       per database), create the file READY once all poll,
//                                       exit 0 once a "farm.ping" event arrived on every queue
//                                       (1 after 120 s)
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "eventq/eventq.h"

namespace {

using namespace std::chrono_literals;

std::int64_t mono_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

eventq::raise_mode mode_of(int seq) {
  switch (seq % 3) {
    case 0:
      return eventq::raise_mode::globally;
    case 1:
      return eventq::raise_mode::locally;
    default:
      return eventq::raise_mode::both;
  }
}

eventq::options opts(const std::string& name, std::chrono::milliseconds poll = 200ms) {
  eventq::options o;
  o.instance_name = name;
  o.poll_interval = poll;
  o.change_check_interval = 10ms;
  o.lease = 1000ms;  // a killed peer's name is free again soon
  return o;
}

// Opens the queue, waiting (like a supervisor restarting a crashed process) for the lease of a
// killed predecessor under the same name to expire.
std::unique_ptr<eventq::queue> open_waiting(const std::string& url, const eventq::options& o) {
  auto deadline = std::chrono::steady_clock::now() + 30s;
  for (;;) {
    try {
      return std::make_unique<eventq::queue>(url, o);
    } catch (const eventq::error& e) {
      if (e.code() != eventq::errc::instance_name_in_use ||
          std::chrono::steady_clock::now() > deadline) {
        throw;
      }
      std::this_thread::sleep_for(100ms);
    }
  }
}

int stress(const std::string& url, const std::string& name, int n, int peers,
           const std::string& out) {
  eventq::queue q(url, opts(name));
  std::mutex m;
  std::condition_variable cv;
  std::vector<std::string> lines;
  std::set<std::string> done;
  auto sub = q.subscribe_raw("stress", [&](const eventq::event_record& r, const nlohmann::json& j) {
    std::lock_guard lk(m);
    lines.push_back(j.at("from").get<std::string>() + " " + std::to_string(j.at("seq").get<int>()) +
                    " " + std::to_string(r.id));
  });
  auto fin = q.subscribe_raw("done", [&](const eventq::event_record& r, const nlohmann::json&) {
    std::lock_guard lk(m);
    done.insert(r.instance);
    cv.notify_all();
  });
  q.start();
  for (int i = 0; i < n; ++i) {
    q.raise_raw("stress", {{"from", name}, {"seq", i}}, mode_of(i));
    if (i % 100 == 0) std::this_thread::yield();
  }
  q.raise_raw("done", nlohmann::json::object(), eventq::raise_mode::both);
  {
    std::unique_lock lk(m);
    if (!cv.wait_for(lk, 120s, [&] { return static_cast<int>(done.size()) == peers; })) {
      std::cerr << name << ": timed out waiting for the other peers\n";
      return 2;
    }
  }
  q.stop();
  std::ofstream f(out);
  for (const auto& l : lines) f << l << '\n';
  return 0;
}

int consume(const std::string& url, const std::string& name, const std::string& out, int delay_us) {
  auto qp = open_waiting(url, opts(name, 100ms));
  auto& q = *qp;
  std::FILE* f = std::fopen(out.c_str(), "a");
  if (!f) return 3;
  std::mutex m;
  std::condition_variable cv;
  bool stop = false;
  auto sub = q.subscribe_raw("tick", [&](const eventq::event_record& r, const nlohmann::json&) {
    if (delay_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
    std::fprintf(f, "%lld\n", static_cast<long long>(r.id));
    std::fflush(f);  // the test kills this process with SIGKILL: what was handled is on record
  });
  auto end = q.subscribe_raw("stop", [&](const eventq::event_record&, const nlohmann::json&) {
    std::lock_guard lk(m);
    stop = true;
    cv.notify_all();
  });
  auto missed = q.on_missed([&](const eventq::missed_info& info) {
    std::ofstream(out + ".missed", std::ios::app) << info.reason << std::endl;
  });
  q.start();
  std::unique_lock lk(m);
  cv.wait_for(lk, 300s, [&] { return stop; });
  lk.unlock();
  q.stop();
  std::fclose(f);
  return stop ? 0 : 2;
}

int session_consume(const std::string& url, const std::string& name, const std::string& out) {
  auto qp = open_waiting(url, opts(name, 100ms));
  auto& q = *qp;
  std::FILE* f = std::fopen(out.c_str(), "a");
  if (!f) return 3;
  std::mutex m;
  std::condition_variable cv;
  bool stop = false;
  eventq::session_config cfg;
  cfg.threads = 2;
  cfg.batch_size = 100;
  cfg.batch_time = 1s;
  auto s = q.create_session(cfg);
  eventq::event_filter ticks;
  ticks.types = {"tick"};
  auto reg = s.add_listener(ticks, [&](std::span<const eventq::event_record> batch) {
    std::lock_guard lk(m);
    for (const auto& r : batch) std::fprintf(f, "%lld\n", static_cast<long long>(r.id));
    std::fflush(f);  // the test kills this process with SIGKILL: what was handled is on record
  });
  auto end = q.subscribe_raw("stop", [&](const eventq::event_record&, const nlohmann::json&) {
    std::lock_guard lk(m);
    stop = true;
    cv.notify_all();
  });
  q.start();
  std::unique_lock lk(m);
  cv.wait_for(lk, 300s, [&] { return stop; });
  lk.unlock();
  // The "stop" subscriber runs on the poller thread while it delivers its page, before the
  // page's ticks are handed to the session (subscribers and sessions are not ordered with each
  // other): stop the poller first, so that the page is handed over, then wait for the session.
  q.stop();
  if (!s.drain(30s)) return 4;
  std::fclose(f);
  return stop ? 0 : 2;
}

int latency(const std::string& url, const std::string& name, int count, const std::string& out) {
  eventq::queue q(url, opts(name, 2000ms));  // the default interval: wake-ups must do the work
  std::mutex m;
  std::condition_variable cv;
  std::vector<std::int64_t> us;
  auto sub = q.subscribe_raw("ping", [&](const eventq::event_record&, const nlohmann::json& j) {
    auto now = mono_ns();
    std::lock_guard lk(m);
    us.push_back((now - j.at("t").get<std::int64_t>()) / 1000);
    cv.notify_all();
  });
  q.start();
  std::printf("ready\n");
  std::fflush(stdout);
  {
    std::unique_lock lk(m);
    if (!cv.wait_for(lk, 120s, [&] { return static_cast<int>(us.size()) >= count; })) return 2;
  }
  q.stop();
  std::ofstream f(out);
  for (auto v : us) f << v << '\n';
  return 0;
}

int raise(const std::string& url, const std::string& name, int n) {
  eventq::queue q(url, opts(name));
  for (int i = 0; i < n; ++i) q.raise_raw("tick", {{"n", i}}, eventq::raise_mode::globally);
  return 0;
}

int hold(const std::string& url, const std::string& name, int lease_ms) {
  auto o = opts(name);
  o.lease = std::chrono::milliseconds(lease_ms);
  eventq::queue q(url, o);
  std::printf("ready\n");
  std::fflush(stdout);
  for (;;) std::this_thread::sleep_for(1s);
}

int timed(const std::string& url, const std::string& name, const std::string& stop,
          const std::string& out) {
  auto o = opts(name);
  o.cleanup_interval = std::chrono::seconds(0);
  eventq::queue q(url, o);
  std::FILE* f = std::fopen(out.c_str(), "w");
  if (!f) return 3;
  for (int i = 0;; ++i) {
    if (i % 20 == 0 && std::ifstream(stop).good()) break;
    auto t0 = mono_ns();
    q.raise_raw("timed", {{"n", i}}, eventq::raise_mode::globally);
    std::fprintf(f, "%lld %lld\n", static_cast<long long>(t0),
                 static_cast<long long>(mono_ns() - t0));
    if (i % 50 == 0) std::fflush(f);
    std::this_thread::sleep_for(1ms);
  }
  std::fclose(f);
  return 0;
}

int failover_raise(const std::string& url, const std::string& name, const std::string& stop,
                   const std::string& out) {
  auto o = opts(name);
  o.cleanup_interval = std::chrono::seconds(0);
  eventq::queue q(url, o);
  std::FILE* f = std::fopen(out.c_str(), "w");
  if (!f) return 3;
  for (int i = 0; !std::ifstream(stop).good(); ++i) {
    auto t0 = mono_ns();
    try {
      auto id = q.raise_raw("tick", {{"n", i}, {"from", name}}, eventq::raise_mode::globally);
      std::fprintf(f, "ok %lld %lld\n", static_cast<long long>(id),
                   static_cast<long long>((mono_ns() - t0) / 1000000));
    } catch (const eventq::error& e) {
      std::fprintf(f, "error %s %lld\n", std::string(eventq::to_string(e.code())).c_str(),
                   static_cast<long long>((mono_ns() - t0) / 1000000));
      std::this_thread::sleep_for(100ms);  // an application retrying later
    }
    std::fflush(f);  // what returned is on record however this process ends
    std::this_thread::sleep_for(2ms);
  }
  std::fclose(f);
  return 0;
}

// Opens `name`, polls `polls` times (50 ms apart) and prints "missed=N delivered=M".
int count_missed(const std::string& url, const std::string& name, int polls) {
  eventq::queue q(url, opts(name));
  std::size_t missed = 0, delivered = 0;
  auto m = q.on_missed([&](const eventq::missed_info&) { ++missed; });
  auto all =
      q.subscribe_all([&](const eventq::event_record&, const nlohmann::json&) { ++delivered; });
  for (int i = 0; i < polls; ++i) {
    q.poll_once();
    std::this_thread::sleep_for(50ms);
  }
  std::printf("missed=%zu delivered=%zu\n", missed, delivered);
  return 0;
}

}  // namespace

int farm(const std::string& name, const std::string& ready, const std::vector<std::string>& urls) {
  std::mutex m;
  std::condition_variable cv;
  std::set<std::size_t> got;
  std::vector<std::unique_ptr<eventq::queue>> queues;
  std::vector<eventq::subscription> subs;
  for (std::size_t i = 0; i < urls.size(); ++i) {
    // The default poll interval: within the test's time, events arrive through NOTIFY.
    queues.push_back(open_waiting(urls[i], opts(name, 2000ms)));
    subs.push_back(queues.back()->subscribe_raw(
        "farm.ping", [&, i](const eventq::event_record&, const nlohmann::json&) {
          std::lock_guard lk(m);
          got.insert(i);
          cv.notify_all();
        }));
    queues.back()->start();
  }
  std::ofstream(ready) << "ready\n";
  std::unique_lock lk(m);
  if (!cv.wait_for(lk, 120s, [&] { return got.size() == urls.size(); })) {
    std::cerr << name << ": " << got.size() << " of " << urls.size()
              << " queues got farm.ping within 120 s\n";
    return 1;
  }
  return 0;
}

int main(int argc, char** argv) {
  std::vector<std::string> a(argv, argv + argc);
  try {
    if (a.size() == 7 && a[1] == "stress")
      return stress(a[2], a[3], std::stoi(a[4]), std::stoi(a[5]), a[6]);
    if (a.size() == 5 && a[1] == "consume") return consume(a[2], a[3], a[4], 0);
    if (a.size() == 6 && a[1] == "consume") return consume(a[2], a[3], a[4], std::stoi(a[5]));
    if (a.size() == 5 && a[1] == "session-consume") return session_consume(a[2], a[3], a[4]);
    if (a.size() == 6 && a[1] == "latency") return latency(a[2], a[3], std::stoi(a[4]), a[5]);
    if (a.size() == 5 && a[1] == "raise") return raise(a[2], a[3], std::stoi(a[4]));
    if (a.size() == 5 && a[1] == "hold") return hold(a[2], a[3], std::stoi(a[4]));
    if (a.size() == 6 && a[1] == "timed") return timed(a[2], a[3], a[4], a[5]);
    if (a.size() == 5 && a[1] == "missed") return count_missed(a[2], a[3], std::stoi(a[4]));
    if (a.size() == 6 && a[1] == "failover-raise") return failover_raise(a[2], a[3], a[4], a[5]);
    if (a.size() >= 5 && a[1] == "farm") return farm(a[2], a[3], {a.begin() + 4, a.end()});
  } catch (const std::exception& e) {
    std::cerr << "peer: " << e.what() << '\n';
    return 1;
  }
  std::cerr << "usage: see the comment at the top of tests/peer.cpp\n";
  return 64;
}
