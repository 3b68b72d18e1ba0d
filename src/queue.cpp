#include "eventq/queue.h"

#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <future>
#include <iostream>
#include <mutex>
#include <random>
#include <system_error>
#include <thread>

#include "backends.h"
#include "dispatcher.h"
#include "eventq/operations.h"
#include "group_commit.h"
#include "row_check.h"
#include "util.h"

namespace eventq {

std::string_view to_string(errc code) noexcept {
  switch (code) {
    case errc::invalid_argument:
      return "invalid_argument";
    case errc::invalid_url:
      return "invalid_url";
    case errc::payload_too_large:
      return "payload_too_large";
    case errc::encode_failed:
      return "encode_failed";
    case errc::decode_failed:
      return "decode_failed";
    case errc::database_unavailable:
      return "database_unavailable";
    case errc::database_error:
      return "database_error";
    case errc::schema_too_new:
      return "schema_too_new";
    case errc::schema_invalid:
      return "schema_invalid";
    case errc::instance_name_in_use:
      return "instance_name_in_use";
    case errc::closed:
      return "closed";
  }
  return "unknown";
}

std::string_view to_string(raise_mode mode) noexcept {
  switch (mode) {
    case raise_mode::locally:
      return "locally";
    case raise_mode::globally:
      return "globally";
    case raise_mode::both:
      return "both";
    case raise_mode::none:
      return "none";
  }
  return "unknown";
}

namespace {

constexpr std::size_t k_min_secret_bytes = 16;
constexpr const char* k_secret_property = "EQSecret";
// Pages with at least this many rows are checked on two threads (see impl::poll()).
constexpr std::size_t k_parallel_check_rows = 128;

// Counts the large pages being checked in this process; a page gets a helper thread only
// while they number at most half the cores (see impl::poll()).
std::atomic<unsigned> g_pages_checking{0};
struct busy_checking {
  bool counted;
  bool with_helper = false;
  explicit busy_checking(bool large) : counted(large) {
    if (!counted) return;
    unsigned cores = std::max(2u, std::thread::hardware_concurrency());
    with_helper = 2 * (g_pages_checking.fetch_add(1) + 1) <= cores;
  }
  ~busy_checking() {
    if (counted) g_pages_checking.fetch_sub(1);
  }
  busy_checking(const busy_checking&) = delete;
  busy_checking& operator=(const busy_checking&) = delete;
};

// The rule every reader applies (detail::name_problem), so nothing is written that instances
// refuse.
void check_name(std::string_view what, std::string_view name) {
  auto problem = detail::name_problem(what, name);
  if (problem.empty()) return;
  if (name.empty()) {
    problem += ": give every instance a stable, unique name such as \"web-01\"";
  } else if (!detail::valid_utf8(name)) {
    problem += " (every instance would refuse the event); use UTF-8";
  }
  throw error(errc::invalid_argument, problem);
}

void check_key_id(std::string_view what, std::string_view id) {
  bool ok = !id.empty() && id.size() <= 64;
  for (unsigned char c : id) ok = ok && c > 0x20 && c < 0x7f;
  if (!ok) {
    throw error(errc::invalid_argument, std::string(what) +
                                            " must be 1 to 64 printable ASCII characters "
                                            "without spaces, such as \"2025-06\"");
  }
}

void check_secret(std::string_view what, std::string_view secret) {
  if (secret.size() < k_min_secret_bytes) {
    throw error(errc::invalid_argument,
                std::string(what) + " is " + std::to_string(secret.size()) +
                    " bytes long; use at least 16 (ideally 32 random bytes, e.g. "
                    "`openssl rand -hex 32`)");
  }
}

void validate_keys(const options& o) {
  check_key_id("options::key_id", o.key_id);
  if (!o.secret.empty()) check_secret("options::secret", o.secret);
  for (std::size_t i = 0; i < o.accepted_keys.size(); ++i) {
    const auto& k = o.accepted_keys[i];
    std::string what = "options::accepted_keys[" + std::to_string(i) + "]";
    check_key_id(what + ".id", k.id);
    check_secret(what + ".secret", k.secret);
    if (k.id == o.key_id) {
      throw error(errc::invalid_argument,
                  what + ".id is '" + k.id + "', the id of the signing key (options::key_id)");
    }
    for (std::size_t j = 0; j < i; ++j) {
      if (o.accepted_keys[j].id == k.id) {
        throw error(errc::invalid_argument, what + ".id '" + k.id + "' is listed twice");
      }
    }
  }
}

// The signing key: options::secret, else $EVENTQ_SECRET, else the database's own secret
// (created by whichever instance gets there first; all agree on the first one stored).
detail::keyring make_keyring(const options& o, storage& store) {
  detail::keyring keys;
  keys.signer.id = o.key_id;
  keys.accepted = o.accepted_keys;
  if (!o.secret.empty()) {
    keys.signer.secret = o.secret;
    return keys;
  }
  const char* env = std::getenv("EVENTQ_SECRET");
  if (env && *env) {
    check_secret("EVENTQ_SECRET", env);
    keys.signer.secret = env;
    return keys;
  }
  keys.signer.secret = store.get_or_insert_property(k_secret_property, detail::random_secret());
  if (keys.signer.secret.size() < k_min_secret_bytes) {
    throw error(errc::schema_invalid, "the database secret (Properties 'EQSecret') is only " +
                                          std::to_string(keys.signer.secret.size()) +
                                          " bytes long; delete the row to have a new one made");
  }
  return keys;
}

void validate(const options& o) {
  check_name("options::instance_name", o.instance_name);
  validate_keys(o);
  auto positive = [](auto d, const char* name) {
    if (d.count() <= 0) {
      throw error(errc::invalid_argument, std::string("options::") + name + " must be positive");
    }
  };
  positive(o.poll_interval, "poll_interval");
  positive(o.change_check_interval, "change_check_interval");
  positive(o.min_retry_backoff, "min_retry_backoff");
  positive(o.max_retry_backoff, "max_retry_backoff");
  positive(o.retention, "retention");
  positive(o.lease, "lease");
  positive(o.cleanup_max_age, "cleanup_max_age");
  if (o.lease < std::chrono::milliseconds(300)) {
    throw error(errc::invalid_argument,
                "options::lease must be at least 300 ms (it is renewed every third of it)");
  }
  if (o.cleanup_interval.count() < 0 || o.cleanup_pause.count() < 0) {
    throw error(errc::invalid_argument,
                "options::cleanup_interval and options::cleanup_pause must not be negative");
  }
  if (o.busy_timeout.count() < 0) {
    throw error(errc::invalid_argument, "options::busy_timeout must not be negative");
  }
  if (o.page_size < 1 || o.page_size > 100000) {
    throw error(errc::invalid_argument, "options::page_size must be between 1 and 100000");
  }
  if (o.cleanup_batch_size < 1) {
    throw error(errc::invalid_argument, "options::cleanup_batch_size must be at least 1");
  }
  if (o.max_payload_bytes < 2) {
    throw error(errc::invalid_argument, "options::max_payload_bytes must be at least 2 ({})");
  }
  if (o.min_retry_backoff > o.max_retry_backoff) {
    throw error(errc::invalid_argument,
                "options::min_retry_backoff must not exceed options::max_retry_backoff");
  }
}

options with_logger(options o) {
  if (!o.logger) {
    o.logger = [name = o.instance_name](log_level level, std::string_view msg) {
      if (level < log_level::warning) return;
      std::cerr << "eventq[" << name << "] " << (level == log_level::error ? "error" : "warning")
                << ": " << msg << '\n';
    };
  }
  return o;
}

void check_payload(const outgoing_event& e, std::size_t max_payload_bytes) {
  if (e.data.size() > max_payload_bytes) {
    throw error(errc::payload_too_large,
                "event of type '" + e.type + "' has a " + std::to_string(e.data.size()) +
                    "-byte payload; the limit is " + std::to_string(max_payload_bytes) +
                    " bytes (options::max_payload_bytes): send an identifier of what "
                    "changed, not the data itself");
  }
}

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

batch& batch::add_raw(std::string type, const nlohmann::json& data, raise_mode mode) {
  check_name("event type", type);
  if (mode == raise_mode::none) {
    throw error(errc::invalid_argument, "event of type '" + type +
                                            "' is addressed to nobody (raise_mode::none): raise "
                                            "it locally, globally or both");
  }
  if (!data.is_object()) {
    throw error(errc::invalid_argument, "payload of event type '" + type +
                                            "' must be a JSON object, not " + data.type_name());
  }
  std::string text;
  try {
    text = data.dump();
  } catch (const nlohmann::json::exception& e) {
    throw error(errc::encode_failed,
                "payload of event type '" + type + "' cannot be written as JSON: " + e.what());
  }
  m_events.push_back(outgoing_event{std::move(type), std::move(text), mode});
  return *this;
}

namespace {
// Every retained row the poller would refuse, oldest first (verification forced on).
std::vector<rejected_row> scan_rejected(storage& store, const detail::keyring& keys,
                                        const options& opts, std::size_t max_rows) {
  std::vector<rejected_row> out;
  detail::row_check_policy policy{&keys, verify_mode::required, opts.max_payload_bytes,
                                  std::chrono::system_clock::now()};
  std::string at = store.oldest_cursor();
  read_result page;
  do {
    page = store.read(at, opts.page_size);
    for (auto& row : page.events) {
      if (out.size() >= max_rows) return out;
      auto checked = detail::check_row(row, policy);
      if (checked.verdict == detail::row_verdict::ok) continue;
      out.push_back(rejected_row{std::move(row), std::string(detail::to_string(checked.verdict)),
                                 std::move(checked.reason)});
    }
    at = page.next_cursor;
  } while (page.more);
  return out;
}
}  // namespace

struct queue::impl {
  options opts;
  std::unique_ptr<storage> store;
  std::shared_ptr<detail::dispatcher> disp;
  // Concurrent raises share one transaction (see group_commit.h).
  detail::group_commit committer{
      [this](std::span<const event_record> rows) { return store->append(rows); }};

