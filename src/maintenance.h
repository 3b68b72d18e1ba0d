// The instance lease and the scheduled cleanup of one queue object, on a thread of their own
// so that neither slow handlers nor a long poll delay a renewal.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "counters.h"
#include "delivery.h"
#include "eventq/operations.h"
#include "eventq/options.h"
#include "eventq/storage.h"
#include "lease_fence.h"

namespace eventq::detail {

/// Registers the instance on construction (throws errc::instance_name_in_use, nothing written)
/// and releases the lease on destruction. start() runs the renewal and cleanup thread.
/// Thread-safe.
class maintenance {
 public:
  /// REQUIRES: `store`, `opts` and `counters` outlive this object.
  /// Operator requests taken at a renewal go to `inbox`, and `wake` is called. `fence` says
  /// whether this process holds the name (lost when another process took it over; held again
  /// once this one registers again); a fence.check_soon() makes the thread renew at once.
  maintenance(storage& store, const options& opts, queue_counters& counters, control_inbox& inbox,
              lease_fence& fence, std::function<void()> wake);
  /// Stops the thread and releases the lease (logged, not thrown, if that fails).
  ~maintenance();
  maintenance(const maintenance&) = delete;
  maintenance& operator=(const maintenance&) = delete;

  /// Starts the thread that renews the lease every third of options::lease (writing the
  /// counters into the registry row and taking operator requests) and runs the scheduled
  /// cleanup. Call once.
  void start();

  /// Runs a cleanup now keeping `keep` (queue::cleanup): waits for another process's cleanup
  /// up to options::busy_timeout, then throws errc::database_error. Returns rows deleted.
  std::size_t cleanup_now(std::chrono::seconds keep);

  const instance_registration& registration() const noexcept { return m_me; }

 private:
  void release() noexcept;
  bool take_over_from_dead_process();
  bool stopping();
  bool renew();
  std::string taken_over_reason() const;
  bool reclaim();
  void take_requests();
  cleanup_settings settings_for(std::chrono::seconds keep) const;
  void run();
  void scheduled_cleanup(const std::function<bool()>& between_batches);
  void log(log_level level, const std::string& msg) const { m_opts.logger(level, msg); }

  storage& m_store;
  const options& m_opts;
  queue_counters& m_counters;
  control_inbox& m_inbox;
  lease_fence& m_fence;
  std::function<void()> m_wake;
  instance_registration m_me;
  std::string m_cleanup_holder;
  std::thread m_thread;
  std::mutex m_mutex;  // guards m_stop and m_renew_now
  std::condition_variable m_cv;
  bool m_stop = false;
  bool m_renew_now = false;      // fence.check_soon(): a cursor write was refused
  bool m_takeover_told = false;  // the takeover was logged at error (once per loss)
  std::mutex m_cleanup_mutex;    // one cleanup at a time per queue object
};

}  // namespace eventq::detail
