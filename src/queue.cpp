#include "eventq/queue.h"

#include <algorithm>
#include <functional>
#include <memory>
#include <system_error>

#include "backends.h"
#include "consumer_set.h"
#include "counters.h"
#include "delivery.h"
#include "dispatcher.h"
#include "group_commit.h"
#include "maintenance.h"
#include "poller.h"
#include "row_check.h"
#include "session_engine.h"
#include "validation.h"

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
    case errc::instance_not_live:
      return "instance_not_live";
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

using detail::check_name;
using detail::check_payload;
using detail::make_keyring;
using detail::validate;
using detail::with_logger;

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

// A queue object composes its parts: maintenance (lease, cleanup), raising (group commit),
// delivery (reading, checking, dispatching pages) and the poller thread that drives delivery.
struct queue::impl {
  options opts;
  std::unique_ptr<storage> store;
  std::shared_ptr<detail::dispatcher> disp;
  detail::queue_counters counters;
  detail::keyring keys;              // immutable after construction
  std::atomic<bool> closing{false};  // ~queue ran (perhaps from a handler): deliver no more
  // Concurrent raises share one transaction (see group_commit.h).
  detail::group_commit committer{
      [this](std::span<const event_record> rows) { return store->append(rows); }};
  // Declared in this order so that they are destroyed in reverse: the poller stops before
  // delivery goes, and the lease is released last.
  detail::control_inbox inbox;  // outlives maint and reader, which share it
  detail::lease_fence fence;    // likewise: whether this process holds the instance name
  std::unique_ptr<detail::maintenance> maint;
  detail::consumer_set sessions;  // shut down by ~queue() before the rest goes
  std::unique_ptr<detail::delivery> reader;
  detail::poller poll_thread{
      *store, opts, counters,
      [this](const std::function<bool()>& keep_going) { reader->poll(keep_going); }};

  impl(std::unique_ptr<storage> s, options o)
      : opts(std::move(o)),
        store(s ? std::move(s)
                : throw error(errc::invalid_argument, "queue: the storage backend is null")),
        disp(std::make_shared<detail::dispatcher>(opts.logger)),
        keys(detail::make_keyring(opts, *store)) {  // may create the database secret: first
    maint = std::make_unique<detail::maintenance>(*store, opts, counters, inbox, fence,
                                                  [this] { store->wake(); });
    poll_thread.set_urgent([this] { return inbox.pending(); });
    reader = std::make_unique<detail::delivery>(*store, opts, keys, *disp, counters, inbox,
                                                sessions, fence, maint->registration().token);
    poll_thread.set_idle([this] { return reader->idle(); });
    maint->start();
  }

  std::mutex session_mutex;  // guards the two below
  unsigned sessions_made = 0;
  std::unique_ptr<eventq::session> default_one;

  eventq::session make_session(session_config cfg) {
    detail::validate_session_config(cfg);
    if (cfg.name.empty()) {
      std::lock_guard lk(session_mutex);
      cfg.name = "session-" + std::to_string(++sessions_made);
    }
    return make_named_session(std::move(cfg));
  }

  // REQUIRES: cfg validated and named.
  eventq::session make_named_session(session_config cfg) {
    auto engine = std::make_shared<detail::session_engine>(
        std::move(cfg), opts.logger,
        [this](std::vector<failure_record> failed) { record_failures(std::move(failed)); });
    // A batch finished: wake the poller so that it stores the cursor (see delivery::idle()).
    engine->set_progress_callback([this] { store->wake(); });
    sessions.attach(engine);
    try {
      engine->start_threads();
    } catch (const std::system_error& e) {
      engine->shut_down();
      throw error(errc::invalid_argument, "session_config::threads: cannot start " +
                                              std::to_string(engine->threads()) +
                                              " handler thread(s): " + e.what());
    }
    return eventq::session(std::move(engine));
  }

  void record_failures(std::vector<failure_record> failed) noexcept {
    for (auto& f : failed) f.instance = opts.instance_name;
    try {
      store->record_failures(failed);
    } catch (const std::exception& e) {
      opts.logger(log_level::error, "could not record " + std::to_string(failed.size()) +
                                        " failed event(s) in EventQueueFailures (they are "
                                        "logged and counted only): " +
                                        e.what());
    }
  }

  std::vector<std::int64_t> raise(std::span<const outgoing_event> events) {
    std::vector<event_record> rows;
    rows.reserve(events.size());
    auto now = std::chrono::system_clock::now();
    for (const auto& e : events) {
      detail::check_payload(e, opts.max_payload_bytes);
      event_record r{0, e.type, e.data, opts.instance_name, e.mode, now, keys.signer.id, {}};
      r.signature = sign(r, keys.signer);
      rows.push_back(std::move(r));
    }
    auto ids = committer.submit(std::move(rows));
    counters.raised += ids.size();
    return ids;
  }
};

queue::queue(std::string_view url, options opts) {
  validate(opts);
  opts = with_logger(std::move(opts));
  auto store = detail::open_storage(url, opts);
  m_impl = std::make_shared<impl>(std::move(store), std::move(opts));
}

