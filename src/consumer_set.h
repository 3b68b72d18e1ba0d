// The sessions attached to one queue object, as the reader sees them: page consumers that
// report how far they have finished. Decides which read cursor may be stored.
#pragma once

#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "page_consumer.h"

namespace eventq::detail {

/// Thread-safe.
class consumer_set {
 public:
  /// Attaches `c`: it gets the pages whose positions are reserved from now on.
  void attach(std::shared_ptr<page_consumer> c);

  /// The open consumers now (closed ones are dropped).
  std::vector<std::shared_ptr<page_consumer>> snapshot();

  /// Numbers the `n` rows of a page: returns the position before the first (rows get
  /// base + 1 .. base + n).
  std::uint64_t reserve(std::size_t n);

  /// A page up to position `page_end` was read and offered; `cursor` follows it.
  void page_read(std::uint64_t page_end, std::string cursor);

  /// The cursor of the latest page read whose every event every consumer has finished, if it
  /// is newer than what this returned before (nullopt: nothing new may be stored).
  std::optional<std::string> storable();

  /// Runs what is due on this thread in every consumer; returns when the next is due.
  std::optional<std::chrono::steady_clock::time_point> run_due();

  /// Shuts every consumer down (the queue closes). Idempotent.
  void shut_down_all() noexcept;

 private:
  std::mutex m_mutex;
  std::vector<std::shared_ptr<page_consumer>> m_consumers;
  std::uint64_t m_position = 0;                               // the last reserved
  std::deque<std::pair<std::uint64_t, std::string>> m_pages;  // read, cursor not yet storable
};

}  // namespace eventq::detail
