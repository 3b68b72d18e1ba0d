// Whether this queue object holds its instance name, shared by maintenance (which learns it at
// a renewal) and delivery (which learns it when the database refuses a cursor write). While the
// name is lost, delivery neither delivers nor stores (see issue 11, item 6).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <utility>

namespace eventq::detail {

/// Thread-safe.
class lease_fence {
 public:
  bool held() const noexcept { return !m_lost.load(); }

  /// Another process holds the name now. Returns true when it was held until now.
  bool lose() noexcept { return !m_lost.exchange(true); }

  /// The name is held again. Returns true when it had been lost.
  bool regain() noexcept {
    if (!m_lost.load()) return false;
    m_regains.fetch_add(1);
    m_lost.store(false);
    return true;
  }

  /// How many times the name was held again after a loss: delivery reloads its cursor (the
  /// other holder may have moved it) when this changes.
  std::uint64_t regains() const noexcept { return m_regains.load(); }

  /// What check_soon() calls (maintenance: renew now) and what reclaim() calls (maintenance:
  /// register again now, false when another process holds the name). Empty: nothing.
  void set_hooks(std::function<void()> check, std::function<bool()> reclaim) {
    std::lock_guard lk(m_mutex);
    m_check = std::move(check);
    m_reclaim = std::move(reclaim);
  }
  /// A cursor write was refused: registers again at once if nobody else holds the name (the
  /// registry row was removed, or the file replaced by a copy without it). True: registered,
  /// the write may be retried. Throws what the storage throws, except a name in use.
  bool reclaim() {
    std::lock_guard lk(m_mutex);
    return m_reclaim && m_reclaim();
  }
  /// Asks for a renewal now: delivery saw a refused cursor write.
  void check_soon() {
    std::lock_guard lk(m_mutex);
    if (m_check) m_check();
  }

 private:
  std::atomic<bool> m_lost{false};
  std::atomic<std::uint64_t> m_regains{0};
  std::mutex m_mutex;  // guards m_check and m_reclaim
  std::function<void()> m_check;
  std::function<bool()> m_reclaim;
};

}  // namespace eventq::detail
