#include "maintenance.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>

#include <random>
#include <utility>

#include "eventq/error.h"

namespace eventq::detail {

namespace {

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

std::string random_token() {
  std::random_device rd;
  std::string s;
  static const char hex[] = "0123456789abcdef";
  for (int i = 0; i < 32; ++i) s += hex[rd() & 15];
  return s;
}

}  // namespace

maintenance::maintenance(storage& store, const options& opts, queue_counters& counters,
                         control_inbox& inbox, lease_fence& fence, std::function<void()> wake)
    : m_store(store),
      m_opts(opts),
      m_counters(counters),
      m_inbox(inbox),
      m_fence(fence),
      m_wake(std::move(wake)) {
  m_me =
      instance_registration{m_opts.instance_name, host_name(), static_cast<std::int64_t>(getpid()),
                            std::string(version()), random_token()};
  m_cleanup_holder = m_me.name + "@" + m_me.host + ":" + std::to_string(m_me.pid);
  try {
    m_store.register_instance(m_me, m_opts.lease);  // throws instance_name_in_use: nothing written
  } catch (const error& e) {
    if (e.code() != errc::instance_name_in_use || !take_over_from_dead_process()) throw;
  }
  m_fence.set_hooks(
      [this] {
        {
          std::lock_guard lk(m_mutex);
          m_renew_now = true;
        }
        m_cv.notify_all();
      },
      [this] { return reclaim(); });
}

// A supervisor restarts a crashed instance at once: if the lease holder ran on this host and
// its process no longer exists, the name is taken over instead of waiting for the lease.
bool maintenance::take_over_from_dead_process() {
  for (const auto& holder : m_store.instances()) {
    if (holder.name != m_me.name) continue;
    if (holder.host != m_me.host || holder.pid <= 0 || holder.pid == m_me.pid) return false;
    if (::kill(static_cast<pid_t>(holder.pid), 0) == 0 || errno != ESRCH) return false;
    if (!m_store.take_over_instance(m_me, holder.pid, m_opts.lease)) return false;
    log(log_level::warning, "took over instance name '" + m_me.name + "' from process " +
                                std::to_string(holder.pid) +
                                " of this host, which no longer exists (it did not release "
                                "its lease: crashed or killed)");
    return true;
  }
  return false;
}

maintenance::~maintenance() {
  m_fence.set_hooks({}, {});
  {
    std::lock_guard lk(m_mutex);
    m_stop = true;
  }
  m_cv.notify_all();
  if (m_thread.joinable()) m_thread.join();
  release();
}

void maintenance::start() {
  m_thread = std::thread([this] { run(); });
}

void maintenance::release() noexcept {
  try {
    m_store.release_instance(m_me.name, m_me.token);
  } catch (const std::exception& e) {
    log(log_level::warning, std::string("could not release the instance lease (it expires by "
                                        "itself within options::lease): ") +
                                e.what());
  }
}

bool maintenance::stopping() {
  std::lock_guard lk(m_mutex);
  return m_stop;
}

// Renews the lease; on failure logs, counts, tells on_renewal_failed and returns false.
bool maintenance::renew() {
  std::string failure;
  bool taken_over = false;
  try {
    if (m_store.renew_instance(m_me.name, m_me.token, m_opts.lease, m_counters.snapshot())) {
      ++m_counters.lease_renewals;
      if (m_fence.regain() && m_wake) m_wake();
      take_requests();
      return true;
    }
    // The lease lapsed and the row changed hands (or was deleted by hand): take the name back
    // if nobody holds it now.
    m_store.register_instance(m_me, m_opts.lease);
    ++m_counters.lease_renewals;
    if (m_fence.regain()) {
      log(log_level::warning, "instance name '" + m_me.name +
                                  "' is held by this process again (the other holder's lease "
                                  "ended): delivery continues from the cursor stored for it");
      if (m_wake) m_wake();  // the poller waits; it has work again
    } else {
      log(log_level::warning, "instance lease had lapsed; registered again");
    }
    m_takeover_told = false;
    return true;
  } catch (const error& e) {
    failure = e.what();
    if (e.code() == errc::instance_name_in_use) {
      taken_over = true;
      failure = taken_over_reason();
    }
  } catch (const std::exception& e) {
    failure = e.what();
  }
  ++m_counters.lease_renewal_failures;
  if (taken_over) {
    m_fence.lose();  // delivery stops before its next row
    // Said once per loss at error; the renewals that keep trying (every second) at debug.
    log(std::exchange(m_takeover_told, true) ? log_level::debug : log_level::error, failure);
  } else {
    log(log_level::warning, "instance lease renewal failed (retrying): " + failure);
  }
  if (m_opts.on_renewal_failed) {
    try {
      m_opts.on_renewal_failed(failure);
    } catch (const std::exception& e) {
      log(log_level::error, std::string("options::on_renewal_failed threw: ") + e.what());
    } catch (...) {
      log(log_level::error, "options::on_renewal_failed threw a non-std exception");
    }
  }
  return false;
}

// A cursor write was refused although this process held the name at its last renewal: if the
// registry row is gone (removed by hand, or the file replaced by a copy without it) or its
// lease expired with nobody taking it, register again at once (same token). False when another
// process holds the name: the takeover is then reported by the renewal that check_soon() asks.
bool maintenance::reclaim() {
  try {
    m_store.register_instance(m_me, m_opts.lease);
  } catch (const error& e) {
    if (e.code() == errc::instance_name_in_use) return false;
    throw;
  }
  ++m_counters.lease_renewals;
  log(log_level::warning, "instance '" + m_me.name +
                              "' was missing from the registry (or its lease had lapsed) when "
                              "its cursor was stored; registered again");
  return true;
}

// What on_renewal_failed hears when another process holds the name now.
std::string maintenance::taken_over_reason() const {
  std::string holder = "another process";
  try {
    for (const auto& i : m_store.instances()) {
      if (i.name != m_me.name) continue;
      holder = "another process (host '" + i.host + "', pid " + std::to_string(i.pid) + ")";
    }
  } catch (const std::exception& e) {
    holder += " (the registry could not be read: " + std::string(e.what()) + ")";
  }
  return "instance name '" + m_me.name + "' was taken over by " + holder +
         " after this process's lease lapsed (it was paused or cut off for longer than "
         "options::lease): this process stopped delivering and storing its cursor, and takes "
         "the name back at a renewal once that process's lease ends";
}

// Operator requests for this instance go to the poller; a failure here is logged, not a
// failed renewal (the request stays pending and is taken at a later renewal).
void maintenance::take_requests() {
  try {
    auto requests = m_store.take_control_requests(m_me.name, m_me.token);
    if (requests.empty()) return;
    m_inbox.push(std::move(requests));
    if (m_wake) m_wake();
  } catch (const std::exception& e) {
    log(log_level::warning, std::string("could not read operator requests: ") + e.what());
  }
}

cleanup_settings maintenance::settings_for(std::chrono::seconds keep) const {
  cleanup_settings s;
  s.keep = keep;
  s.max_age = m_opts.cleanup_max_age;
  s.batch_size = m_opts.cleanup_batch_size;
  s.pause = m_opts.cleanup_pause;
  return s;
}

void maintenance::run() {
  using clock = std::chrono::steady_clock;
  const auto renew_every = m_opts.lease / 3;
  const auto retry_every =
      std::min<std::chrono::milliseconds>(renew_every, std::chrono::seconds(1));
  const bool scheduled = m_opts.cleanup_interval.count() > 0;
  // Whether the cleanup is due is asked of the database (one statement) every tenth of the
  // interval, at most every 10 minutes: a daily cleanup starts within 10 minutes of being due,
  // and an idle instance spends nearly all its queries on polls.
  const auto check_every = std::min<std::chrono::milliseconds>(
      scheduled ? std::max<std::chrono::milliseconds>(m_opts.cleanup_interval / 10,
                                                      std::chrono::milliseconds(100))
                : std::chrono::minutes(10),
      std::chrono::minutes(10));
  auto next_renew = clock::now() + renew_every;
  auto next_check = clock::now() + check_every;
  auto renew_if_due = [&] {
    auto now = clock::now();
    if (now >= next_renew) next_renew = now + (renew() ? renew_every : retry_every);
  };
  std::unique_lock lk(m_mutex);
  while (!m_stop) {
    auto wake = scheduled ? std::min(next_renew, next_check) : next_renew;
    m_cv.wait_until(lk, wake, [this] { return m_stop || m_renew_now; });
    if (m_stop) break;
    if (std::exchange(m_renew_now, false)) next_renew = clock::now();
    lk.unlock();
    renew_if_due();
    if (scheduled && clock::now() >= next_check) {
      scheduled_cleanup([&] {
        renew_if_due();
        return !stopping();
      });
      next_check = clock::now() + check_every;
    }
    lk.lock();
  }
}

// Runs the cleanup if it is due for the database (nobody completed one within
// options::cleanup_interval) and nobody else runs it now.
void maintenance::scheduled_cleanup(const std::function<bool()>& between_batches) {
  try {
    std::lock_guard lk(m_cleanup_mutex);
    auto s = settings_for(m_opts.retention);
    s.min_interval = m_opts.cleanup_interval;
    auto report = run_cleanup(m_store, s, m_cleanup_holder, between_batches);
    if (!report.ran) return;
    ++m_counters.cleanup_runs;
    m_counters.cleanup_deleted += report.deleted;
    log(log_level::info, report.summary());
  } catch (const std::exception& e) {
    ++m_counters.cleanup_errors;
    log(log_level::error,
        std::string("scheduled cleanup failed (retried at the next check): ") + e.what());
  }
}

std::size_t maintenance::cleanup_now(std::chrono::seconds keep) {
  auto s = settings_for(keep);
  s.wait_for_other =
      std::max<std::chrono::milliseconds>(m_opts.busy_timeout, std::chrono::seconds(1));
  std::lock_guard lk(m_cleanup_mutex);
  auto report = run_cleanup(m_store, s, m_cleanup_holder);
  if (!report.ran) {
    throw error(errc::database_error,
                "cleanup: another process held the cleanup lease for longer than "
                "options::busy_timeout; try again later (see EventQueueTasks)");
  }
  m_counters.cleanup_deleted += report.deleted;
  return report.deleted;
}

}  // namespace eventq::detail
