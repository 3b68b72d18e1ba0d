// EPiServer's event API (eventq/registry.h) as a thin layer over a queue's public calls.
#include "eventq/registry.h"

#include <atomic>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "event_handlers.h"

namespace eventq {

namespace detail {

namespace {

constexpr const char* k_param_key = "param";
constexpr const char* k_raiser_key = "raiser_id";

// What the registry needs from what it sits on: a queue, or a session of a queue.
class event_source {
 public:
  virtual ~event_source() = default;
  virtual subscription subscribe(std::string type, raw_handler handler) = 0;
  virtual subscription on_missed(missed_handler handler) = 0;
  virtual std::int64_t raise(std::string_view type, const nlohmann::json& data) = 0;
  virtual const options& config() const = 0;
};

class queue_source : public event_source {
 public:
  explicit queue_source(queue& q) : m_q(q) {}
  subscription subscribe(std::string type, raw_handler handler) override {
    return m_q.subscribe_raw(std::move(type), std::move(handler));
  }
  subscription on_missed(missed_handler handler) override {
    return m_q.on_missed(std::move(handler));
  }
  std::int64_t raise(std::string_view type, const nlohmann::json& data) override {
    return m_q.raise_raw(type, data, raise_mode::globally);
  }
  const options& config() const override { return m_q.config(); }

 protected:
  queue& m_q;
};

// Keeps the session registrations of a registry's events, so that each is held by a
// subscription like the queue's (remote_event knows only subscriptions).
class registrations final : public subscription_owner,
                            public std::enable_shared_from_this<registrations> {
 public:
  subscription keep(registration r) {
    std::lock_guard lk(m_mutex);
    auto id = ++m_last;
    m_held.emplace(id, std::move(r));
    return subscription(weak_from_this(), id);
  }
  void remove(std::uint64_t id) noexcept override {
    registration r;
    {
      std::lock_guard lk(m_mutex);
      auto it = m_held.find(id);
      if (it == m_held.end()) return;
      r = std::move(it->second);
      m_held.erase(it);
    }
    r.reset();  // outside the lock: waits for a running batch of it (unless on its thread)
  }
  bool contains(std::uint64_t id) const noexcept override {
    std::lock_guard lk(m_mutex);
    auto it = m_held.find(id);
    return it != m_held.end() && it->second.active();
  }

 private:
  mutable std::mutex m_mutex;
  std::uint64_t m_last = 0;
  std::unordered_map<std::uint64_t, registration> m_held;
};

}  // namespace

// session::add() for the registry: its listeners get the parsed payloads and report rows that
// are no registry rows as undecodable (recorded as failed) instead of failing their batch.
struct session_access {
  static registration add(session& s, event_filter f, batch_function fn) {
    return s.add(std::move(f), std::move(fn));
  }
};

namespace {

// Rows through a session's listeners; raises and Missed through its queue.
class session_source final : public queue_source {
 public:
  session_source(queue& q, session& s)
      : queue_source(q), m_s(s), m_held(std::make_shared<registrations>()) {}
  subscription subscribe(std::string type, raw_handler handler) override {
    event_filter f;
    f.types = {std::move(type)};
    auto r =
        session_access::add(m_s, std::move(f), [h = std::move(handler)](const batch_input& in) {
          for (std::size_t i = 0; i < in.rows.size(); ++i) {
            try {
              h(in.rows[i], in.payloads[i]);
            } catch (const error& e) {
              if (e.code() != errc::decode_failed) throw;
              in.undecodable->emplace_back(i, e.what());
            }
          }
        });
    return m_held->keep(std::move(r));
  }

 private:
  session& m_s;
  std::shared_ptr<registrations> m_held;
};

// Reads a registry row into `out` (local == false); returns why it is not one, or "".
std::string read_row(const event_record& row, const nlohmann::json& data, event_notification& out) {
  if (row.type.size() != 36) return "EventType is not a GUID";  // most rows: no exception
  try {
    out.event_id = guid::parse(row.type);
  } catch (const error&) {
    return "EventType is not a GUID";
  }
  if (out.event_id.to_string() != row.type) return "EventType is not a GUID in canonical form";
  if (!data.is_object()) return "the payload is not a JSON object";
  auto raiser = data.find(k_raiser_key);
  if (raiser == data.end() || !raiser->is_string()) {
    return "the payload has no \"raiser_id\" string";
  }
  try {
    out.raiser_id = guid::parse(raiser->get_ref<const std::string&>());
  } catch (const error&) {
    return "the payload's \"raiser_id\" is not a GUID";
  }
  auto param = data.find(k_param_key);
  if (param == data.end()) return "the payload has no \"param\"";
  out.param = *param;
  out.local = false;
  out.row_id = row.id;
  out.instance = row.instance;
  return {};
}

}  // namespace

class registry_core {
 public:
  registry_core(std::unique_ptr<event_source> src, registry_options o)
      : source(std::move(src)), opts(o), log(source->config().logger) {
    if (opts.remote_events) {
      missed_rows = source->on_missed([this](const missed_info& info) { forward_missed(info); });
    }
  }

  ~registry_core() {
    // Unsubscribe from the queue first (waiting for deliveries running on the poller thread),
    // then free the events those deliveries would use.
    // Not under `mutex`: a running handler may call get(), even create an event (and
    // subscribe it), which the next round then unsubscribes.
    missed_rows.reset();
    for (;;) {
      std::vector<remote_event*> subscribed;
      {
        std::lock_guard lk(mutex);
        for (auto& [id, ev] : events) {
          if (ev->m_rows.active()) subscribed.push_back(ev.get());
        }
      }
      if (subscribed.empty()) break;
      for (auto* ev : subscribed) ev->m_rows.reset();
    }
  }

