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
#include "eventq/operations.h"
#include "eventq/options.h"
#include "eventq/storage.h"

namespace eventq::detail {

/// Registers the instance on construction (throws errc::instance_name_in_use, nothing written)
/// and releases the lease on destruction. start() runs the renewal and cleanup thread.
/// Thread-safe.
class maintenance {
 public:
  /// REQUIRES: `store`, `opts` and `counters` outlive this object.
  maintenance(storage& store, const options& opts, queue_counters& counters);
  /// Stops the thread and releases the lease (logged, not thrown, if that fails).
  ~maintenance();
  maintenance(const maintenance&) = delete;
  maintenance& operator=(const maintenance&) = delete;

  /// Starts the thread that renews the lease every third of options::lease and runs the
  /// scheduled cleanup. Call once.
  void start();

  /// Runs a cleanup now keeping `keep` (queue::cleanup): waits for another process's cleanup
  /// up to options::busy_timeout, then throws errc::database_error. Returns rows deleted.
  std::size_t cleanup_now(std::chrono::seconds keep);

  const instance_registration& registration() const noexcept { return m_me; }

 private:
  void release() noexcept;
  bool stopping();
  bool renew();
  cleanup_settings settings_for(std::chrono::seconds keep) const;
  void run();
  void scheduled_cleanup(const std::function<bool()>& between_batches);
  void log(log_level level, const std::string& msg) const { m_opts.logger(level, msg); }

  storage& m_store;
  const options& m_opts;
  queue_counters& m_counters;
  instance_registration m_me;
  std::string m_cleanup_holder;
  std::thread m_thread;
  std::mutex m_mutex;  // guards m_stop
  std::condition_variable m_cv;
  bool m_stop = false;
  std::mutex m_cleanup_mutex;  // one cleanup at a time per queue object
};

}  // namespace eventq::detail
