// eventq/subscription.h — the handle that keeps a handler registered.
#pragma once

#include <cstdint>
#include <memory>

namespace eventq {

namespace detail {
/// What a subscription unregisters from: a queue's dispatcher, an event_registry's events.
class subscription_owner {
 public:
  virtual ~subscription_owner() = default;
  /// Unregisters handler `id`; waits for a running call of it unless on that call's thread.
  virtual void remove(std::uint64_t id) noexcept = 0;
  virtual bool contains(std::uint64_t id) const noexcept = 0;
};
}  // namespace detail

/// Keeps one handler registered with a queue (or with an event_registry's event); destroying or
/// reset()ting it unregisters the handler. Move-only. When unregistering from a thread other
/// than the one running the handler, reset() waits for a call of that handler already running
/// to return (that call only, not the rest of the page), so whatever the handler captured may be
/// destroyed right after; from inside the handler it does not wait. Outliving the queue (or
/// registry) is safe.
/// Thread-safety: one handle must not be used by two threads at once; distinct handles may.
class [[nodiscard]] subscription {
 public:
  subscription() = default;
  subscription(std::weak_ptr<detail::subscription_owner> owner, std::uint64_t id)
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
  std::weak_ptr<detail::subscription_owner> m_owner;
  std::uint64_t m_id = 0;
};

}  // namespace eventq
