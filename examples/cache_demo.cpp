// eventq demo: two application instances, two OS processes, one SQLite file.
//
// "editor" changes pages and raises page.changed for each change; "cache" holds a page cache
// and drops an entry whenever it hears that the page changed. Run with no arguments: the demo
// starts both processes itself, waits for them, and prints a summary.
//
//   eventq_demo [DB_FILE]          run the whole demo (default: a fresh file under /tmp)
//   eventq_demo editor DB_FILE     one role, for running the processes yourself
//   eventq_demo cache DB_FILE
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>

#include "eventq/eventq.h"

namespace demo {

using namespace std::chrono_literals;

/// The event: which page changed, and who changed it.
struct page_changed {
  static constexpr std::string_view event_type = "page.changed";
  int page = 0;
  std::string editor;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(page_changed, page, editor)

/// Sent by the editor when it is done, so the cache process knows when to finish.
struct editing_finished {
  static constexpr std::string_view event_type = "editing.finished";
  int changes = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(editing_finished, changes)

constexpr int k_pages = 20;

void say(const std::string& who, const std::string& what) {
  auto now = std::chrono::system_clock::now().time_since_epoch();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now).count() % 100000;
  std::printf("[%05lld.%03lld] %-6s | %s\n", static_cast<long long>(ms / 1000),
              static_cast<long long>(ms % 1000), who.c_str(), what.c_str());
  std::fflush(stdout);
}

eventq::options options_for(const std::string& name) {
  eventq::options o;
  o.instance_name = name;  // poll_interval stays at its 2 s default: wake-ups do the work
  return o;
}

int run_editor(const std::string& url) {
  eventq::queue q(url, options_for("editor"));
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> pick(1, k_pages);
  int changes = 0;
  std::this_thread::sleep_for(500ms);  // let the cache warm up
  for (; changes < 12; ++changes) {
    int page = pick(rng);
    auto id = q.raise(page_changed{page, "editor"}, eventq::raise_mode::globally);
    say("editor", "edited page " + std::to_string(page) + ", raised event " + std::to_string(id));
    std::this_thread::sleep_for(200ms);
  }
  q.raise(editing_finished{changes}, eventq::raise_mode::globally);
  say("editor", "done: " + std::to_string(changes) + " changes raised");
  return 0;
}

int run_cache(const std::string& url) {
  eventq::queue q(url, options_for("cache"));
  std::map<int, std::string> cache;
  for (int p = 1; p <= k_pages; ++p) cache[p] = "<html>page " + std::to_string(p) + "</html>";
  say("cache", "warmed up with " + std::to_string(cache.size()) + " pages");

  std::mutex m;
  std::condition_variable cv;
  int received = 0, dropped = 0, expected = -1;
  auto changed =
      q.subscribe<page_changed>([&](const page_changed& e, const eventq::event_record& r) {
        std::lock_guard lk(m);
        ++received;
        auto lag = std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::system_clock::now() - r.created);
        if (cache.erase(e.page)) {
          ++dropped;
          say("cache", "event " + std::to_string(r.id) + ": page " + std::to_string(e.page) +
                           " changed, dropped it from the cache (" + std::to_string(lag.count()) +
                           " ms after the raise)");
        } else {
          say("cache", "event " + std::to_string(r.id) + ": page " + std::to_string(e.page) +
                           " changed, not cached any more");
        }
      });
  auto finished = q.subscribe<editing_finished>([&](const editing_finished& e) {
    std::lock_guard lk(m);
    expected = e.changes;
    cv.notify_all();
  });
  // Missed: we cannot know what changed, so the only safe move is to drop everything.
  auto missed = q.on_missed([&](const eventq::missed_info& info) {
    std::lock_guard lk(m);
    say("cache", "missed events (" + info.reason + "): flushing the whole cache");
    cache.clear();
  });
  q.start();
  std::unique_lock lk(m);
  bool done = cv.wait_for(lk, 30s, [&] { return expected >= 0; });
  lk.unlock();
  q.stop();
  auto s = q.stats();
  say("cache", "summary: received " + std::to_string(received) + " of " + std::to_string(expected) +
                   " changes, dropped " + std::to_string(dropped) + " cache entries, " +
                   std::to_string(cache.size()) + " pages still cached, " +
                   std::to_string(s.polls) + " polls");
  return done && received == expected ? 0 : 1;
}

int run_both(const std::string& self, const std::string& path) {
  std::filesystem::remove(path);
  std::printf("eventq demo: two processes share %s\n\n", path.c_str());
  std::fflush(stdout);  // before fork, or both children print it again
  {
    // Register both instances before either starts, so the cache sees every change.
    eventq::queue e("sqlite:" + path, options_for("editor"));
    eventq::queue c("sqlite:" + path, options_for("cache"));
  }
  std::vector<pid_t> children;
  for (const char* role : {"cache", "editor"}) {
    pid_t pid = fork();
    if (pid < 0) {
      std::perror("fork");
      return 1;
    }
    if (pid == 0) {
      execl(self.c_str(), self.c_str(), role, path.c_str(), static_cast<char*>(nullptr));
      std::perror("exec");
      _exit(127);
    }
    children.push_back(pid);
  }
  int failures = 0;
  for (pid_t pid : children) {
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failures;
  }
  std::printf("\n%s. Inspect the queue with: sqlite3 %s 'SELECT * FROM EventQueue'\n",
              failures ? "Demo FAILED" : "Demo finished: every change reached the other process",
              path.c_str());
  return failures ? 1 : 0;
}

}  // namespace demo

int main(int argc, char** argv) {
  try {
    std::string self = std::filesystem::canonical("/proc/self/exe").string();
    if (argc == 3 && std::string(argv[1]) == "editor")
      return demo::run_editor("sqlite:" + std::string(argv[2]));
    if (argc == 3 && std::string(argv[1]) == "cache")
      return demo::run_cache("sqlite:" + std::string(argv[2]));
    if (argc <= 2) {
      std::string path =
          argc == 2 ? argv[1] : "/tmp/eventq-demo-" + std::to_string(getpid()) + ".db";
      return demo::run_both(self, path);
    }
    std::cerr << "usage: eventq_demo [DB_FILE] | editor DB_FILE | cache DB_FILE\n";
    return 64;
  } catch (const eventq::error& e) {
    std::cerr << "eventq_demo: " << e.what() << '\n';
    return 1;
  }
}