  std::mutex poll_mutex;  // one poll cycle at a time; guards `cursor`
  std::string cursor;
  mutable std::mutex cursor_copy_mutex;
  std::string cursor_copy;  // readable without waiting for a poll cycle

  std::mutex lifecycle_mutex;  // start()/stop()
  std::thread poller;
  std::atomic<bool> stop_requested{false};
  std::atomic<bool> is_running{false};
  std::mutex sleep_mutex;
  std::condition_variable sleep_cv;

  detail::keyring keys;  // immutable after construction

  // The registry lease and scheduled cleanup run on a maintenance thread of their own, so
  // neither slow handlers nor a long poll delay a renewal.
  instance_registration me;
  std::string cleanup_holder;
  std::thread maintainer;
  std::mutex maint_mutex;
  std::condition_variable maint_cv;
  bool maint_stop = false;
  std::mutex cleanup_mutex;  // one cleanup at a time per queue object

  std::atomic<std::uint64_t> raised{0}, delivered{0}, handler_errors{0}, undecodable{0},
      unauthentic{0}, oversized{0}, unknown_types{0}, missed{0}, polls{0}, poll_errors{0},
      cleanup_deleted{0}, cleanup_runs{0}, cleanup_errors{0}, lease_renewals{0},
      lease_renewal_failures{0};
  std::atomic<std::int64_t> last_poll_us{0};
  std::atomic<bool> helper_warned{false};  // a page's helper thread could not be started

