#include "maintenance.h"

#include <unistd.h>

#include <random>

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

maintenance::maintenance(storage& store, const options& opts, queue_counters& counters)
    : m_store(store), m_opts(opts), m_counters(counters) {
  m_me =
      instance_registration{m_opts.instance_name, host_name(), static_cast<std::int64_t>(getpid()),
                            std::string(version()), random_token()};
  m_cleanup_holder = m_me.name + "@" + m_me.host + ":" + std::to_string(m_me.pid);
  m_store.register_instance(m_me, m_opts.lease);  // throws instance_name_in_use: nothing written
}

maintenance::~maintenance() {
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
  try {
    if (m_store.renew_instance(m_me.name, m_me.token, m_opts.lease)) {
      ++m_counters.lease_renewals;
      return true;
    }
    // The lease lapsed and the row changed hands (or was deleted by hand): take the name back
    // if nobody holds it now.
    m_store.register_instance(m_me, m_opts.lease);
    ++m_counters.lease_renewals;
    log(log_level::warning, "instance lease had lapsed; registered again");
    return true;
  } catch (const std::exception& e) {
    failure = e.what();
  }
  ++m_counters.lease_renewal_failures;
  log(log_level::warning, "instance lease renewal failed (retrying): " + failure);
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
    m_cv.wait_until(lk, wake, [this] { return m_stop; });
    if (m_stop) break;
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
