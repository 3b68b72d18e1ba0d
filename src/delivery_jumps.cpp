// Where a reader's cursor jumps instead of following the pages: an operator's resync or
// replay, a backlog longer than options::max_backlog, and a cursor that cleanup removed. Each
// jump that leaves events behind tells the handlers Missed (tell_missed()).
#include "delivery.h"

#include "util.h"

#include <string>
#include <utility>

namespace eventq::detail {

// An operator's jump: the next read starts at `cursor`. It is stored like a page's cursor, once
// every session has finished what it was handed before (the stored cursor never passes them).
void delivery::move_cursor(const std::string& cursor) {
  m_cursor = cursor;
  m_consumers.page_read(m_consumers.reserve(0), m_cursor);
  store_finished();
}

// An operator's request, taken from the registry at a lease renewal: carried out before this
// cycle reads, then acknowledged with its result (a failure too: the operator sees it).
void delivery::carry_out(const control_request& r) {
  std::string result;
  try {
    if (r.action == control_action::resync) {
      auto old = m_cursor;
      move_cursor(m_store.head_cursor());
      dispatcher::scope scope(m_disp);
      tell_missed("resync requested by an operator", old, r.requested_by);
      result = "resynced: Missed raised, continuing from the head";
    } else {
      auto since = r.since.value_or(std::chrono::system_clock::time_point{});
      move_cursor(m_store.cursor_before(since));
      result = "replaying every retained event raised since " + detail::format_utc(since) + " UTC";
      log(log_level::warning, "operator request (" + r.requested_by + "): " + result);
    }
  } catch (const std::exception& e) {
    result = std::string("failed: ") + e.what();
    log(log_level::error, "operator request " + std::to_string(r.id) + " " + result);
  }
  try {
    m_store.complete_control_request(r.id, result);
  } catch (const std::exception& e) {
    log(log_level::warning, "could not acknowledge operator request " + std::to_string(r.id) +
                                " (" + result + "): " + e.what());
  }
}

void delivery::check_backlog() {
  std::optional<std::int64_t> behind;
  for (const auto& i : m_store.instances()) {
    if (i.name == m_opts.instance_name) behind = i.behind;
  }
  if (!behind || *behind <= static_cast<std::int64_t>(m_opts.max_backlog)) return;
  auto head = m_store.head_cursor();
  std::string reason = std::to_string(*behind) +
                       " events were pending after this instance's cursor, more than "
                       "options::max_backlog (" +
                       std::to_string(m_opts.max_backlog) +
                       "): skipped them and continued from the newest event";
  if (!write_cursor(head)) return;
  auto old = std::exchange(m_cursor, head);
  m_stored = head;
  {
    std::lock_guard c(m_cursor_copy_mutex);
    m_cursor_copy = head;
  }
  dispatcher::scope scope(m_disp);
  tell_missed(reason, old);
}

std::string delivery::resume_from(std::string stored) {
  if (!stored.starts_with(k_removed_cursor)) return stored;
  // Not stored yet: the marker stays until the first poll has told Missed (a crash before
  // that tells it again at the next start, rather than never).
  auto oldest = m_store.oldest_cursor();
  m_removed = missed_info{
      "this instance was away for longer than the cleanup's hard maximum age, and cleanup "
      "removed its cursor (" +
          stored.substr(k_removed_cursor.size()) +
          " UTC): the events raised meanwhile that cleanup deleted are lost to it; continuing "
          "from the oldest retained event",
      std::move(stored)};
  return oldest;
}

void delivery::tell_missed(const std::string& reason, const std::string& old,
                           const std::string& who) {
  ++m_counters.missed;
  log(log_level::warning, "missed events: " + reason + (who.empty() ? "" : " (" + who + ")"));
  m_counters.handler_errors += m_disp.dispatch_missed(missed_info{reason, old});
}

}  // namespace eventq::detail
