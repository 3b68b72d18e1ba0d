// eventq/storage.h — the interface a database backend implements (EPiServer's "provider").
//
// eventq ships SQLite and PostgreSQL implementations, chosen by the URL given to eventq::queue.
// An application can plug in another by implementing this interface and passing it to the
// queue constructor; the contract tests in tests/contract_suite.h say what it must guarantee.
//
// Cursors are opaque, backend-defined strings that an operator can read (SQLite: the last
// processed Id; PostgreSQL: a transaction snapshot). The queue never interprets them; it only
// passes back what read() returned.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "eventq/event.h"

namespace eventq {

/// What storage::read() returns: one page of rows after a cursor.
struct read_result {
  /// Rows after the cursor, in the order they must be processed, at most `limit` of them.
  std::vector<event_record> events;
  /// The cursor that follows these rows. Store it once the rows are processed.
  std::string next_cursor;
  /// True when more rows are ready right away (the page was cut by the limit).
  bool more = false;
  /// Set when the given cursor could not be honoured exactly (rows behind it were deleted,
  /// or it lies ahead of the database): the reason, for a Missed notification. The rows
  /// returned then start from a well-defined point that the reason names.
  std::optional<std::string> missed;
};

/// A backend. Thread-safety: append(), delete_older_than(), head_cursor() and interrupt() may be
/// called from any thread at any time, concurrently with each other and with the poller's calls
/// (read(), load_cursor(), store_cursor(), wait_for_change()), which one thread at a time makes.
class storage {
 public:
  virtual ~storage() = default;

  /// "sqlite", "postgresql", ...: for logs and the CLI.
  virtual std::string_view backend_name() const = 0;

  /// Writes the events in one transaction, all or none. Ids in the input are ignored; returns
  /// the assigned ids in input order. Durable when it returns.
  virtual std::vector<std::int64_t> append(std::span<const event_record> events) = 0;

  /// A cursor positioned after everything committed so far (a new instance's start "now").
  virtual std::string head_cursor() = 0;

  /// A cursor positioned before the oldest retained row (a new instance's start "oldest").
  virtual std::string oldest_cursor() = 0;

  /// The stored cursor of `instance`, or nullopt if it never stored one.
  virtual std::optional<std::string> load_cursor(std::string_view instance) = 0;

  /// Persists the cursor of `instance` (Properties row EQStamp_<instance>).
  virtual void store_cursor(std::string_view instance, std::string_view cursor) = 0;

  /// Up to `limit` (>= 1) rows after `cursor`, oldest first. A cursor that is not one this
  /// database could have produced is reported through read_result::missed, never thrown.
  virtual read_result read(std::string_view cursor, std::size_t limit) = 0;

  /// Deletes at most `max_rows` rows created before `cutoff`, in one short transaction, and
  /// returns how many it deleted. Never makes a later raise reuse a deleted row's id.
  virtual std::size_t delete_older_than(std::chrono::system_clock::time_point cutoff,
                                        std::size_t max_rows) = 0;

  /// Waits up to `timeout` for a sign that another writer may have committed. Returns true on
  /// such a sign (a hint only: the caller still reads the table), false on timeout or interrupt.
  virtual bool wait_for_change(std::chrono::milliseconds timeout) = 0;

  /// Makes a wait_for_change() in progress on another thread return promptly.
  virtual void interrupt() = 0;

  /// The value of the Properties row `key`; if there is none, first stores `value` there.
  /// Concurrent callers (other processes included) all get the one value that was stored
  /// first. The queue keeps its database secret this way ('EQSecret'). May be called from
  /// any thread. The default throws errc::invalid_argument: a backend without it needs
  /// options::secret or EVENTQ_SECRET.
  virtual std::string get_or_insert_property(std::string_view key, std::string_view value);
};

}  // namespace eventq
