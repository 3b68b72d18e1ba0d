// eventq/session.h — event sessions (GigaSpaces' data-event sessions): listeners with
// templates, batches cut by size or time, handler threads off the poller, retries, and a
// watermark that keeps the stored cursor behind every event a listener has not finished.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "eventq/event.h"

namespace eventq {

/// What on_lagging is told: a session's oldest unfinished event is older than lag_alarm.
struct lag_info {
  std::string session;                   ///< session_config::name
  std::size_t pending = 0;               ///< events buffered and not finished (per listener)
  std::int64_t oldest_id = 0;            ///< EventQueue.Id of the oldest unfinished event
  std::chrono::milliseconds oldest_age;  ///< its age, from EventQueue.Created to now
};
/// Called once each time a session starts lagging (see session_config::lag_alarm), on a
/// handler thread or the poller thread. Must not throw (a throw is logged) and should be quick.
using lag_function = std::function<void(const lag_info&)>;

/// How a session delivers (GigaSpaces' EventSessionConfig). Every field has a default; the
/// defaults deliver each event alone on one handler thread of the session.
struct session_config {
  /// Name in logs, metrics and EventQueueFailures. Empty: "session-<n>".
  std::string name;

  /// Handler threads of this session. Different listeners' batches run at once on them; one
  /// listener gets its batches one at a time, in row order. 0: run the listeners on the poller
  /// thread after each page, as subscribe() handlers run (the poller wakes for batch_time).
  unsigned threads{1};

  /// A listener gets a batch when this many of its events are pending... (1: no batching).
  std::size_t batch_size{1};

  /// ...or when the oldest of them has waited this long. 0: deliver what is pending at once,
  /// up to batch_size. Waiting longer cuts fewer, larger batches and delays every event more.
  std::chrono::milliseconds batch_time{0};

  /// Events buffered in the session, counted once per listener that wants them. When full the
  /// poller waits for handlers to catch up (backpressure): events are never dropped.
  std::size_t max_pending{10000};

  /// Within one batch, events of equal type and payload are delivered once, the latest kept
  /// (a cache only needs to drop a key once). Counted in session_metrics::coalesced.
  bool coalesce{false};

  /// A batch whose handler throws is retried this many times, waiting retry_backoff (doubled
  /// after each retry, up to max_retry_backoff); then every event of it is recorded as failed
  /// (EventQueueFailures, `eventq failures`), logged, counted, and the session moves on.
  unsigned retries{3};
  std::chrono::milliseconds retry_backoff{100};
  std::chrono::milliseconds max_retry_backoff{5000};

  /// When the oldest unfinished event of the session is older than this (since it was raised),
  /// on_lagging is called and session_metrics::lag_alarms counts it; once per episode (re-armed
  /// when the session catches up). 0: never.
  std::chrono::milliseconds lag_alarm{std::chrono::seconds(60)};
  /// Empty: a lag episode is only logged (a warning) and counted.
  lag_function on_lagging;
};

/// Which events a listener wants (GigaSpaces' template). Plain data.
struct event_filter {
  /// Event type names, or prefixes ending in ".*" ("media.*" matches "media.deleted" and
  /// "media.image.resized", not "media"). Empty: every type. When every listener of the queue
  /// names its types, polls read only those types from the database (see storage::type_filter);
  /// one listener with empty types makes them read every row.
  std::vector<std::string> types;
  /// The payload must contain this JSON (containment as PostgreSQL's jsonb @>: every key of an
  /// object with a contained value, every element of an array in some element, scalars equal).
  /// An empty object matches every payload.
  nlohmann::json match = nlohmann::json::object();

  /// True when `type` is one of types (or types is empty). Thread-safe (const).
  bool matches_type(std::string_view type) const noexcept;
  /// True when the type matches and `payload` contains match.
  bool matches(std::string_view type, const nlohmann::json& payload) const;
};

/// True when `doc` contains `pattern` (see event_filter::match).
bool json_contains(const nlohmann::json& doc, const nlohmann::json& pattern);

/// Counters and gauges of one session, read with session::stats(). Plain data.
struct session_metrics {
  std::size_t pending = 0;                          ///< events buffered or running, per listener
  std::chrono::milliseconds oldest_pending_age{0};  ///< age of the oldest of them (0: none)
  std::uint64_t delivered = 0;    ///< events handed to listeners (per listener, after coalescing)
  std::uint64_t batches = 0;      ///< handler calls that returned (retries not counted)
  std::uint64_t coalesced = 0;    ///< events not delivered because a later equal one was
  std::uint64_t retries = 0;      ///< batch calls repeated after a throw
  std::uint64_t failures = 0;     ///< events recorded as failed (handler gave up, undecodable)
  std::uint64_t undecodable = 0;  ///< events a typed listener could not decode (in failures)
  std::uint64_t lag_alarms = 0;   ///< lag episodes (on_lagging calls)
  std::uint64_t backpressure_waits = 0;  ///< times the poller waited for room in the buffer
};

/// A raw listener: a batch of events, in row order, that match its filter.
using batch_listener = std::function<void(std::span<const event_record> batch)>;

namespace detail {
class session_engine;
/// What the engine hands a listener's wrapper: rows, their parsed payloads, and where a typed
/// wrapper reports the events it could not decode.
struct batch_input {
  std::span<const event_record> rows;
  std::span<const nlohmann::json> payloads;
  std::vector<std::pair<std::size_t, std::string>>* undecodable;
};
using batch_function = std::function<void(const batch_input&)>;
struct session_access;  // for the layers built on sessions (the EPiServer registry)
}  // namespace detail

/// Keeps one listener registered with a session (GigaSpaces' IEventRegistration). Destroying
/// or reset()ting it removes the listener: its events not yet handed to it are dropped (it no
/// longer wants them), and a batch of it running on another thread is waited for, so what the
/// listener captured may be destroyed right after (from inside its own handler it does not
/// wait). Move-only; outliving the session or the queue is safe.
/// Thread-safety: one handle must not be used by two threads at once; distinct handles may.
class [[nodiscard]] registration {
 public:
  registration() = default;
  registration(std::weak_ptr<detail::session_engine> owner, std::uint64_t id)
      : m_owner(std::move(owner)), m_id(id) {}
  registration(registration&& other) noexcept
      : m_owner(std::move(other.m_owner)), m_id(std::exchange(other.m_id, 0)) {}
  registration& operator=(registration&& other) noexcept {
    if (this != &other) {
      reset();
      m_owner = std::move(other.m_owner);
      m_id = std::exchange(other.m_id, 0);
    }
    return *this;
  }
  registration(const registration&) = delete;
  registration& operator=(const registration&) = delete;
  ~registration() { reset(); }

