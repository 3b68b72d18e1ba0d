#include "sqlite/change_watch.h"

#ifdef __linux__
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cstdint>
#endif

namespace eventq::sqlite {

#ifdef __linux__

change_watch::change_watch(const std::string& db_path) {
  m_event = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  m_inotify = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (m_inotify >= 0) {
    // Every commit in WAL mode writes the -wal file; SQLite keeps it (truncates, never deletes
    // it) while any connection is open, and this storage holds two.
    std::string wal = db_path + "-wal";
    if (inotify_add_watch(m_inotify, wal.c_str(), IN_MODIFY | IN_DELETE_SELF | IN_MOVE_SELF) < 0) {
      close(m_inotify);
      m_inotify = -1;
    }
  }
}

change_watch::~change_watch() {
  if (m_inotify >= 0) close(m_inotify);
  if (m_event >= 0) close(m_event);
}

void change_watch::signal() noexcept {
  if (m_event < 0) return;
  std::uint64_t one = 1;
  [[maybe_unused]] auto n = write(m_event, &one, sizeof one);  // EAGAIN: already signalled
}

watch_event change_watch::wait(std::chrono::milliseconds timeout) {
  if (!valid()) return watch_event::lost;
  pollfd fds[2] = {{m_event, POLLIN, 0}, {m_inotify, POLLIN, 0}};
  int n = poll(fds, 2, static_cast<int>(timeout.count()));
  if (n <= 0) return watch_event::timeout;  // EINTR counts as a timeout: the caller loops
  bool signalled = false, changed = false, lost = false;
  if (fds[0].revents) {
    std::uint64_t count = 0;
    [[maybe_unused]] auto r = read(m_event, &count, sizeof count);
    signalled = true;
  }
  if (fds[1].revents) {
    alignas(inotify_event) char buf[4096];
    ssize_t len;
    while ((len = read(m_inotify, buf, sizeof buf)) > 0) {
      for (char* p = buf; p < buf + len;) {
        auto* ev = reinterpret_cast<inotify_event*>(p);
        if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) lost = true;
        if (ev->mask & IN_MODIFY) changed = true;
        p += sizeof(inotify_event) + ev->len;
      }
    }
  }
  if (lost) {
    close(m_inotify);
    m_inotify = -1;
    return watch_event::lost;
  }
  if (signalled) return watch_event::signalled;
  return changed ? watch_event::file_changed : watch_event::timeout;
}

#else

change_watch::change_watch(const std::string&) {}
change_watch::~change_watch() = default;
void change_watch::signal() noexcept {}
watch_event change_watch::wait(std::chrono::milliseconds) { return watch_event::lost; }

#endif

}  // namespace eventq::sqlite
