// eventq sessions demo: a slow search-index listener with batching beside a fast cache
// listener, in one process on one SQLite file (an editor instance raises, a web instance
// listens through two sessions).
//
// The search index is expensive to update (200 ms per call here) but takes many pages at once,
// so its session cuts batches of up to 100 events or every 500 ms and coalesces repeats of one
// page. The cache drops one key per event and must not wait behind the index: it has a session
// of its own. Run with no arguments (a fresh file under /tmp) or give a file.
//
//   eventq_sessions_demo [DB_FILE]
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "eventq/eventq.h"

namespace demo {

using namespace std::chrono_literals;

struct page_changed {
  static constexpr std::string_view event_type = "page.changed";
  int page = 0;
  std::string site;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(page_changed, page, site)

void say(const char* who, const std::string& what) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::steady_clock::now().time_since_epoch())
                .count() %
            100000;
  std::printf("[%05lld.%03lld] %-6s | %s\n", static_cast<long long>(ms / 1000),
              static_cast<long long>(ms % 1000), who, what.c_str());
  std::fflush(stdout);
}

eventq::options options_for(const std::string& name) {
  eventq::options o;
  o.instance_name = name;
  return o;
}

int run(const std::string& db) {
  const std::string url = "sqlite:" + db;
  eventq::queue web(url, options_for("web"));
  eventq::queue editor(url, options_for("editor"));

  // The search index: slow, batched, coalesced, alarmed when it falls 2 s behind.
  eventq::session_config index_cfg;
  index_cfg.name = "search-index";
  index_cfg.batch_size = 100;
  index_cfg.batch_time = 500ms;
  index_cfg.coalesce = true;
  index_cfg.lag_alarm = 2s;
  index_cfg.on_lagging = [](const eventq::lag_info& l) {
    say("index", "lagging: " + std::to_string(l.pending) + " pending, oldest " +
                     std::to_string(l.oldest_age.count()) + " ms old");
  };
  eventq::session index = web.create_session(index_cfg);
  std::atomic<int> indexed{0};
  auto index_reg = index.add_listener<page_changed>(
      {{"site", "web"}},  // the intranet has no search index
      [&](std::span<const page_changed> batch) {
        std::this_thread::sleep_for(200ms);  // re-index the pages: expensive, per call
        indexed += static_cast<int>(batch.size());
        say("index", "re-indexed " + std::to_string(batch.size()) + " page(s) in one call");
      });

  // The page cache: one quick drop per event, in its own session.
  eventq::session_config cache_cfg;
  cache_cfg.name = "page-cache";
  eventq::session cache = web.create_session(cache_cfg);
  std::mutex m;
  std::set<int> dropped;
  std::atomic<long long> worst_ms{0};
  eventq::event_filter pages;
  pages.types = {"page.*"};  // page.changed, page.deleted, ...
  auto cache_reg = cache.add_listener(pages, [&](std::span<const eventq::event_record> batch) {
    auto now = std::chrono::system_clock::now();
    for (const auto& r : batch) {
      auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - r.created).count();
      long long prev = worst_ms;
      while (ms > prev && !worst_ms.compare_exchange_weak(prev, ms)) {
      }
      std::lock_guard lk(m);
      dropped.insert(nlohmann::json::parse(r.data).at("page").get<int>());
    }
  });

  web.start();
  say("editor", "changing 300 pages in bursts of 30 (pages 0-49, so many repeat)");
  for (int burst = 0; burst < 10; ++burst) {
    eventq::batch b;
    for (int i = 0; i < 30; ++i) {
      int page = (burst * 30 + i) * 7 % 50;
      b.add(page_changed{page, page % 5 == 0 ? "intranet" : "web"}, eventq::raise_mode::globally);
    }
    editor.raise(b);
    std::this_thread::sleep_for(100ms);
  }
  bool ok = cache.drain(10s);
  say("cache", "dropped " + std::to_string(dropped.size()) +
                   " distinct pages; slowest raise-to-drop " + std::to_string(worst_ms.load()) +
                   " ms, while the index was still busy");
  ok = index.drain(30s) && ok;
  auto s = index.stats();
  say("index", std::to_string(indexed.load()) + " page updates in " + std::to_string(s.batches) +
                   " calls; " + std::to_string(s.coalesced) + " repeats coalesced away");
  web.stop();
  say("web", "cursor stored: " + web.cursor() + " (every event finished by both sessions)");
  std::lock_guard lk(m);
  ok = ok && dropped.size() == 50 && indexed > 0;
  if (!ok) say("web", "FAILED: a session did not get every page it was meant to");
  return ok ? 0 : 1;
}

}  // namespace demo

int main(int argc, char** argv) {
  try {
    std::string db = argc > 1 ? argv[1]
                              : (std::filesystem::temp_directory_path() /
                                 ("eventq-sessions-demo-" + std::to_string(getpid()) + ".db"))
                                    .string();
    int rc = demo::run(db);
    if (argc <= 1) {
      for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(db + suffix);
    }
    return rc;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "eventq_sessions_demo: %s\n", e.what());
    return 1;
  }
}
