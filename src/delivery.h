// Reading pages after the cursor, checking their rows and handing them to the dispatcher in
// order; storing the cursor after each page.
#pragma once

#include <atomic>
#include <cstddef>
#include <functional>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "consumer_set.h"
#include "counters.h"
#include "dispatcher.h"
#include "eventq/queue.h"
#include "lease_fence.h"
#include "row_check.h"

namespace eventq::detail {

/// Every retained row the poller would refuse, oldest first (verification forced on), at most
/// `max_rows`. Throws what the storage throws.
std::vector<rejected_row> scan_rejected(storage& store, const keyring& keys, const options& opts,
                                        std::size_t max_rows);

/// Operator requests (eventq resync / replay) on their way from the maintenance thread, which
/// takes them from the registry at a lease renewal, to the next poll cycle, which carries them
/// out. Thread-safe.
class control_inbox {
 public:
  void push(std::vector<control_request> requests) {
    std::lock_guard lk(m_mutex);
    for (auto& r : requests) m_requests.push_back(std::move(r));
    m_pending = true;
  }
  std::vector<control_request> take() {
    std::lock_guard lk(m_mutex);
    m_pending = false;
    return std::exchange(m_requests, {});
  }
  bool pending() const noexcept { return m_pending; }

 private:
  std::atomic<bool> m_pending{false};
  std::mutex m_mutex;
  std::vector<control_request> m_requests;
};

/// One queue object's reader. Thread-safe: poll cycles (and find_rejected) run one at a time.
class delivery {
 public:
  /// Loads the instance's stored cursor, or stores the start position (options::start) for a
  /// new instance. Cursors are stored only while the registry row holds `token` (the lease's,
  /// storage::store_cursor_fenced); while `fence` says the name is lost, nothing is delivered
  /// or stored. REQUIRES: the arguments outlive this object. Throws what the storage throws.
  delivery(storage& store, const options& opts, const keyring& keys, dispatcher& disp,
           queue_counters& counters, control_inbox& inbox, consumer_set& consumers,
           lease_fence& fence, std::string token);

  /// One poll cycle: pages until drained (or until `keep_going` says stop; it is asked between
  /// rows too, and a page left half-way is read again by the next cycle). Returns rows
  /// delivered to at least one handler. Throws what the storage throws, and
  /// errc::invalid_argument when called from a handler of this queue (it would deadlock).
  std::size_t poll(const std::function<bool()>& keep_going);

  /// See queue::find_rejected_rows. Serialised with poll(); errc::invalid_argument from a
  /// handler of this queue.
  std::vector<rejected_row> find_rejected(std::size_t max_rows);

  /// The cursor as last stored, without waiting for a poll cycle.
  std::string cursor() const;

  /// Between poll cycles: runs sessions' due work on this thread and stores the cursor as far
  /// as every session has finished. Returns when work is next due. Serialised with poll().
  std::optional<std::chrono::steady_clock::time_point> idle();
  /// idle(), unless a poll cycle runs now (it stores the cursor itself): for stop(), which a
  /// listener may call from inside a poll cycle.
  void idle_if_free();

 private:
  bool targets_me(const event_record& r) const;
  /// What the next read asks the database for: the union of the types the subscribers and
  /// the sessions' listeners want, or every row when one of them wants every type.
  type_filter read_filter();
  std::size_t poll_pages(const std::function<bool()>& keep_going);  // REQUIRES: m_poll_mutex
  std::size_t deliver(const std::vector<event_record>& rows, std::uint64_t base,
                      const std::function<bool()>& keep_going, bool& whole_page);
  std::size_t hand_to_sessions(std::vector<delivered_ptr>& handed,
                               const std::vector<std::size_t>& deferred, std::uint64_t page_end,
                               const std::function<bool()>& keep_going, bool& whole_page);
  void store_finished();
  bool write_cursor(const std::string& cursor);  // false: refused (the name is another's), reported
  bool holds_name();                             // REQUIRES: m_poll_mutex held
  void check_backlog();
  /// The cursor to read from, given the one stored: a cursor that cleanup removed (see
  /// k_removed_cursor) becomes the oldest retained event and a Missed for the next poll to
  /// report (that poll stores the cursor, replacing the marker, once Missed is told).
  std::string resume_from(std::string stored);
  /// Counts, logs (with `who` asked for it, if given) and hands to the Missed handlers that
  /// events after `old` were missed. REQUIRES: a dispatcher::scope open on this thread.
  void tell_missed(const std::string& reason, const std::string& old, const std::string& who = {});
  void refuse_reentry(const char* call) const;
  void carry_out(const control_request& r);  // REQUIRES: m_poll_mutex held
  void move_cursor(const std::string& cursor);
  row_check_policy check_policy(verify_mode verify) const;
  void count_refusal(const event_record& row, const checked_row& checked);
  /// Logs the cycle's refused rows in one line (counts by reason, first and last id).
  void log_refusals();
  void log(log_level level, const std::string& msg) const { m_opts.logger(level, msg); }

  storage& m_store;
  const options& m_opts;
  const keyring& m_keys;
  dispatcher& m_disp;
  queue_counters& m_counters;
  control_inbox& m_inbox;
  consumer_set& m_consumers;
  lease_fence& m_fence;
  const std::string m_token;
  std::uint64_t m_regains_seen = 0;  // fence.regains() when the cursor was last loaded
  bool m_refusal_told = false;       // a refused write was logged at error (once per loss)

  std::mutex m_poll_mutex;  // one poll cycle at a time; guards m_cursor and m_stored
  std::string m_cursor;     // where the next read starts
  std::string m_stored;     // as last stored: behind m_cursor while sessions have work
  mutable std::mutex m_cursor_copy_mutex;
  std::string m_cursor_copy;                 // readable without waiting for a poll cycle
  bool m_backlog_checked = false;            // options::max_backlog is looked at by the first poll
  std::optional<missed_info> m_removed;      // the cursor had been removed: told by the next poll
  std::atomic<bool> m_helper_warned{false};  // a page's helper thread could not be started
  // Rows refused in the current poll cycle (guarded by m_poll_mutex), for its summary line.
  struct refusals {
    std::size_t unauthentic = 0, oversized = 0, malformed = 0;
    std::int64_t first_id = 0, last_id = 0;
    std::size_t total() const { return unauthentic + oversized + malformed; }
  } m_refused;
};

}  // namespace eventq::detail
