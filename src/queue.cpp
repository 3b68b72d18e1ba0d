#include "eventq/queue.h"

#include <atomic>
#include <condition_variable>
#include <iostream>
#include <mutex>
#include <thread>

#include "backends.h"
#include "dispatcher.h"
#include "group_commit.h"
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
  }
  return "unknown";
}

namespace {

constexpr std::size_t k_max_name_bytes = 200;

void check_name(std::string_view what, std::string_view name) {
  if (name.empty()) {
    throw error(errc::invalid_argument, std::string(what) +
                                            " is empty: give every instance a "
                                            "stable, unique name such as "
                                            "\"web-01\"");
  }
  if (name.size() > k_max_name_bytes) {
    throw error(errc::invalid_argument, std::string(what) + " is " + std::to_string(name.size()) +
                                            " bytes long; the limit is 200");
  }
  for (unsigned char c : name) {
    if (c < 0x20 || c == 0x7f) {
      throw error(errc::invalid_argument,
                  std::string(what) + " contains a control character; use printable text");
    }
  }
}

void validate(const options& o) {
  check_name("options::instance_name", o.instance_name);
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

}  // namespace

batch& batch::add_raw(std::string type, const nlohmann::json& data, raise_mode mode) {
  check_name("event type", type);
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

  std::atomic<std::uint64_t> raised{0}, delivered{0}, handler_errors{0}, undecodable{0},
      unknown_types{0}, missed{0}, polls{0}, poll_errors{0}, cleanup_deleted{0};
  std::atomic<std::int64_t> last_poll_us{0};

  impl(std::unique_ptr<storage> s, options o)
      : opts(std::move(o)),
        store(std::move(s)),
        disp(std::make_shared<detail::dispatcher>(opts.logger)) {
    if (!store) throw error(errc::invalid_argument, "queue: the storage backend is null");
    auto stored = store->load_cursor(opts.instance_name);
    if (stored) {
      cursor = *stored;
    } else {
      cursor = opts.start == start_position::now ? store->head_cursor() : store->oldest_cursor();
      store->store_cursor(opts.instance_name, cursor);
    }
    cursor_copy = cursor;
  }

  void log(log_level level, const std::string& msg) const { opts.logger(level, msg); }

  bool targets_me(const event_record& r) const {
    switch (r.mode) {
      case raise_mode::both:
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
      if (e.data.size() > opts.max_payload_bytes) {
        throw error(errc::payload_too_large,
                    "event of type '" + e.type + "' has a " + std::to_string(e.data.size()) +
                        "-byte payload; the limit is " + std::to_string(opts.max_payload_bytes) +
                        " bytes (options::max_payload_bytes): send an identifier of what "
                        "changed, not the data itself");
      }
      rows.push_back(event_record{0, e.type, e.data, opts.instance_name, e.mode, now});
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
        for (const auto& row : page.events) {
          if (!targets_me(row)) continue;
          auto out = disp->dispatch(row);
          if (out.delivered) ++count;
          if (out.unknown_type) ++unknown_types;
          if (out.undecodable) ++undecodable;
          handler_errors += out.handler_errors;
        }
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
  auto cutoff = std::chrono::system_clock::now() - keep;
  std::size_t total = 0;
  for (;;) {
    auto n = m_impl->store->delete_older_than(cutoff, m_impl->opts.cleanup_batch_size);
    total += n;
    m_impl->cleanup_deleted += n;
    if (n < m_impl->opts.cleanup_batch_size) break;
  }
  return total;
}

std::size_t queue::cleanup() { return cleanup(m_impl->opts.retention); }

metrics queue::stats() const {
  const impl& i = *m_impl;
  metrics m;
  m.raised = i.raised;
  m.delivered = i.delivered;
  m.handler_errors = i.handler_errors;
  m.undecodable = i.undecodable;
  m.unknown_types = i.unknown_types;
  m.missed = i.missed;
  m.polls = i.polls;
  m.poll_errors = i.poll_errors;
  m.cleanup_deleted = i.cleanup_deleted;
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
