// Shared test helpers: temporary directories, raw SQL on an SQLite file, child processes.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "eventq/eventq.h"
#include "migrations.h"

namespace eventq::test {

/// The schema version a fresh database reaches (the last embedded migration; both backends
/// number their migrations alike), so that tests need no edit when a migration is added.
inline int latest_schema_version() { return detail::sqlite_migrations().back().version; }
inline std::string latest_schema_version_text() { return std::to_string(latest_schema_version()); }

/// A fresh directory under $TMPDIR (or /tmp), removed with its content on destruction.
class temp_dir {
 public:
  temp_dir();
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const std::string& path() const { return m_path; }
  std::string file(const std::string& name) const { return m_path + "/" + name; }

 private:
  std::string m_path;
};

/// Log lines captured from a queue, for tests that check what was logged.
struct log_capture {
  std::mutex mutex;
  std::vector<std::string> lines;
  log_function function();
  bool contains(const std::string& needle);
  std::size_t count(const std::string& needle);  // lines containing it
};

/// Options with short intervals suited to tests.
options test_options(const std::string& instance, log_capture* logs = nullptr);

/// Raw SQL on an SQLite file, bypassing the library (what an operator or a hostile writer does).
void sqlite_exec(const std::string& path, const std::string& sql);
std::int64_t sqlite_int(const std::string& path, const std::string& sql);
std::string sqlite_text(const std::string& path, const std::string& sql);
/// Replaces the content of the SQLite file `path` by that of `from`, as sqlite3's `.restore`
/// does (the backup API): connections open on `path` see the new content at their next read.
void sqlite_restore(const std::string& path, const std::string& from);

/// Polls `pred` until true or `timeout`; returns the last result.
bool wait_until(const std::function<bool()>& pred,
                std::chrono::milliseconds timeout = std::chrono::seconds(10));

/// A child OS process.
class child_process {
 public:
  /// Starts `argv[0]` with the arguments; stdout/stderr are inherited.
  explicit child_process(const std::vector<std::string>& argv);
  ~child_process();  // kills with SIGKILL if still running
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  /// Waits up to `timeout` for the exit; returns the exit status (again on later calls), or
  /// nullopt on timeout.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  void kill(int sig);
  pid_t pid() const { return m_pid; }

 private:
  pid_t m_pid = -1;
  bool m_reaped = false;
  int m_status = -1;
};

/// The test helper program (tests/peer.cpp).
std::string peer_program();

/// Reads a whole file ("" if missing).
std::string read_file(const std::string& path);

/// Opens `n` queues on `url` at once, one thread each (instances "i0".."i<n-1>"), and raises one
/// event from each: the race of first opens on a new database. Returns the failures' texts, one
/// per line; empty when every thread succeeded.
std::string open_and_raise_at_once(const std::string& url, int n);

}  // namespace eventq::test