  impl(std::unique_ptr<storage> s, options o)
      : opts(std::move(o)),
        store(std::move(s)),
        disp(std::make_shared<detail::dispatcher>(opts.logger)) {
    if (!store) throw error(errc::invalid_argument, "queue: the storage backend is null");
    keys = make_keyring(opts, *store);  // may create the database secret: before registering
    me = instance_registration{opts.instance_name, host_name(), static_cast<std::int64_t>(getpid()),
                               std::string(version()), random_token()};
    cleanup_holder = me.name + "@" + me.host + ":" + std::to_string(me.pid);
    store->register_instance(me, opts.lease);  // throws instance_name_in_use: nothing written
    try {
      auto stored = store->load_cursor(opts.instance_name);
      if (stored) {
        cursor = *stored;
      } else {
        cursor = opts.start == start_position::now ? store->head_cursor() : store->oldest_cursor();
        store->store_cursor(opts.instance_name, cursor);
      }
    } catch (...) {
      release();
      throw;
    }
    cursor_copy = cursor;
    maintainer = std::thread([this] { maintain(); });
  }

  ~impl() {
    {
      std::lock_guard lk(maint_mutex);
      maint_stop = true;
    }
    maint_cv.notify_all();
    if (maintainer.joinable()) maintainer.join();
    release();
  }