  remote_event& get(const guid& id) {
    std::lock_guard lk(mutex);
    auto& slot = events[id];
    if (!slot) {
      try {
        slot.reset(new remote_event(id, *this));
      } catch (...) {
        events.erase(id);
        throw;
      }
    }
    return *slot;
  }

  // Called by the remote_event constructor.
  void attach(remote_event& ev) {
    ev.m_handlers = std::make_shared<event_handlers>(log);
    if (!opts.remote_events) return;
    ev.m_rows = source->subscribe(ev.m_id.to_string(),
                                  [this, &ev](const event_record& row, const nlohmann::json& data) {
                                    deliver(ev, row, data);
                                  });
  }

  // A row of another instance, on the poller thread.
  void deliver(remote_event& ev, const event_record& row, const nlohmann::json& data) {
    event_notification n;
    auto reason = read_row(row, data, n);
    if (!reason.empty()) {
      ++undecodable;
      // The queue logs it with the row id and counts it in metrics::undecodable.
      throw error(errc::decode_failed, "not a registry row for event " + row.type + ": " + reason);
    }
    ++received;
    count(ev.m_handlers->notify(n));
  }

  std::int64_t raise(remote_event& ev, const guid& raiser, const nlohmann::json& param) {
    auto payload = registry_payload(raiser, param);
    std::int64_t row_id = 0;
    if (opts.remote_events) {
      row_id = source->raise(ev.m_id.to_string(), payload);
    } else {
      check_local(ev, payload);
    }
    ++raised;
    event_notification n{ev.m_id, raiser, param, true, row_id, source->config().instance_name};
    count(ev.m_handlers->notify(n));
    return row_id;
  }

  // With remote events off nothing is written, but the same raise fails as it would with them
  // on: a site works the same once remote events are enabled.
  void check_local(const remote_event& ev, const nlohmann::json& payload) const {
    std::size_t bytes = 0;
    try {
      bytes = payload.dump().size();
    } catch (const nlohmann::json::exception& e) {
      throw error(errc::encode_failed, "payload of event type '" + ev.m_id.to_string() +
                                           "' cannot be written as JSON: " + e.what());
    }
    auto limit = source->config().max_payload_bytes;
    if (bytes > limit) {
      throw error(errc::payload_too_large,
                  "event of type '" + ev.m_id.to_string() + "' has a " + std::to_string(bytes) +
                      "-byte payload; the limit is " + std::to_string(limit) +
                      " bytes (options::max_payload_bytes): send an identifier of what "
                      "changed, not the data itself");
    }
  }

  void forward_missed(const missed_info& info) {
    ++missed;
    std::vector<remote_event*> all;
    {
      std::lock_guard lk(mutex);
      all.reserve(events.size());
      for (auto& [id, ev] : events) all.push_back(ev.get());
    }
    for (auto* ev : all) handler_errors += ev->m_handlers->notify_missed(info);
  }

  void count(const event_handlers::outcome& out) {
    handler_errors += out.handler_errors;
    undecodable += out.undecodable;
  }

  std::unique_ptr<event_source> source;
  const registry_options opts;
  const log_function log;
  std::atomic<std::uint64_t> raised{0}, received{0}, undecodable{0}, handler_errors{0}, missed{0};
  std::mutex mutex;  // guards `events` (the map; each event is thread-safe itself)
  std::unordered_map<guid, std::unique_ptr<remote_event>> events;
  subscription missed_rows;
};

}  // namespace detail

remote_event::remote_event(const guid& id, detail::registry_core& core) : m_id(id), m_core(core) {
  core.attach(*this);
}

remote_event::~remote_event() = default;

subscription remote_event::on_raised(notification_handler handler) {
  auto id = m_handlers->add_raised(std::move(handler));
  return subscription(m_handlers, id);
}

subscription remote_event::on_missed(missed_handler handler) {
  auto id = m_handlers->add_missed(std::move(handler));
  return subscription(m_handlers, id);
}

std::int64_t remote_event::raise(const guid& raiser_id, const nlohmann::json& param) {
  return m_core.raise(*this, raiser_id, param);
}

event_registry::event_registry(queue& q, registry_options opts)
    : m_core(std::make_unique<detail::registry_core>(std::make_unique<detail::queue_source>(q),
                                                     opts)) {}

event_registry::event_registry(queue& q, session& s, registry_options opts)
    : m_core(std::make_unique<detail::registry_core>(std::make_unique<detail::session_source>(q, s),
                                                     opts)) {}

event_registry::~event_registry() = default;

remote_event& event_registry::get(const guid& event_id) { return m_core->get(event_id); }

registry_metrics event_registry::stats() const {
  registry_metrics m;
  m.raised = m_core->raised;
  m.received = m_core->received;
  m.undecodable = m_core->undecodable;
  m.handler_errors = m_core->handler_errors;
  m.missed = m_core->missed;
  return m;
}

const registry_options& event_registry::config() const noexcept { return m_core->opts; }

nlohmann::json registry_payload(const guid& raiser_id, const nlohmann::json& param) {
  return nlohmann::json{{detail::k_param_key, param}, {detail::k_raiser_key, raiser_id}};
}

std::optional<event_notification> parse_registry_row(const event_record& row) {
  auto data = nlohmann::json::parse(row.data, nullptr, false);
  if (data.is_discarded()) return std::nullopt;
  event_notification n;
  if (!detail::read_row(row, data, n).empty()) return std::nullopt;
  return n;
}

}  // namespace eventq
