// eventq/registry.h — EPiServer's event API on an eventq queue: events named by GUID, obtained
// from a registry, with Raised and Missed handlers, raised with a raiser id and a parameter.
//
//   eventq::event_registry registry(q);
//   eventq::remote_event& ev = registry.get(event_id);
//   auto s = ev.on_raised([](const eventq::event_notification& n) { ... });
//   auto m = ev.on_missed([](const eventq::missed_info&) { ... });
//   ev.raise(raiser_id, nlohmann::json("page 42"));
//
// Each raise writes one row to EventQueue: EventType is the event's GUID in canonical lower-case
// form, InstanceData is {"param": <the parameter>, "raiser_id": "<raiser GUID>"}, raised
// globally (to every other instance) and signed like every row. README, "EPiServer-style
// events", maps each EPiServer concept to its counterpart here.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include <nlohmann/json.hpp>

#include "eventq/error.h"
#include "eventq/event.h"
#include "eventq/guid.h"
#include "eventq/queue.h"
#include "eventq/subscription.h"

namespace eventq {

/// What a Raised handler is told (EPiServer's EventNotificationEventArgs). Plain data.
struct event_notification {
  guid event_id;         ///< the event (EventQueue.EventType)
  guid raiser_id;        ///< who raised it, as given to remote_event::raise()
  nlohmann::json param;  ///< the parameter, as given to raise() (after to_json)
  /// True when raised by this process (the handler runs on the raising thread); false when
  /// read from another instance's row (the handler runs on the queue's poller thread).
  bool local = false;
  std::int64_t row_id = 0;  ///< EventQueue.Id; 0 when nothing was written (remote_events off)
  std::string instance;     ///< the raising instance's name (EventQueue.InstanceName)
};

/// A Raised handler. May run on several threads at once (see remote_event).
using notification_handler = std::function<void(const event_notification&)>;

/// Options of an event_registry.
struct registry_options {
  /// EPiServer's enableRemoteEvents. True: raise() writes a row for the other instances and
  /// the registry receives theirs. False: raise() notifies this process's handlers only and
  /// writes nothing, and no row is read for the registry's events (nor Missed forwarded): events
  /// stay inside the process, as in a single-server site.
  bool remote_events = true;
};

/// A snapshot of a registry's counters since it was made. Plain data.
struct registry_metrics {
  std::uint64_t raised = 0;    ///< raise() calls that succeeded
  std::uint64_t received = 0;  ///< rows of other instances handed to Raised handlers
  /// Rows that were not registry rows (payload without a GUID raiser_id or a param), and
  /// parameters that a typed handler could not decode: no handler saw them (the first kind is
  /// counted in the queue's metrics::undecodable too). Each is logged with its row id.
  std::uint64_t undecodable = 0;
  std::uint64_t handler_errors = 0;  ///< Raised or Missed handlers that threw (logged)
  std::uint64_t missed = 0;          ///< Missed notifications forwarded to the events
};

namespace detail {
class registry_core;
class event_handlers;
}  // namespace detail

/// One event, named by its GUID (EPiServer's EPiServer.Events.Clients.Event). Obtained from
/// event_registry::get(); lives as long as the registry.
///
/// Thread-safety: every call is safe from any thread. Handlers run on the thread that called
/// raise() (local raises) and on the queue's poller thread (other instances' rows), so one
/// handler may run on several threads at once and must be thread-safe; as EPiServer says,
/// events are not processed one at a time, and code must not rely on their order across
/// instances. Handlers must not destroy the registry.
class remote_event {
 public:
  remote_event(const remote_event&) = delete;
  remote_event& operator=(const remote_event&) = delete;
  ~remote_event();

  /// The event's GUID.
  const guid& id() const noexcept { return m_id; }

  /// Calls `handler` for every raise of this event: this process's at once (local == true),
  /// other instances' when the queue's poller reads their rows (local == false), each once.
  /// Compare n.raiser_id with your own raiser id, or test n.local, to skip your own raises.
  /// A handler that throws is logged and counted (registry_metrics::handler_errors); the other
  /// handlers still run, and raise() does not throw for it. Throws errc::invalid_argument if the
  /// handler is empty.
  subscription on_raised(notification_handler handler);

  /// Typed form: decodes the parameter into T with nlohmann from_json first. The handler takes
  /// `const T&`, or `const T&, const event_notification&`. A parameter that does not decode
  /// reaches this handler not at all: it is logged and counted (registry_metrics::undecodable).
  template <class T, class F>
  subscription on_raised(F handler) {
    static_assert(std::is_invocable_v<F&, const T&, const event_notification&> ||
                      std::is_invocable_v<F&, const T&>,
                  "handler must be callable as f(const T&) or f(const T&, const "
                  "event_notification&)");
    return on_raised([h = std::move(handler)](const event_notification& n) mutable {
      T value = decode_param<T>(n);
      if constexpr (std::is_invocable_v<F&, const T&, const event_notification&>) {
        h(value, n);
      } else {
        h(value);
      }
    });
  }