  void release() noexcept {
    try {
      store->release_instance(me.name, me.token);
    } catch (const std::exception& e) {
      log(log_level::warning, std::string("could not release the instance lease (it expires by "
                                          "itself within options::lease): ") +
                                  e.what());
    }
  }

  bool stopping() {
    std::lock_guard lk(maint_mutex);
    return maint_stop;
  }

  // Renews the lease; on failure logs, counts, tells on_renewal_failed and returns false.
  bool renew() {
    std::string failure;
    try {
      if (store->renew_instance(me.name, me.token, opts.lease)) {
        ++lease_renewals;
        return true;
      }
      // The lease lapsed and the row changed hands (or was deleted by hand): take the name back
      // if nobody holds it now.
      store->register_instance(me, opts.lease);
      ++lease_renewals;
      log(log_level::warning, "instance lease had lapsed; registered again");
      return true;
    } catch (const std::exception& e) {
      failure = e.what();
    }
    ++lease_renewal_failures;
    log(log_level::warning, "instance lease renewal failed (retrying): " + failure);
    if (opts.on_renewal_failed) {
      try {
        opts.on_renewal_failed(failure);
      } catch (const std::exception& e) {
        log(log_level::error, std::string("options::on_renewal_failed threw: ") + e.what());
      } catch (...) {
        log(log_level::error, "options::on_renewal_failed threw a non-std exception");
      }
    }
    return false;
  }

  cleanup_settings settings_for(std::chrono::seconds keep) const {
    cleanup_settings s;
    s.keep = keep;
    s.max_age = opts.cleanup_max_age;
    s.batch_size = opts.cleanup_batch_size;
    s.pause = opts.cleanup_pause;
    return s;
  }

