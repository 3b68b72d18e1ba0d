#include "eventq/operations.h"

#include <cstdio>
#include <thread>

#include "backends.h"
#include "eventq/error.h"
#include "row_check.h"
#include "validation.h"

namespace eventq {

std::unique_ptr<storage> open_storage(std::string_view url, const options& opts) {
  return detail::open_storage(url, opts);
}

std::string_view version() noexcept { return EVENTQ_VERSION; }

// ---- follower --------------------------------------------------------------------------------

struct follower::checker {
  detail::keyring keys;
};

follower::follower(std::string_view url, start_position from, const options& opts)
    : m_store(detail::open_storage(url, opts)), m_opts(opts) {
  m_cursor = from == start_position::now ? m_store->head_cursor() : m_store->oldest_cursor();
}

follower::~follower() = default;

read_result follower::next(std::chrono::milliseconds timeout, std::size_t limit) {
  auto page = m_store->read(m_cursor, limit);
  if (page.events.empty() && !page.missed && !page.more) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0 || !m_store->wait_for_change(left)) break;
      page = m_store->read(m_cursor, limit);
      if (!page.events.empty() || page.missed) break;
      m_cursor = page.next_cursor;
    }
  }
  m_cursor = page.next_cursor;
  return page;
}

void follower::interrupt() { m_store->interrupt(); }

std::optional<rejected_row> follower::judge(const event_record& row) {
  if (!m_checker)
    m_checker = std::make_unique<checker>(checker{detail::make_keyring(m_opts, *m_store)});
  auto checked =
      detail::check_row(row, {&m_checker->keys, verify_mode::required, m_opts.max_payload_bytes,
                              std::chrono::system_clock::now()});
  if (checked.verdict == detail::row_verdict::ok) return std::nullopt;
  return rejected_row{row, std::string(detail::to_string(checked.verdict)),
                      std::move(checked.reason)};
}

// ---- cleanup ---------------------------------------------------------------------------------

namespace {

constexpr std::string_view k_cleanup_task = "cleanup";
// The cleanup lease is renewed after every batch; this only bounds how long a crashed
// cleaner keeps others out.
constexpr std::chrono::milliseconds k_cleanup_lease{std::chrono::minutes(2)};

std::string plural(std::size_t n, const char* word) {
  return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
}

}  // namespace

std::string cleanup_report::summary() const {
  char secs[32];
  std::snprintf(secs, sizeof secs, "%.2f s", static_cast<double>(took.count()) / 1000.0);
  if (!ran) {
    return std::string(
               "cleanup: skipped, another process holds the cleanup lease or the last "
               "cleanup is recent (see EventQueueTasks); nothing done, ") +
           secs;
  }
  std::string s = dry_run ? "cleanup (dry run): would delete " : "cleanup: deleted ";
  s += plural(deleted, "row");
  if (!dry_run) s += " in " + std::to_string(batches) + (batches == 1 ? " batch" : " batches");
  s += dry_run ? ", would remove " : ", removed ";
  s += plural(instances_removed, "dead instance");
  if (failures_removed > 0) {
    s += (dry_run ? " and " : ", deleted ") + plural(failures_removed, "old failure record");
  }
  if (!completed) s += ", stopped early";
  return s + ", " + secs;
}

cleanup_report run_cleanup(storage& backend, const cleanup_settings& settings,
                           std::string_view holder, const std::function<bool()>& between_batches) {
  using clock = std::chrono::steady_clock;
  if (settings.keep.count() < 0 || settings.max_age.count() < 0) {
    throw error(errc::invalid_argument, "cleanup: the ages to keep must not be negative");
  }
  if (settings.batch_size < 1) {
    throw error(errc::invalid_argument, "cleanup: the batch size must be at least 1");
  }
  auto t0 = clock::now();
  cleanup_report report;
  report.dry_run = settings.dry_run;
  auto now = std::chrono::system_clock::now();
  expiry bounds{now - settings.keep, now - settings.max_age,
                std::chrono::duration_cast<std::chrono::milliseconds>(settings.keep),
                std::chrono::duration_cast<std::chrono::milliseconds>(settings.max_age)};
  auto took = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - t0);
  };

  if (settings.dry_run) {
    report.ran = true;
    report.completed = true;
    report.deleted = backend.count_expired(bounds);
    for (const auto& i : backend.instances()) {
      if (!i.live && i.lease_until && *i.lease_until < bounds.hard_cutoff)
        ++report.instances_removed;
    }
    report.failures_removed = backend.delete_old_failures(bounds, true);
    report.took = took();
    return report;
  }

  auto deadline = t0 + settings.wait_for_other;
  while (!backend.acquire_task(k_cleanup_task, holder, k_cleanup_lease, settings.min_interval)) {
    if (clock::now() >= deadline) {
      report.took = took();
      return report;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  report.ran = true;
  try {
    for (;;) {
      auto b0 = clock::now();
      auto n = backend.delete_expired(bounds, settings.batch_size);
      auto batch_took = clock::now() - b0;
      report.deleted += n;
      ++report.batches;
      if (n < settings.batch_size) {
        report.completed = true;
        break;
      }
      if (between_batches && !between_batches()) break;
      // Leave the write lock free at least as long as the batch held it.
      std::this_thread::sleep_for(std::max<clock::duration>(settings.pause, batch_took));
      backend.acquire_task(k_cleanup_task, holder, k_cleanup_lease, {});
    }
    if (report.completed) {
      report.instances_removed = backend.remove_dead_instances(bounds);
      report.failures_removed = backend.delete_old_failures(bounds, false);
    }
  } catch (...) {
    report.took = took();
    try {
      backend.release_task(k_cleanup_task, holder, false, {});
    } catch (const std::exception&) {
      // The lease expires by itself; the original failure is the one to report.
    }
    throw;
  }
  report.took = took();
  backend.release_task(k_cleanup_task, holder, report.completed, report.summary());
  return report;
}

// ---- durations -------------------------------------------------------------------------------

std::chrono::seconds parse_duration(std::string_view text) {
  auto fail = [&]() -> std::chrono::seconds {
    throw error(errc::invalid_argument,
                "'" + std::string(text) +
                    "' is not a duration: write a whole number and a unit, e.g. 90s, 30m, 12h, "
                    "1d or 2w");
  };
  if (text == "0") return std::chrono::seconds(0);
  if (text.size() < 2 || text.size() > 12) return fail();
  std::int64_t n = 0;
  for (char c : text.substr(0, text.size() - 1)) {
    if (c < '0' || c > '9') return fail();
    n = n * 10 + (c - '0');
  }
  switch (text.back()) {
    case 's':
      return std::chrono::seconds(n);
    case 'm':
      return std::chrono::minutes(n);
    case 'h':
      return std::chrono::hours(n);
    case 'd':
      return std::chrono::hours(24 * n);
    case 'w':
      return std::chrono::hours(24 * 7 * n);
    default:
      return fail();
  }
}

}  // namespace eventq