  /// Calls `handler` when the queue reports Missed (see queue::on_missed): this instance may
  /// have missed raises of any event, so flush what they would have invalidated. Every event
  /// object of the registry gets each Missed. Runs on the poller thread. Throws
  /// errc::invalid_argument if the handler is empty.
  subscription on_missed(missed_handler handler);

  /// Raises the event (EPiServer's Raise(raiserId, param)): writes one row for the other
  /// instances (unless registry_options::remote_events is off) and, once it is durable, calls
  /// this process's Raised handlers on the calling thread with local == true. Returns the row's
  /// EventQueue.Id (0 when nothing is written). Throws eventq::error, nothing written and no
  /// handler called: payload_too_large (the row's payload over options::max_payload_bytes;
  /// events should name what changed, not carry it), encode_failed (the parameter cannot be
  /// written as JSON, e.g. invalid UTF-8), closed or database_error (the write failed).
  std::int64_t raise(const guid& raiser_id, const nlohmann::json& param);

  /// Typed form: converts `param` with nlohmann to_json first; errc::encode_failed if that
  /// throws a nlohmann::json exception (other exceptions of your to_json pass through).
  template <class T>
  std::int64_t raise(const guid& raiser_id, const T& param) {
    nlohmann::json j;
    try {
      j = param;
    } catch (const nlohmann::json::exception& e) {
      throw error(errc::encode_failed,
                  "cannot encode the parameter of event " + m_id.to_string() + ": " + e.what());
    }
    return raise(raiser_id, j);
  }

  /// Decodes a notification's parameter into T, turning nlohmann's exceptions into
  /// errc::decode_failed (what the typed on_raised uses).
  template <class T>
  static T decode_param(const event_notification& n) {
    try {
      return n.param.get<T>();
    } catch (const nlohmann::json::exception& e) {
      throw error(errc::decode_failed, "parameter of event " + n.event_id.to_string() +
                                           (n.row_id ? " (row " + std::to_string(n.row_id) + ")"
                                                     : std::string(" (local raise)")) +
                                           " does not decode: " + e.what());
    }
  }

 private:
  friend class detail::registry_core;
  remote_event(const guid& id, detail::registry_core& core);

  guid m_id;
  detail::registry_core& m_core;
  std::shared_ptr<detail::event_handlers> m_handlers;
  subscription m_rows;  // the queue subscription for this GUID's rows; destroyed first
};

/// EPiServer's IEventRegistry over one eventq queue: hands out one remote_event per GUID.
///
/// The registry sits on the queue's public API (subscribe_raw per event GUID, on_missed,
/// raise_raw): the queue must be started (queue::start(), or poll_once() from your loop) for
/// other instances' raises to arrive, and must outlive the registry. Rows of an event arrive
/// only once get() has been called for its GUID (as with any subscription, nothing is kept for
/// a handler that does not exist yet). Use one registry per queue, as EPiServer has one per
/// site: a second registry on the same queue does not see the first one's local raises.
///
/// Over a session (the second constructor), other instances' rows reach the handlers through
/// that session's listeners instead of the poller thread: on its handler threads, in its
/// batches, with its retries and failure records (a handler that throws is counted in
/// registry_metrics::handler_errors and not retried, as over a queue; a row that is no registry
/// row is recorded as failed in EventQueueFailures and counted as undecodable). Raises and
/// Missed still go through the queue.
///
/// Thread-safety: every call is safe from any thread. Non-copyable, non-movable (events refer
/// to it). Destroying it unsubscribes everything, waiting for handlers running on other threads.
class event_registry {
 public:
  /// Throws nothing but std::bad_alloc.
  explicit event_registry(queue& q, registry_options opts = {});

  /// The same, with other instances' rows delivered through `s`, a session of `q`
  /// (queue::create_session()); both must outlive the registry. Throws errc::closed for an
  /// empty or closed session handle (at the first get() of an event with remote events on).
  event_registry(queue& q, session& s, registry_options opts = {});
  ~event_registry();

  event_registry(const event_registry&) = delete;
  event_registry& operator=(const event_registry&) = delete;

  /// The event object for `event_id`, created on first use (EPiServer's Get): the same object
  /// for the same GUID for the registry's lifetime, whichever thread asks.
  remote_event& get(const guid& event_id);

  /// This registry's counters.
  registry_metrics stats() const;

  const registry_options& config() const noexcept;

 private:
  std::unique_ptr<detail::registry_core> m_core;
};

/// The InstanceData of a registry row: {"param": param, "raiser_id": "<canonical GUID>"}. For
/// tools that write registry rows themselves (the CLI's `eventq raise --event-id`).
nlohmann::json registry_payload(const guid& raiser_id, const nlohmann::json& param);

/// Reads a stored row as a registry row (local == false): nullopt unless EventType is a GUID in
/// canonical form and InstanceData a JSON object holding a GUID "raiser_id" and a "param". For
/// tools that show rows (`eventq tail`). Never throws except std::bad_alloc.
std::optional<event_notification> parse_registry_row(const event_record& row);

}  // namespace eventq