queue::queue(std::unique_ptr<storage> backend, options opts) {
  validate(opts);
  m_impl = std::make_shared<impl>(std::move(backend), with_logger(std::move(opts)));
}

queue::~queue() {
  m_impl->closing = true;
  // From a handler on the poller thread, joining would wait for itself: the thread keeps the
  // impl alive (it holds a reference, see queue::start) and ends once the handler returns.
  if (!m_impl->poll_thread.detach_if_own_thread()) stop();
  m_impl->sessions.shut_down_all();  // handler threads joined while the storage still exists
}

session queue::create_session(session_config cfg) { return m_impl->make_session(std::move(cfg)); }

session& queue::default_session() {
  std::lock_guard lk(m_impl->session_mutex);
  if (!m_impl->default_one) {
    session_config cfg;
    cfg.name = "default";
    cfg.threads = 0;
    m_impl->default_one = std::make_unique<session>(m_impl->make_named_session(std::move(cfg)));
  }
  return *m_impl->default_one;
}

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

void queue::start() { m_impl->poll_thread.start(m_impl); }

void queue::stop() {
  m_impl->poll_thread.stop();
  if (m_impl->sessions.snapshot().empty()) return;
  try {
    m_impl->reader->idle_if_free();  // what sessions finished: stored now, not redelivered
  } catch (const std::exception& e) {
    m_impl->opts.logger(log_level::warning,
                        std::string("stop: could not store the cursor (events sessions "
                                    "finished since the last store will be delivered again): ") +
                            e.what());
  }
}

bool queue::running() const noexcept { return m_impl->poll_thread.running(); }

std::size_t queue::poll_once() {
  // A handler may destroy this queue: the copy keeps what the poll uses until it returns.
  auto keep = m_impl;
  return keep->reader->poll([&keep] { return !keep->closing; });
}

std::size_t queue::cleanup(std::chrono::seconds keep) {
  if (keep.count() < 0) {
    throw error(errc::invalid_argument, "cleanup: the age to keep must not be negative");
  }
  return m_impl->maint->cleanup_now(keep);
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
  return m_impl->reader->find_rejected(max_rows);
}

std::vector<rejected_row> find_rejected_rows(storage& backend, const options& opts,
                                             std::size_t max_rows) {
  return detail::scan_rejected(backend, make_keyring(opts, backend), opts, max_rows);
}

std::string storage::get_or_insert_property(std::string_view key, std::string_view) {
  throw error(errc::invalid_argument,
              "the '" + std::string(backend_name()) +
                  "' storage backend cannot keep the property '" + std::string(key) +
                  "': give the queue a secret (options::secret or EVENTQ_SECRET)");
}

bool storage::store_cursor_fenced(std::string_view instance, std::string_view,
                                  std::string_view cursor) {
  store_cursor(instance, cursor);
  return true;
}

read_result storage::read(std::string_view cursor, std::size_t limit, const type_filter&) {
  return read(cursor, limit);
}

bool type_filter::matches(std::string_view type) const noexcept {
  if (all()) return true;
  if (std::binary_search(names.begin(), names.end(), type)) return true;
  return std::any_of(prefixes.begin(), prefixes.end(), [type](const std::string& p) {
    return type.size() > p.size() && type.starts_with(p);
  });
}

type_filter type_filter::of(std::span<const std::string> types, std::string reader) {
  type_filter f;
  f.reader = std::move(reader);
  for (const auto& t : types) {
    if (t.size() >= 2 && t.ends_with(".*")) {
      f.prefixes.push_back(t.substr(0, t.size() - 1));  // keeps the dot
    } else {
      f.names.push_back(t);
    }
  }
  std::sort(f.prefixes.begin(), f.prefixes.end());
  f.prefixes.erase(std::unique(f.prefixes.begin(), f.prefixes.end()), f.prefixes.end());
  // Sorted, a prefix within another ("a." before "a.b.") comes first: keep the shortest.
  std::vector<std::string> kept;
  for (auto& p : f.prefixes) {
    if (kept.empty() || !p.starts_with(kept.back())) kept.push_back(std::move(p));
  }
  f.prefixes = std::move(kept);
  const auto covered = [&f](const std::string& n) {
    return std::any_of(f.prefixes.begin(), f.prefixes.end(), [&n](const std::string& p) {
      return n.size() > p.size() && n.starts_with(p);
    });
  };
  std::erase_if(f.names, covered);
  std::sort(f.names.begin(), f.names.end());
  f.names.erase(std::unique(f.names.begin(), f.names.end()), f.names.end());
  return f;
}

bool storage::take_over_instance(const instance_registration&, std::int64_t,
                                 std::chrono::milliseconds) {
  return false;
}

metrics queue::stats() const { return m_impl->counters.snapshot(); }

const options& queue::config() const noexcept { return m_impl->opts; }

std::string queue::cursor() const { return m_impl->reader->cursor(); }

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
