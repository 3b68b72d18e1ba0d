#include "support.h"

#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

namespace eventq::test {

temp_dir::temp_dir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/eventq-test-XXXXXX";
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  m_path = tmpl;
}

temp_dir::~temp_dir() {
  std::error_code ec;
  std::filesystem::remove_all(m_path, ec);
}

log_function log_capture::function() {
  return [this](log_level, std::string_view msg) {
    std::lock_guard lk(mutex);
    lines.emplace_back(msg);
  };
}

bool log_capture::contains(const std::string& needle) { return count(needle) > 0; }

std::size_t log_capture::count(const std::string& needle) {
  std::lock_guard lk(mutex);
  return static_cast<std::size_t>(std::count_if(lines.begin(), lines.end(), [&](const auto& l) {
    return l.find(needle) != std::string::npos;
  }));
}

options test_options(const std::string& instance, log_capture* logs) {
  options o;
  o.instance_name = instance;
  o.poll_interval = std::chrono::milliseconds(200);
  o.change_check_interval = std::chrono::milliseconds(10);
  o.min_retry_backoff = std::chrono::milliseconds(20);
  o.max_retry_backoff = std::chrono::milliseconds(200);
  if (logs) o.logger = logs->function();
  return o;
}

namespace {
struct raw {
  sqlite3* db = nullptr;
  explicit raw(const std::string& path) {
    if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) {
      throw std::runtime_error("cannot open " + path);
    }
    sqlite3_busy_timeout(db, 10000);
  }
  ~raw() { sqlite3_close(db); }
  void check(int rc, const std::string& sql) {
    if (rc != SQLITE_OK && rc != SQLITE_ROW && rc != SQLITE_DONE) {
      throw std::runtime_error("raw SQL failed: " + sql + ": " + sqlite3_errmsg(db));
    }
  }
};
}  // namespace

void sqlite_exec(const std::string& path, const std::string& sql) {
  raw r(path);
  r.check(sqlite3_exec(r.db, sql.c_str(), nullptr, nullptr, nullptr), sql);
}

std::string sqlite_text(const std::string& path, const std::string& sql) {
  raw r(path);
  sqlite3_stmt* s = nullptr;
  r.check(sqlite3_prepare_v2(r.db, sql.c_str(), -1, &s, nullptr), sql);
  std::string out;
  int rc = sqlite3_step(s);
  if (rc == SQLITE_ROW && sqlite3_column_text(s, 0)) {
    out = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
  }
  sqlite3_finalize(s);
  r.check(rc, sql);
  return out;
}

std::int64_t sqlite_int(const std::string& path, const std::string& sql) {
  return std::stoll(sqlite_text(path, sql));
}

void sqlite_restore(const std::string& path, const std::string& from) {
  raw dest(path);
  raw src(from);
  sqlite3_backup* b = sqlite3_backup_init(dest.db, "main", src.db, "main");
  if (!b) throw std::runtime_error("cannot restore " + path + ": " + sqlite3_errmsg(dest.db));
  int rc = sqlite3_backup_step(b, -1);
  sqlite3_backup_finish(b);
  if (rc != SQLITE_DONE) {
    throw std::runtime_error("restoring " + path + " from " + from + ": " + sqlite3_errstr(rc));
  }
}

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return pred();
}

child_process::child_process(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  m_pid = fork();
  if (m_pid < 0) throw std::runtime_error("fork failed");
  if (m_pid == 0) {
    execv(args[0], args.data());
    _exit(127);
  }
}

child_process::~child_process() {
  if (!m_reaped && m_pid > 0) {
    ::kill(m_pid, SIGKILL);
    int status = 0;
    waitpid(m_pid, &status, 0);
  }
}

std::optional<int> child_process::wait(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (m_reaped) return m_status;
    int status = 0;
    pid_t r = waitpid(m_pid, &status, WNOHANG);
    if (r == m_pid) {
      m_reaped = true;
      m_status = WIFEXITED(status)     ? WEXITSTATUS(status)
                 : WIFSIGNALED(status) ? 128 + WTERMSIG(status)
                                       : -1;
      return m_status;
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void child_process::kill(int sig) { ::kill(m_pid, sig); }

std::string peer_program() { return EVENTQ_TEST_PEER; }

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string open_and_raise_at_once(const std::string& url, int n) {
  std::mutex m;
  std::string failures;
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      try {
        // Not "i" + std::to_string(i): GCC 12 at -O2 warns (-Wrestrict) inside that operator+.
        std::string name = "i";
        name += std::to_string(i);
        queue q(url, test_options(name));
        q.raise_raw("t", nlohmann::json::object(), raise_mode::globally);
      } catch (const std::exception& e) {
        std::lock_guard lk(m);
        failures += std::string(e.what()) + "\n";
      }
    });
  }
  for (auto& t : threads) t.join();
  return failures;
}

}  // namespace eventq::test
