// Group commit: concurrent raises on one queue object share one storage transaction.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "eventq/event.h"

namespace eventq::detail {

/// Leader/follower group commit over a storage's append(). A raiser enqueues its rows; if no
/// commit is in flight it becomes the leader, takes every pending request, writes them all with
/// one append() (one transaction, one fsync), hands each raiser its ids and wakes them. Raisers
/// that arrive while a commit is in flight wait; when it ends, the leader hands over to the
/// oldest of them, which leads the next group with everything that piled up meanwhile. So one
/// thread pays one commit per raise, and N threads share a commit among up to N raises. Each
/// raiser sleeps on its own request's state (an atomic wait): a commit wakes its group and
/// the next leader only, after releasing the mutex.
///
/// Guarantees: submit() returns only after the transaction holding its rows committed; each
/// request's rows stay together and in order (a batch stays all-or-none); if append() throws,
/// every request of that group rethrows that exception and nothing of the group is written.
///
/// Thread-safe. `append` is called by one thread at a time.
class group_commit {
 public:
  using append_function = std::function<std::vector<std::int64_t>(std::span<const event_record>)>;

  /// `max_group_rows`: a leader stops adding requests once the group holds this many rows (a
  /// single request larger than that still goes alone), to bound the transaction size.
  explicit group_commit(append_function append, std::size_t max_group_rows = 10000);

  /// Writes `rows` durably (in a group with whatever else is pending) and returns their ids in
  /// order. Throws what append() threw for the group.
  std::vector<std::int64_t> submit(std::vector<event_record> rows);

  /// Transactions committed so far (a group that failed is not counted).
  std::uint64_t commits() const;

 private:
  static constexpr int k_waiting = 0;  // request::state
  static constexpr int k_done = 1;     // committed (or failed): ids or failure are set
  static constexpr int k_lead = 2;     // handed leadership by the previous leader
  struct request {
    std::vector<event_record> rows;
    std::vector<std::int64_t> ids;
    std::exception_ptr failure;
    std::atomic<int> state{k_waiting};  // its raiser sleeps on it (atomic wait)
  };

  // REQUIRES: m_mutex held by `lk`, m_leader_active set by the caller. Commits one group and
  // returns with the mutex released (the group is woken after it is).
  void lead(std::unique_lock<std::mutex>& lk);

  append_function m_append;
  std::size_t m_max_group_rows;

  mutable std::mutex m_mutex;
  std::vector<std::shared_ptr<request>> m_pending;  // oldest first
  bool m_leader_active = false;
  // How long a new leader waits for the raisers of the previous group to come back.
  static constexpr std::chrono::microseconds k_gather_wait{100};
  std::size_t m_last_group = 1;         // raisers in the latest group
  std::condition_variable m_gather_cv;  // a gathering leader sleeps here
  std::uint64_t m_commits = 0;
};

}  // namespace eventq::detail
