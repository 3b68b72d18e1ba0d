#include "group_commit.h"

#include <string>
#include <utility>

#include "eventq/error.h"

namespace eventq::detail {

group_commit::group_commit(append_function append, std::size_t max_group_rows)
    : m_append(std::move(append)), m_max_group_rows(max_group_rows ? max_group_rows : 1) {}

std::vector<std::int64_t> group_commit::submit(std::vector<event_record> rows) {
  // Shared with the leader that commits it, which still holds it while it wakes us.
  auto me = std::make_shared<request>();
  me->rows = std::move(rows);
  std::unique_lock lk(m_mutex);
  m_pending.push_back(me);
  if (m_leader_active && m_pending.size() >= m_last_group) m_gather_cv.notify_one();
  if (!m_leader_active) {
    m_leader_active = true;  // nobody commits: we lead (our request is the only one so far)
    // The previous group had several raisers: they are on their way back with their next
    // events. Give them a moment to join, or this group holds one raise and the next all
    // the rest (1, 7, 1, 7 with eight threads). A lone raiser never waits.
    if (m_last_group > 1) {
      m_gather_cv.wait_for(lk, k_gather_wait, [&] { return m_pending.size() >= m_last_group; });
    }
  } else {
    // Sleep until our rows are committed by another leader, or leadership is handed to us,
    // on our own request's state (a futex): a commit wakes only its group and the next
    // leader, and they need not take the mutex to find out which happened.
    lk.unlock();
    int state = k_waiting;
    while ((state = me->state.load(std::memory_order_acquire)) == k_waiting) {
      me->state.wait(k_waiting, std::memory_order_acquire);
    }
    if (state == k_done) {
      if (me->failure) std::rethrow_exception(me->failure);
      return std::move(me->ids);
    }
    lk.lock();
  }
  lead(lk);  // our request is the oldest pending: it is in this group (returns unlocked)
  if (me->failure) std::rethrow_exception(me->failure);
  return std::move(me->ids);
}

void group_commit::lead(std::unique_lock<std::mutex>& lk) {
  // Take the oldest pending requests up to the row cap (always at least one).
  std::vector<std::shared_ptr<request>> group;
  std::size_t n_rows = 0;
  std::size_t taken = 0;
  while (taken < m_pending.size()) {
    const auto& r = m_pending[taken];
    if (!group.empty() && n_rows + r->rows.size() > m_max_group_rows) break;
    group.push_back(r);
    n_rows += r->rows.size();
    ++taken;
  }
  m_pending.erase(m_pending.begin(), m_pending.begin() + static_cast<std::ptrdiff_t>(taken));
  lk.unlock();

  std::vector<std::int64_t> ids;
  std::exception_ptr failure;
  try {
    if (group.size() == 1) {
      ids = m_append(group.front()->rows);
    } else {
      std::vector<event_record> all;
      all.reserve(n_rows);
      for (const auto& r : group) {
        for (auto& row : r->rows) all.push_back(std::move(row));
      }
      ids = m_append(all);
    }
    if (ids.size() != n_rows) {
      throw error(errc::database_error, "storage::append returned " + std::to_string(ids.size()) +
                                            " ids for " + std::to_string(n_rows) + " rows");
    }
    // Each raiser reads its result after seeing k_done (release/acquire): no mutex needed.
    std::size_t at = 0;
    for (const auto& r : group) {
      r->ids.assign(ids.begin() + static_cast<std::ptrdiff_t>(at),
                    ids.begin() + static_cast<std::ptrdiff_t>(at + r->rows.size()));
      at += r->rows.size();
    }
  } catch (...) {
    failure = std::current_exception();  // handed to every raiser of the group below
  }
  if (failure) {
    for (const auto& r : group) r->failure = failure;  // copies a pointer: cannot throw
  }
  lk.lock();
  if (!failure) ++m_commits;
  m_last_group = group.size();
  // Hand over to the oldest raiser that arrived meanwhile, or let the next one lead at once.
  // Under the mutex: that raiser cannot return before it has led.
  if (m_pending.empty()) {
    m_leader_active = false;
  } else {
    m_pending.front()->state.store(k_lead, std::memory_order_release);
    m_pending.front()->state.notify_one();
  }
  lk.unlock();
  // Wake the group without the mutex, so that they do not queue for it behind us; `group`
  // keeps each request alive until its notify_one() has returned.
  for (const auto& r : group) {
    r->state.store(k_done, std::memory_order_release);
    r->state.notify_one();
  }
}

std::uint64_t group_commit::commits() const {
  std::lock_guard lk(m_mutex);
  return m_commits;
}

}  // namespace eventq::detail
