// eventq/queue.h — one application instance's handle on a shared event queue.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "eventq/error.h"
#include "eventq/event.h"
#include "eventq/metrics.h"
#include "eventq/options.h"
#include "eventq/session.h"
#include "eventq/storage.h"
#include "eventq/subscription.h"

namespace eventq {

/// Handler for raw events: the row, and its payload already parsed.
using raw_handler = std::function<void(const event_record&, const nlohmann::json&)>;

/// What a Missed notification tells: the instance could not know whether it missed events
/// (rows behind its cursor were cleaned up or deleted, or its cursor lies ahead of the
/// database). Applications flush whatever those events would have invalidated.
struct missed_info {
  std::string reason;      ///< what was detected, for logs
  std::string old_cursor;  ///< the cursor that could not be honoured
};
using missed_handler = std::function<void(const missed_info&)>;

/// A stored row that the poller refuses to deliver (see queue::find_rejected_rows).
struct rejected_row {
  event_record row;     ///< as stored, payload included (it may be hostile: escape it for display)
  std::string verdict;  ///< "unauthentic", "oversized" or "malformed"
  std::string reason;   ///< what is wrong, printable (control and non-ASCII bytes escaped)
};

/// Several events written in one transaction by queue::raise(const batch&): all or none.
/// Not thread-safe; build it on one thread, then raise it.
class batch {
 public:
  /// Adds a typed event (see event_traits); throws errc::encode_failed if to_json fails or
  /// does not produce a JSON object.
  template <class T>
  batch& add(const T& event, raise_mode mode) {
    return add_raw(std::string(event_type_name<T>()), encode(event), mode);
  }
  /// Adds an event by type name and JSON payload (must be an object).
  batch& add_raw(std::string type, const nlohmann::json& data, raise_mode mode);

  std::size_t size() const noexcept { return m_events.size(); }
  bool empty() const noexcept { return m_events.empty(); }
  const std::vector<outgoing_event>& events() const noexcept { return m_events; }
  void clear() noexcept { m_events.clear(); }

  /// Converts a typed event to JSON, turning nlohmann's exceptions into eventq::error.
  template <class T>
  static nlohmann::json encode(const T& event) {
    try {
      return nlohmann::json(event);
    } catch (const nlohmann::json::exception& e) {
      throw error(errc::encode_failed, "cannot encode event of type '" +
                                           std::string(event_type_name<T>()) + "': " + e.what());
    }
  }

 private:
  std::vector<outgoing_event> m_events;
};

/// One application instance's view of an event queue in a shared database.
///
/// Raising writes a row; the poller (start(), or poll_once() from your own loop) reads rows
/// newer than this instance's cursor, hands each to the matching handlers, then stores the
/// cursor. Delivery is at least once: after a crash the last page may be delivered again, so
/// handlers must be idempotent (dropping a cache entry twice is fine).
///
/// Thread-safety: all calls are safe from any thread. Handlers run on the poller thread (or on
/// the thread calling poll_once()), one at a time, in row order; a slow handler delays the rest.
/// Non-copyable and non-movable (the poller thread refers to it); hold it by value or pointer.
class queue {
 public:
  /// Opens the queue at `url` and applies pending schema migrations:
  ///   sqlite:/var/lib/app/events.db   sqlite:relative/path.db   sqlite:///abs/path.db
  ///   postgresql://user@host:5432/db?schema=name   (or a libpq "key=value" string)
  /// Wake-ups from other processes are on by default; `?watch=off` after an SQLite path or
  /// `notify=off` in a PostgreSQL URL leaves this queue polling every poll_interval.
  /// Registers the instance in EventQueueInstances with a lease (options::lease) that a
  /// maintenance thread renews until the queue is destroyed; the same thread runs the scheduled
  /// cleanup (options::cleanup_interval). A new instance's cursor is stored at once
  /// (options::start), so it sees every event raised after this constructor returns, even
  /// before the first poll.
  /// Throws eventq::error: invalid_argument (options), invalid_url, database_unavailable,
  /// schema_too_new, database_error, instance_name_in_use (another live process holds
  /// options::instance_name; nothing is written).
  queue(std::string_view url, options opts);

  /// Same, over a storage backend of your own.
  queue(std::unique_ptr<storage> backend, options opts);

  /// Stops the poller (waiting for a running handler to return, not for the rest of its
  /// page), releases the instance's lease (the name is free at once) and closes the database.
  /// May be called from one of this queue's own handlers: it then returns at once, and the
  /// poller thread (or poll_once()) delivers nothing more, releases the lease and closes the
  /// database once that handler returns.
  ~queue();

  queue(const queue&) = delete;
  queue& operator=(const queue&) = delete;

  /// Raises a typed event. Returns its Id. Durable when it returns. Throws eventq::error
  /// (payload_too_large, encode_failed, database_error...); nothing is written on error.
  template <class T>
  std::int64_t raise(const T& event, raise_mode mode) {
    return raise_raw(event_type_name<T>(), batch::encode(event), mode);
  }

