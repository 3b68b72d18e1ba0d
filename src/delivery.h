// Reading pages after the cursor, checking their rows and handing them to the dispatcher in
// order; storing the cursor after each page.
#pragma once

#include <atomic>
#include <cstddef>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "counters.h"
#include "dispatcher.h"
#include "eventq/queue.h"
#include "row_check.h"

namespace eventq::detail {

/// Every retained row the poller would refuse, oldest first (verification forced on), at most
/// `max_rows`. Throws what the storage throws.
std::vector<rejected_row> scan_rejected(storage& store, const keyring& keys, const options& opts,
                                        std::size_t max_rows);

/// One queue object's reader. Thread-safe: poll cycles (and find_rejected) run one at a time.
class delivery {
 public:
  /// Loads the instance's stored cursor, or stores the start position (options::start) for a
  /// new instance. REQUIRES: the arguments outlive this object. Throws what the storage throws.
  delivery(storage& store, const options& opts, const keyring& keys, dispatcher& disp,
           queue_counters& counters);

  /// One poll cycle: pages until drained (or until `keep_going` says stop). Returns rows
  /// delivered to at least one handler. Throws what the storage throws.
  std::size_t poll(const std::function<bool()>& keep_going);

  /// See queue::find_rejected_rows. Serialised with poll().
  std::vector<rejected_row> find_rejected(std::size_t max_rows);

  /// The cursor as last stored, without waiting for a poll cycle.
  std::string cursor() const;

 private:
  bool targets_me(const event_record& r) const;
  std::size_t deliver(const std::vector<event_record>& rows);
  row_check_policy check_policy(verify_mode verify) const;
  void count_refusal(const event_record& row, const checked_row& checked);
  void log(log_level level, const std::string& msg) const { m_opts.logger(level, msg); }

  storage& m_store;
  const options& m_opts;
  const keyring& m_keys;
  dispatcher& m_disp;
  queue_counters& m_counters;

  std::mutex m_poll_mutex;  // one poll cycle at a time; guards m_cursor
  std::string m_cursor;
  mutable std::mutex m_cursor_copy_mutex;
  std::string m_cursor_copy;                 // readable without waiting for a poll cycle
  std::atomic<bool> m_helper_warned{false};  // a page's helper thread could not be started
};

}  // namespace eventq::detail
