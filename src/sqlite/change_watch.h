// Wake-ups for the SQLite poller without polling: inotify on the database's WAL file, plus an
// eventfd that same-process raises and interrupt() signal. Linux only; elsewhere (or when
// inotify is unavailable) valid() is false and the storage falls back to checking
// PRAGMA data_version every options::change_check_interval.
#pragma once

#include <chrono>
#include <string>

namespace eventq::sqlite {

/// What wait() saw.
enum class watch_event { timeout, file_changed, signalled, lost };

/// Not thread-safe except signal(), which any thread may call.
class change_watch {
 public:
  /// Watches `db_path`-wal for writes. valid() tells whether that worked.
  explicit change_watch(const std::string& db_path);
  ~change_watch();
  change_watch(const change_watch&) = delete;
  change_watch& operator=(const change_watch&) = delete;

  bool valid() const noexcept { return m_inotify >= 0 && m_event >= 0; }

  /// Waits up to `timeout` for a write to the WAL file or a signal(). `lost`: the file went away
  /// (the watch is closed; valid() turns false).
  watch_event wait(std::chrono::milliseconds timeout);

  /// Makes a wait() in progress (or the next one) return `signalled`.
  void signal() noexcept;

 private:
  int m_inotify = -1;
  int m_event = -1;
};

}  // namespace eventq::sqlite