  void maintain() {
    using clock = std::chrono::steady_clock;
    const auto renew_every = opts.lease / 3;
    const auto retry_every =
        std::min<std::chrono::milliseconds>(renew_every, std::chrono::seconds(1));
    const bool scheduled = opts.cleanup_interval.count() > 0;
    // Whether the cleanup is due is asked of the database (one statement) every tenth of the
    // interval, at most every 10 minutes: a daily cleanup starts within 10 minutes of being due,
    // and an idle instance spends nearly all its queries on polls.
    const auto check_every = std::min<std::chrono::milliseconds>(
        scheduled ? std::max<std::chrono::milliseconds>(opts.cleanup_interval / 10,
                                                        std::chrono::milliseconds(100))
                  : std::chrono::minutes(10),
        std::chrono::minutes(10));
    auto next_renew = clock::now() + renew_every;
    auto next_check = clock::now() + check_every;
    auto renew_if_due = [&] {
      auto now = clock::now();
      if (now >= next_renew) next_renew = now + (renew() ? renew_every : retry_every);
    };
    std::unique_lock lk(maint_mutex);
    while (!maint_stop) {
      auto wake = scheduled ? std::min(next_renew, next_check) : next_renew;
      maint_cv.wait_until(lk, wake, [this] { return maint_stop; });
      if (maint_stop) break;
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
  void scheduled_cleanup(const std::function<bool()>& between_batches) {
    try {
      std::lock_guard lk(cleanup_mutex);
      auto s = settings_for(opts.retention);
      s.min_interval = opts.cleanup_interval;
      auto report = run_cleanup(*store, s, cleanup_holder, between_batches);
      if (!report.ran) return;
      ++cleanup_runs;
      cleanup_deleted += report.deleted;
      log(log_level::info, report.summary());
    } catch (const std::exception& e) {
      ++cleanup_errors;
      log(log_level::error,
          std::string("scheduled cleanup failed (retried at the next check): ") + e.what());
    }
  }

  void log(log_level level, const std::string& msg) const { opts.logger(level, msg); }

  bool targets_me(const event_record& r) const {
    switch (r.mode) {
      case raise_mode::both:
      case raise_mode::none:  // meant for nobody: every instance refuses and counts it
        return true;
      case raise_mode::globally:
        return r.instance != opts.instance_name;
      case raise_mode::locally:
        return r.instance == opts.instance_name;
    }
    return false;
  }

  std::vector<std::int64_t> raise(std::span<const outgoing_event> events) {
    std::vector<event_record> rows;
    rows.reserve(events.size());
    auto now = std::chrono::system_clock::now();
    for (const auto& e : events) {
      check_payload(e, opts.max_payload_bytes);
      event_record r{0, e.type, e.data, opts.instance_name, e.mode, now, keys.signer.id, {}};
      r.signature = sign(r, keys.signer);
      rows.push_back(std::move(r));
    }
    auto ids = committer.submit(std::move(rows));
    raised += ids.size();
    return ids;
  }

  // One poll cycle: pages until drained (or until `keep_going` says stop). Returns rows
  // delivered to at least one handler.
  template <class Pred>
  std::size_t poll(Pred keep_going) {
    std::lock_guard lk(poll_mutex);
    auto t0 = std::chrono::steady_clock::now();
    ++polls;
    std::size_t count = 0;
    read_result page;
    do {
      page = store->read(cursor, opts.page_size);
      {
        detail::dispatcher::scope scope(*disp);
        if (page.missed) {
          ++missed;
          log(log_level::warning, "missed events: " + *page.missed);
          handler_errors += disp->dispatch_missed(missed_info{*page.missed, cursor});
        }
        count += deliver(page.events);
      }
      if (page.next_cursor != cursor) {
        store->store_cursor(opts.instance_name, page.next_cursor);
        cursor = page.next_cursor;
        std::lock_guard c(cursor_copy_mutex);
        cursor_copy = cursor;
      }
    } while (page.more && keep_going());
    delivered += count;
    last_poll_us =
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0)
            .count();
    return count;
  }

  // Checks and delivers one page's rows in order; returns those delivered to a handler.
  // REQUIRES: poll_mutex held, inside a dispatcher scope.
  //
  // Checking a row (parsing its JSON, verifying its signature) is most of a poll's work. On a
  // large page (a backlog) a helper thread checks the second half while this thread checks and
  // delivers the first; delivery stays on this thread, in order. Only while the process checks
  // few large pages at once: with a page per core already (several instances draining), a
  // helper would only take turns with them.
  std::size_t deliver(const std::vector<event_record>& rows) {
    auto policy = check_policy(opts.verify);
    std::vector<detail::checked_row> checked(rows.size());
    auto check = [&](std::size_t i) {
      if (targets_me(rows[i])) checked[i] = detail::check_row(rows[i], policy);
    };
    std::size_t split = rows.size();
    busy_checking busy(rows.size() >= k_parallel_check_rows);
    std::future<void> helper;  // destroyed (joined) before `checked`
    if (busy.with_helper) {
      try {
        helper = std::async(std::launch::async, [&check, half = rows.size() / 2, n = rows.size()] {
          for (std::size_t i = half; i < n; ++i) check(i);
        });
        split = rows.size() / 2;
      } catch (const std::system_error& e) {  // no thread to be had: check on this one
        // Nothing is lost (the page is checked on this thread); said once per queue.
        if (!helper_warned.exchange(true)) {
          log(log_level::warning,
              std::string("cannot start a thread to check a large page, checking on the "
                          "poller's alone (said once): ") +
                  e.what());
        }
      }
    }
    std::size_t count = 0;
    for (std::size_t i = 0; i < rows.size(); ++i) {
      if (i < split) {
        check(i);
      } else if (i == split) {
        helper.get();  // rethrows what checking threw
      }
      const auto& row = rows[i];
      if (!targets_me(row)) continue;
      if (checked[i].verdict != detail::row_verdict::ok) {
        count_refusal(row, checked[i]);
        continue;
      }
      auto out = disp->dispatch(row, checked[i].data);
      checked[i] = {};  // a page of large payloads is not held parsed in full
      if (out.delivered) ++count;
      if (out.unknown_type) ++unknown_types;
      if (out.undecodable) ++undecodable;
      handler_errors += out.handler_errors;
    }
    return count;
  }

  detail::row_check_policy check_policy(verify_mode verify) const {
    return detail::row_check_policy{&keys, verify, opts.max_payload_bytes,
                                    std::chrono::system_clock::now()};
  }

  void count_refusal(const event_record& row, const detail::checked_row& checked) {
    switch (checked.verdict) {
      case detail::row_verdict::unauthentic:
        ++unauthentic;
        break;
      case detail::row_verdict::oversized:
        ++oversized;
        break;
      case detail::row_verdict::malformed:
      case detail::row_verdict::ok:
        ++undecodable;
        break;
    }
    log(log_level::error, "event " + std::to_string(row.id) + " skipped, " +
                              std::string(detail::to_string(checked.verdict)) + ": " +
                              checked.reason);
  }

  std::vector<rejected_row> find_rejected(std::size_t max_rows) {
    std::lock_guard lk(poll_mutex);
    return scan_rejected(*store, keys, opts, max_rows);
  }

  void sleep_unless_stopped(std::chrono::milliseconds d) {
    std::unique_lock lk(sleep_mutex);
    sleep_cv.wait_for(lk, d, [this] { return stop_requested.load(); });
  }

  void run() {
    auto backoff = opts.min_retry_backoff;
    auto keep_going = [this] { return !stop_requested.load(); };
    while (!stop_requested) {
      try {
        poll(keep_going);
        backoff = opts.min_retry_backoff;
      } catch (const std::exception& e) {
        ++poll_errors;
        log(log_level::error, std::string("poll failed, retrying in ") +
                                  std::to_string(backoff.count()) + " ms: " + e.what());
        sleep_unless_stopped(backoff);
        backoff = std::min(backoff * 2, opts.max_retry_backoff);
        continue;
      } catch (...) {
        ++poll_errors;
        log(log_level::error, "poll failed with an exception that is not a std::exception");
        sleep_unless_stopped(backoff);
        backoff = std::min(backoff * 2, opts.max_retry_backoff);
        continue;
      }
      auto deadline = std::chrono::steady_clock::now() + opts.poll_interval;
      while (!stop_requested) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) break;
        try {
          if (store->wait_for_change(left)) break;
        } catch (const std::exception& e) {
          ++poll_errors;
          log(log_level::error, std::string("waiting for changes failed: ") + e.what());
          sleep_unless_stopped(std::min(left, opts.min_retry_backoff));
        }
      }
    }
  }
};

queue::queue(std::string_view url, options opts) {
  validate(opts);
  opts = with_logger(std::move(opts));
  auto store = detail::open_storage(url, opts);
  m_impl = std::make_unique<impl>(std::move(store), std::move(opts));
}

queue::queue(std::unique_ptr<storage> backend, options opts) {
  validate(opts);
  m_impl = std::make_unique<impl>(std::move(backend), with_logger(std::move(opts)));
}

queue::~queue() { stop(); }

std::int64_t queue::raise_raw(std::string_view type, const nlohmann::json& data, raise_mode mode) {
  batch b;
  b.add_raw(std::string(type), data, mode);
  return m_impl->raise(b.events()).front();
}

std::vector<std::int64_t> queue::raise(const batch& events) {
  if (events.empty()) return {};
  return m_impl->raise(events.events());
}

subscription queue::subscribe_raw(std::string type, raw_handler handler) {
  check_name("event type", type);
  auto id = m_impl->disp->add(std::move(type), std::move(handler));
  return subscription(m_impl->disp, id);
}

subscription queue::subscribe_all(raw_handler handler) {
  auto id = m_impl->disp->add(std::string(), std::move(handler));
  return subscription(m_impl->disp, id);
}

subscription queue::on_missed(missed_handler handler) {
  auto id = m_impl->disp->add_missed(std::move(handler));
  return subscription(m_impl->disp, id);
}

void queue::start() {
  std::lock_guard lk(m_impl->lifecycle_mutex);
  if (m_impl->is_running) return;
  m_impl->stop_requested = false;
  m_impl->poller = std::thread([this] { m_impl->run(); });
  m_impl->is_running = true;
}

void queue::stop() {
  std::lock_guard lk(m_impl->lifecycle_mutex);
  if (!m_impl->is_running) return;
  {
    std::lock_guard s(m_impl->sleep_mutex);
    m_impl->stop_requested = true;
  }
  m_impl->sleep_cv.notify_all();
  m_impl->store->interrupt();
  m_impl->poller.join();
  m_impl->is_running = false;
}

bool queue::running() const noexcept { return m_impl->is_running; }

std::size_t queue::poll_once() {
  return m_impl->poll([] { return true; });
}

std::size_t queue::cleanup(std::chrono::seconds keep) {
  if (keep.count() < 0) {
    throw error(errc::invalid_argument, "cleanup: the age to keep must not be negative");
  }
  auto s = m_impl->settings_for(keep);
  s.wait_for_other =
      std::max<std::chrono::milliseconds>(m_impl->opts.busy_timeout, std::chrono::seconds(1));
  std::lock_guard lk(m_impl->cleanup_mutex);
  auto report = run_cleanup(*m_impl->store, s, m_impl->cleanup_holder);
  if (!report.ran) {
    throw error(errc::database_error,
                "cleanup: another process held the cleanup lease for longer than "
                "options::busy_timeout; try again later (see EventQueueTasks)");
  }
  m_impl->cleanup_deleted += report.deleted;
  return report.deleted;
}

std::int64_t raise_as(storage& backend, const options& opts, std::string_view type,
                      const nlohmann::json& data, raise_mode mode) {
  check_name("instance name", opts.instance_name);
  batch b;
  b.add_raw(std::string(type), data, mode);
  const auto& e = b.events().front();
  check_payload(e, opts.max_payload_bytes);
  auto keys = make_keyring(opts, backend);
  event_record row{0,
                   e.type,
                   e.data,
                   opts.instance_name,
                   e.mode,
                   std::chrono::system_clock::now(),
                   keys.signer.id,
                   {}};
  row.signature = sign(row, keys.signer);
  return backend.append(std::span<const event_record>(&row, 1)).front();
}

std::size_t queue::cleanup() { return cleanup(m_impl->opts.retention); }

std::vector<rejected_row> queue::find_rejected_rows(std::size_t max_rows) {
  return m_impl->find_rejected(max_rows);
}

detail::keyring detail::keyring_for(const options& opts, storage& backend) {
  return make_keyring(opts, backend);
}

std::vector<rejected_row> find_rejected_rows(storage& backend, const options& opts,
                                             std::size_t max_rows) {
  return scan_rejected(backend, make_keyring(opts, backend), opts, max_rows);
}

std::string storage::get_or_insert_property(std::string_view key, std::string_view) {
  throw error(errc::invalid_argument,
              "the '" + std::string(backend_name()) +
                  "' storage backend cannot keep the property '" + std::string(key) +
                  "': give the queue a secret (options::secret or EVENTQ_SECRET)");
}

metrics queue::stats() const {
  const impl& i = *m_impl;
  metrics m;
  m.raised = i.raised;
  m.delivered = i.delivered;
  m.handler_errors = i.handler_errors;
  m.undecodable = i.undecodable;
  m.unauthentic = i.unauthentic;
  m.oversized = i.oversized;
  m.unknown_types = i.unknown_types;
  m.missed = i.missed;
  m.polls = i.polls;
  m.poll_errors = i.poll_errors;
  m.cleanup_deleted = i.cleanup_deleted;
  m.cleanup_runs = i.cleanup_runs;
  m.cleanup_errors = i.cleanup_errors;
  m.lease_renewals = i.lease_renewals;
  m.lease_renewal_failures = i.lease_renewal_failures;
  m.last_poll_duration = std::chrono::microseconds(i.last_poll_us.load());
  return m;
}

const options& queue::config() const noexcept { return m_impl->opts; }

std::string queue::cursor() const {
  std::lock_guard lk(m_impl->cursor_copy_mutex);
  return m_impl->cursor_copy;
}

storage& queue::backend() noexcept { return *m_impl->store; }

void subscription::reset() noexcept {
  if (m_id == 0) return;
  if (auto d = m_owner.lock()) d->remove(m_id);
  m_owner.reset();
  m_id = 0;
}

bool subscription::active() const noexcept {
  if (m_id == 0) return false;
  auto d = m_owner.lock();
  return d && d->contains(m_id);
}

}  // namespace eventq
