// eventq/subscription.h — the handle that keeps a handler registered.
#pragma once

#include <cstdint>
#include <memory>

namespace eventq {

namespace detail {
class dispatcher;
}

/// Keeps one handler registered with a queue; destroying or reset()ting it unregisters the
/// handler. Move-only. When unregistering from a thread other than the poller, reset() waits
/// for a call of that handler already running to return (that call only, not the rest of the
/// page), so whatever the handler captured may be
/// destroyed right after; from inside a handler it does not wait. Outliving the queue is safe.
/// Thread-safety: one handle must not be used by two threads at once; distinct handles may.
class [[nodiscard]] subscription {
 public:
  subscription() = default;
  subscription(std::weak_ptr<detail::dispatcher> owner, std::uint64_t id)
      : m_owner(std::move(owner)), m_id(id) {}
  subscription(subscription&& other) noexcept
      : m_owner(std::move(other.m_owner)), m_id(other.m_id) {
    other.m_id = 0;
  }
  subscription& operator=(subscription&& other) noexcept {
    if (this != &other) {
      reset();
      m_owner = std::move(other.m_owner);
      m_id = other.m_id;
      other.m_id = 0;
    }
    return *this;
  }
  subscription(const subscription&) = delete;
  subscription& operator=(const subscription&) = delete;
  ~subscription() { reset(); }

  /// Unregisters the handler now (no-op if already done).
  void reset() noexcept;

  /// True while the handler is registered with a live queue.
  bool active() const noexcept;

 private:
  std::weak_ptr<detail::dispatcher> m_owner;
  std::uint64_t m_id = 0;
};

}  // namespace eventq
