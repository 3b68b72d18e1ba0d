// What the queue knows of a session: a consumer of delivered pages that reports how far it has
// finished, so that the stored cursor never passes an event it has not finished.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include <nlohmann/json.hpp>

#include "eventq/event.h"

namespace eventq::detail {

/// One delivered row, shared by every consumer that takes it. `position` numbers the rows the
/// queue reads, increasing, within one queue object.
struct delivered_event {
  std::uint64_t position = 0;
  event_record row;
  nlohmann::json data;  // the payload, parsed and checked
};
using delivered_ptr = std::shared_ptr<const delivered_event>;

/// Thread-safety: every call may be made from any thread.
class page_consumer {
 public:
  virtual ~page_consumer() = default;

  /// Positions up to `position` were read before this consumer was attached: not its business.
  virtual void attach_at(std::uint64_t position) = 0;

  /// Takes the rows of one page meant for this instance (in order) and marks `taken[i]` for the
  /// rows it wants; `page_end` is the page's last position (rows it did not get included).
  /// May wait for room (backpressure) while `stopping()` is false. Returns false if it stopped
  /// waiting before taking the whole page (the page must be offered again).
  virtual bool consume(std::span<const delivered_ptr> rows, std::uint64_t page_end,
                       const std::function<bool()>& stopping, std::vector<char>& taken) = 0;

  /// Every position up to this one is finished (handled or recorded as failed).
  virtual std::uint64_t finished() const = 0;

  /// Runs on the calling thread what is due there (listeners of a session without threads,
  /// lag checks); returns when it is next due (nullopt: nothing waits).
  virtual std::optional<std::chrono::steady_clock::time_point> run_due() = 0;

  /// Event types wanted by the listeners, nullopt when some listener wants every type.
  virtual std::optional<std::vector<std::string>> wanted_types() const = 0;

  /// Closed consumers gate nothing and are dropped by the queue.
  virtual bool closed() const = 0;

  /// Stops handler threads and drops what is buffered. Idempotent.
  virtual void shut_down() noexcept = 0;
};

}  // namespace eventq::detail