  /// Removes the listener now (no-op if already done). Never throws.
  void reset() noexcept;

  /// True while the listener is registered with an open session.
  bool active() const noexcept;

 private:
  std::weak_ptr<detail::session_engine> m_owner;
  std::uint64_t m_id = 0;
};

/// A group of listeners that share a buffer, handler threads and a delivery policy
/// (session_config), made by queue::create_session() or reached as queue::default_session().
///
/// Delivery is at least once and never skips: the queue stores its cursor only up to the
/// events that every listener of every session has finished (handled, or recorded as failed
/// after its retries), so a crash redelivers at most what was pending. Listeners must be
/// idempotent. Sessions run concurrently with each other; a slow one makes only itself lag
/// (and, once its buffer is full, the poller wait).
///
/// Thread-safety: every call is safe from any thread. Move-only; destroying the handle closes
/// the session (see close()). A session may outlive its queue: it is then closed.
class session {
 public:
  session() = default;
  explicit session(std::shared_ptr<detail::session_engine> engine) : m_engine(std::move(engine)) {}
  session(session&&) noexcept = default;
  session& operator=(session&& other) noexcept;
  session(const session&) = delete;
  session& operator=(const session&) = delete;
  ~session();

  /// Adds a listener that gets batches of the events matching `filter`, from the next page the
  /// poller reads. A listener may remove registrations and raise events; it must not call its
  /// queue's poll_once() (refused with invalid_argument on the poller thread; on a handler
  /// thread it could wait for the poller that waits for this session's buffer). Throws
  /// eventq::error(invalid_argument) for an empty listener, an empty type name or a malformed
  /// prefix, and errc::closed when the session is closed.
  registration add_listener(event_filter filter, batch_listener listener);

  /// Adds a typed listener: events of T's type whose payload contains `match`, decoded with
  /// from_json. An event that does not decode is counted (session_metrics::undecodable) and
  /// recorded as failed; the rest of its batch is delivered. Throws as add_listener().
  template <class T, class F>
  registration add_listener(nlohmann::json match, F listener) {
    static_assert(std::is_invocable_v<F&, std::span<const T>>,
                  "listener must be callable as f(std::span<const T>)");
    event_filter f;
    f.types = {std::string(event_type_name<T>())};
    f.match = std::move(match);
    return add(std::move(f), [h = std::move(listener)](const detail::batch_input& in) mutable {
      std::vector<T> values;
      values.reserve(in.rows.size());
      for (std::size_t i = 0; i < in.rows.size(); ++i) {
        try {
          values.push_back(in.payloads[i].template get<T>());
        } catch (const nlohmann::json::exception& e) {
          in.undecodable->emplace_back(i, e.what());
        }
      }
      if (!values.empty()) h(std::span<const T>(values));
    });
  }
  /// Same, for every event of T's type.
  template <class T, class F>
  registration add_listener(F listener) {
    return add_listener<T>(nlohmann::json::object(), std::move(listener));
  }

  /// Waits until nothing is buffered or running in the session (or `timeout` passes). Returns
  /// true when idle. Events the poller has not read yet are not waited for.
  bool drain(std::chrono::milliseconds timeout);

  /// Closes the session: listeners removed (running batches waited for), buffered events
  /// dropped (so the cursor no longer waits for them), handler threads joined. Idempotent.
  /// REQUIRES: not called from one of this session's handlers.
  void close() noexcept;

  /// This session's counters. Throws nothing; zeros for an empty handle.
  session_metrics stats() const;

  /// session_config::name ("" for an empty handle).
  std::string name() const;

 private:
  friend struct detail::session_access;
  registration add(event_filter filter, detail::batch_function fn);
  std::shared_ptr<detail::session_engine> m_engine;
};

}  // namespace eventq