  /// Raises an event by type name with a JSON object payload. Returns its Id.
  std::int64_t raise_raw(std::string_view type, const nlohmann::json& data, raise_mode mode);

  /// Raises all events of `events` in one transaction. Returns their Ids in order.
  std::vector<std::int64_t> raise(const batch& events);

  /// Calls `handler` for every delivered event of type T (decoded with from_json). The handler
  /// takes `const T&`, or `const T&, const event_record&` to see the row too.
  template <class T, class F>
  subscription subscribe(F handler) {
    static_assert(
        std::is_invocable_v<F&, const T&, const event_record&> || std::is_invocable_v<F&, const T&>,
        "handler must be callable as f(const T&) or f(const T&, const event_record&)");
    return subscribe_raw(
        std::string(event_type_name<T>()),
        [h = std::move(handler)](const event_record& row, const nlohmann::json& data) mutable {
          T value = decode<T>(row, data);
          if constexpr (std::is_invocable_v<F&, const T&, const event_record&>) {
            h(value, row);
          } else {
            h(value);
          }
        });
  }

  /// Calls `handler` for every delivered event whose EventType is `type`.
  subscription subscribe_raw(std::string type, raw_handler handler);

  /// Calls `handler` for every delivered event, whatever its type.
  subscription subscribe_all(raw_handler handler);

  /// Creates an event session (see session.h): listeners with templates, batches by size or
  /// time, handler threads of its own. It gets the pages the poller reads from now on; the
  /// stored cursor never passes an event one of its listeners has not finished. Closing or
  /// destroying the returned handle detaches it. Thread-safe. Throws eventq::error
  /// (invalid_argument naming a bad session_config field, or when its handler threads cannot
  /// be started).
  session create_session(session_config cfg = {});

  /// The queue's default session: listeners run on the poller thread (threads 0) one event at
  /// a time, as subscribe() handlers do; made on first use, owned by the queue, valid while
  /// it lives. Thread-safe. Throws what create_session() throws.
  session& default_session();

  /// Calls `handler` when this instance may have missed events (see missed_info).
  subscription on_missed(missed_handler handler);

  /// Starts the background poller thread. Subscribe first: events delivered before a handler
  /// exists are not kept for it. No-op if already running.
  void start();

  /// Stops the poller and waits for it: a handler running now finishes first; the rest of its
  /// page is not delivered now (the cursor stays before that page, so those rows come again
  /// after start(), at least once). Returns within the running handler's call. Idempotent.
  /// From a handler on the poller thread it does not wait: the poller stops once the handler
  /// returns.
  void stop();

  /// True between start() and stop().
  bool running() const noexcept;

  /// Reads and dispatches everything pending now, page by page, storing the cursor after each
  /// page. Returns the number of rows delivered to at least one handler. For applications that
  /// drive their own loop, and for tests. Serialised with the background poller. Throws
  /// eventq::error: invalid_argument when called from a handler of this queue (it would wait
  /// for the poll running that handler), or what the database reports.
  std::size_t poll_once();

  /// Deletes rows older than `keep` in batches of options::cleanup_batch_size, each in its own
  /// short transaction so raisers wait little, and removes instances dead for longer than
  /// options::cleanup_max_age. Keeps rows a live instance has not read yet (up to
  /// cleanup_max_age). Holds the database-wide cleanup lease; waits for another process's
  /// cleanup up to options::busy_timeout. Returns the number of rows deleted.
  std::size_t cleanup(std::chrono::seconds keep);
  /// cleanup(options::retention).
  std::size_t cleanup();

  /// Lists retained rows that the poller would refuse, oldest first, at most `max_rows`: a
  /// signature missing or wrong, a key unknown or past its window (always checked here, even with
  /// options::verify off), a payload over options::max_payload_bytes, or names and payloads that
  /// eventq never writes. Reads the whole table page by page; delivers nothing and leaves this
  /// instance's cursor alone. Serialised with the poller. What `eventq verify` prints: exit
  /// status 0 when the list is empty, 1 otherwise. Throws eventq::error on database failure,
  /// and invalid_argument when called from a handler of this queue.
  std::vector<rejected_row> find_rejected_rows(std::size_t max_rows = 1000);

  /// This queue object's counters.
  metrics stats() const;

  /// The options in force (instance name, intervals...).
  const options& config() const noexcept;

  /// This instance's cursor as last stored.
  std::string cursor() const;

  /// The backend, for tools that need direct access (the CLI, tests).
  storage& backend() noexcept;

  /// Decodes a payload into T, turning nlohmann's exceptions into eventq::error (used by
  /// subscribe<T>; a failure is counted in metrics::undecodable).
  template <class T>
  static T decode(const event_record& row, const nlohmann::json& data) {
    try {
      return data.get<T>();
    } catch (const nlohmann::json::exception& e) {
      throw error(errc::decode_failed, "cannot decode event " + std::to_string(row.id) +
                                           " of type '" + row.type + "': " + e.what());
    }
  }

 private:
  struct impl;
  std::shared_ptr<impl> m_impl;  // shared with the poller thread and a running poll_once()
};

}  // namespace eventq
