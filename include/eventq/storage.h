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
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "eventq/event.h"
#include "eventq/metrics.h"
#include "eventq/options.h"

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
  /// Set when the read found something an operator should know that lost no event (the
  /// database failed over and the cursor continues on the new primary): logged as a warning.
  std::optional<std::string> notice;
  /// Rows after the cursor, up to next_cursor, that a type_filter left out and that are
  /// addressed to its `reader` (see type_filter), where the backend counts them (SQLite does;
  /// PostgreSQL and the unfiltered read() leave 0). The queue counts them as rows of a type
  /// nobody subscribed to (metrics::unknown_types), as if it had read them.
  std::size_t skipped = 0;
};

/// The event types a poll asks for (storage::read() with a filter): the rows whose EventType
/// is one of `names`, or starts with one of `prefixes` (each ends in '.': "media." from a
/// listener's "media.*"). Empty (both lists): every row. A backend may return more rows than
/// the filter asks for (the queue still checks every row's type itself, so delivery never
/// depends on it), but never fewer, and its next_cursor still passes the rows it left out.
/// The queue builds one only when every subscriber and session listener restricts its types.
struct type_filter {
  std::vector<std::string> names;     ///< exact type names, sorted, unique
  std::vector<std::string> prefixes;  ///< sorted, unique, none within another
  /// The reading instance (options::instance_name): read_result::skipped counts the rows left
  /// out that are addressed to it (raised globally by another instance, locally by it, or both).
  std::string reader;

  /// True when it asks for every row.
  bool all() const noexcept { return names.empty() && prefixes.empty(); }
  /// True when a row of `type` is asked for.
  bool matches(std::string_view type) const noexcept;
  /// From listeners' types (names, or prefixes ending in ".*"): normalised, names within a
  /// prefix dropped. An empty `types` gives a filter that asks for every row.
  static type_filter of(std::span<const std::string> types, std::string reader = {});
};

/// What an instance records about itself in the registry when it opens a queue.
struct instance_registration {
  std::string name;  ///< options::instance_name
  std::string host;  ///< the host name of the process
  std::int64_t pid = 0;
  std::string version;  ///< the eventq version the process runs
  std::string token;    ///< unique per opening: only its holder renews or releases the lease
};

/// One instance as the registry and its cursor describe it (storage::instances()).
struct instance_info {
  std::string name;
  std::string host;  ///< empty for instances that last ran before the registry existed
  std::int64_t pid = 0;
  std::string version;
  std::optional<std::chrono::system_clock::time_point> started;    ///< its latest opening
  std::optional<std::chrono::system_clock::time_point> heartbeat;  ///< its latest lease renewal
  std::optional<std::chrono::system_clock::time_point> lease_until;
  /// The lease has not expired by the database's clock: the instance is running.
  bool live = false;
  std::optional<std::string> cursor;  ///< its stored cursor (nullopt: none stored)
  /// Rows after its cursor, addressed to it or not (0: caught up); nullopt when the cursor is
  /// missing or unreadable.
  std::optional<std::int64_t> behind;
  /// Seconds since the heartbeat, by the database's clock.
  std::optional<double> heartbeat_age_seconds;
  /// Its counters (queue::stats()) as of its latest renewal; nullopt: none reported yet.
  std::optional<metrics> counters;
};

/// What an operator asks of one instance (`eventq resync`, `eventq replay`).
enum class control_action {
  resync,  ///< raise Missed ("resync requested by an operator") and continue from the head
  replay,  ///< deliver again every retained event raised since `since`, then continue
};

/// An operator's request to one instance, and what became of it (EventQueueControl).
struct control_request {
  std::int64_t id = 0;
  std::string instance;
  control_action action = control_action::resync;
  std::optional<std::chrono::system_clock::time_point> since;  ///< replay only
  std::string requested_by;
  std::chrono::system_clock::time_point requested;
  /// When the instance took it (at a lease renewal); nullopt: still pending.
  std::optional<std::chrono::system_clock::time_point> picked_up;
  /// When it was carried out; `result` says how ("resynced: ...", "failed: ...").
  std::optional<std::chrono::system_clock::time_point> done;
  std::string result;
};

/// "resync" or "replay".
std::string_view to_string(control_action a) noexcept;

/// An event a session gave up on (EventQueueFailures): its listener threw on every attempt,
/// or a typed listener could not decode it. What `eventq failures` lists.
struct failure_record {
  std::int64_t id = 0;        ///< EventQueueFailures.Id (assigned when stored)
  std::string instance;       ///< the instance whose listener failed
  std::string session;        ///< session_config::name
  std::int64_t event_id = 0;  ///< EventQueue.Id of the event
  std::string event_type;
  std::string error;  ///< the last error, printable
  int attempts = 0;   ///< calls made (1 + retries; 1 for an undecodable event)
  std::chrono::system_clock::time_point failed_at;
};

/// Rows of one event type (storage::summary()).
struct type_summary {
  std::string type;
  std::int64_t rows = 0;
  std::chrono::system_clock::time_point oldest, newest;  ///< Created of the oldest/newest row
};

/// The table at a glance (storage::summary()): what `eventq stats` prints.
struct queue_summary {
  int schema_version = 0;
  std::int64_t rows = 0;
  std::optional<std::chrono::system_clock::time_point> oldest, newest;  ///< nullopt: empty
  std::optional<std::int64_t> min_id, max_id;
  std::vector<type_summary> types;                                    ///< by type name
  std::optional<std::chrono::system_clock::time_point> last_cleanup;  ///< latest completed
  std::string last_cleanup_result;                                    ///< its one-line summary
};

/// Which rows cleanup may delete (storage::delete_expired()): those created before `cutoff`
/// that no live instance still has to process, and every row created before `hard_cutoff`.
struct expiry {
  std::chrono::system_clock::time_point cutoff;
  std::chrono::system_clock::time_point hard_cutoff;
  /// The same bounds as ages (negative: not given). A backend whose database has a clock of
  /// its own (PostgreSQL's now()) measures them from that clock, so that a cleanup host with a
  /// wrong clock cannot delete early; the time points above are the caller's clock.
  std::chrono::milliseconds keep{-1};
  std::chrono::milliseconds max_age{-1};
};

/// A backend. Thread-safety: every call except the poller's (read(), load_cursor(),
/// store_cursor(), store_cursor_fenced(), wait_for_change(), which one thread at a time makes) may
/// be made from any thread at any time, concurrently with each other and with the poller's calls.
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

  /// Persists the cursor of `instance` (Properties row EQStamp_<instance>), unconditionally:
  /// what tools and backends without a registry fence use.
  virtual void store_cursor(std::string_view instance, std::string_view cursor) = 0;

  /// Persists the cursor of `instance` only while its registry row (EventQueueInstances) holds
  /// `token` (instance_registration::token), checked in the same statement as the write: a
  /// process that lost its name to another (paused or cut off for longer than its lease)
  /// cannot move the new holder's cursor. Returns false, writing nothing, when the name is held
  /// by another token or not registered. The queue stores its cursors through this call. The
  /// default calls store_cursor() and returns true (no fence): a third-party backend should
  /// override it.
  virtual bool store_cursor_fenced(std::string_view instance, std::string_view token,
                                   std::string_view cursor);

  /// Up to `limit` (>= 1) rows after `cursor`, oldest first. A cursor that is not one this
  /// database could have produced is reported through read_result::missed, never thrown.
  virtual read_result read(std::string_view cursor, std::size_t limit) = 0;

  /// read() of the rows `filter` asks for: up to `limit` of them after `cursor`, oldest first,
  /// and a next_cursor past the rows it left out too (rows deleted among those are reported
  /// through read_result::missed as read() does). With filter.all(), read() itself. The queue
  /// reads through this call; the default calls read(cursor, limit), unfiltered, which is
  /// always correct (the queue checks types itself), only slower: a backend should override
  /// it where its database can select by type through an index.
  virtual read_result read(std::string_view cursor, std::size_t limit, const type_filter& filter);

  /// Waits up to `timeout` for a sign that another writer may have committed. Returns true on
  /// such a sign (a hint only: the caller still reads the table), false on timeout or interrupt.
  virtual bool wait_for_change(std::chrono::milliseconds timeout) = 0;

  /// Makes a wait_for_change() in progress on another thread return promptly, and a read()
  /// or store_cursor() in progress fail promptly where the backend can cancel it (PostgreSQL
  /// does): the poller calls it from stop().
  virtual void interrupt() = 0;

  /// Makes a wait_for_change() in progress on another thread return promptly, and cancels
  /// nothing: the queue calls it when work for the poller arrives (a session finished a batch,
  /// an operator's request). The default calls interrupt(); a backend whose interrupt()
  /// cancels reads must override it.
  virtual void wake() { interrupt(); }

  /// The value of the Properties row `key`; if there is none, first stores `value` there.
  /// Concurrent callers (other processes included) all get the one value that was stored
  /// first. The queue keeps its database secret this way ('EQSecret'). May be called from
  /// any thread. The default throws errc::invalid_argument: a backend without it needs
  /// options::secret or EVENTQ_SECRET.
  virtual std::string get_or_insert_property(std::string_view key, std::string_view value);

  /// Records events that a session gave up on (EventQueueFailures), in one transaction. May
  /// be called from any thread. The default throws errc::invalid_argument (the queue then logs
  /// and counts the failures only).
  virtual void record_failures(std::span<const failure_record> failures);

  /// The latest `limit` failure records, newest first; only those of `instance` unless it is
  /// empty. The default throws errc::invalid_argument.
  virtual std::vector<failure_record> failures(std::size_t limit, std::string_view instance);

  /// How many failure records there are, of every instance (a count of the table: the status
  /// page and /metrics read it). The default throws errc::invalid_argument.
  virtual std::int64_t failure_count();

  /// Deletes the failure records older than bounds.hard_cutoff (measured as bounds.max_age
  /// back from the database's clock where it has one, see expiry); with `dry_run`, only counts
  /// them. Returns how many. Called by cleanup. The default returns 0 (no records kept).
  virtual std::size_t delete_old_failures(const expiry& bounds, bool dry_run);
  // ---- operations: schema, instance registry, task leases, cleanup, statistics ----
  // Lease times are judged by the database's clock where it has one (PostgreSQL's now()), so
  // instances on hosts with skewed clocks agree on who is live.

  /// The schema version of the database (max EventQueueSchema.Version).
  virtual int schema_version() = 0;

  /// Records `who` in the registry (EventQueueInstances) with a lease of `lease` from now.
  /// Throws eventq::error(instance_name_in_use) naming the holder when another token holds an
  /// unexpired lease on the name; nothing is written then. An expired lease is taken over.
  virtual void register_instance(const instance_registration& who,
                                 std::chrono::milliseconds lease) = 0;

  /// Records `who` as register_instance() does, but also takes the name over from an
  /// unexpired lease held by process `dead_pid` of who.host: the caller checked that this
  /// process no longer exists (a crashed instance restarted at once on the same host). Returns
  /// false, writing nothing, when the name is held by anyone else. The default returns false
  /// (the restarted instance then waits for the lease to expire).
  virtual bool take_over_instance(const instance_registration& who, std::int64_t dead_pid,
                                  std::chrono::milliseconds lease);

  /// Extends the lease of `name` held by `token` to `lease` from now and records the
  /// heartbeat. Returns false when the name is no longer held by `token` (the lease expired
  /// and another instance took the name). Throws eventq::error when the database fails.
  virtual bool renew_instance(std::string_view name, std::string_view token,
                              std::chrono::milliseconds lease) = 0;

  /// renew_instance() that also records the instance's counters in its registry row (what the
  /// status page shows). The default ignores the counters.
  virtual bool renew_instance(std::string_view name, std::string_view token,
                              std::chrono::milliseconds lease, const metrics& counters);

  /// Stores `request` (its id, times and result are ignored) for a live instance and returns
  /// its id. Throws eventq::error(instance_not_live) naming the instance when no live
  /// instance has that name (nothing is stored). The default throws errc::invalid_argument.
  virtual std::int64_t add_control_request(const control_request& request);

  /// The pending requests for `name`, marked picked up, oldest first: what the instance
  /// holding `token` carries out next. The default returns none.
  virtual std::vector<control_request> take_control_requests(std::string_view name,
                                                             std::string_view token);

  /// Records the outcome of a request taken by take_control_requests(). The default does
  /// nothing.
  virtual void complete_control_request(std::int64_t id, std::string_view result);

  /// The pending requests and the `recent` latest others, newest first (the status page).
  virtual std::vector<control_request> control_requests(std::size_t recent);

  /// A cursor positioned before the first retained row created at or after `since` (rows
  /// created earlier may follow it too): where a replay starts. The default throws
  /// errc::invalid_argument.
  virtual std::string cursor_before(std::chrono::system_clock::time_point since);

  /// Ends the lease of `name` if `token` holds it (the instance closed); the row stays, for
  /// operators, until cleanup removes dead instances.
  virtual void release_instance(std::string_view name, std::string_view token) = 0;

  /// Every registered instance with its cursor and lag, by name.
  virtual std::vector<instance_info> instances() = 0;

  /// Rows, ages, rows per type, the latest cleanup.
  virtual queue_summary summary() = 0;

  /// How many rows were created in each of the `minutes` minutes from `from` on: element i
  /// counts the rows with Created in [from + i min, from + (i+1) min). For the status page's
  /// chart. The default returns an empty vector (the page then shows no chart).
  virtual std::vector<std::int64_t> events_per_minute(std::chrono::system_clock::time_point from,
                                                      int minutes);

  /// Takes the database-wide lease `task` (e.g. "cleanup") for `holder` for `length`, unless
  /// another holder has an unexpired lease on it, or the task last completed less than
  /// `min_interval` ago. Returns true when taken; taking it again as its holder renews it.
  virtual bool acquire_task(std::string_view task, std::string_view holder,
                            std::chrono::milliseconds length,
                            std::chrono::milliseconds min_interval) = 0;

  /// Gives up `task` if `holder` holds it. `completed`: record now as its last completed run
  /// and `result` as its one-line summary.
  virtual void release_task(std::string_view task, std::string_view holder, bool completed,
                            std::string_view result) = 0;

  /// How many rows delete_expired() would delete in total now (a dry run).
  virtual std::size_t count_expired(const expiry& bounds) = 0;

  /// Deletes at most `max_rows` (>= 1) rows that `bounds` allows, oldest first, in one short
  /// transaction; returns how many. A row is kept while a live instance (unexpired lease) has
  /// not read past it (addressed to it or not: instances notice any deleted row after their
  /// cursor and report Missed), unless it is older than bounds.hard_cutoff. Never makes a later
  /// raise reuse a deleted row's id.
  virtual std::size_t delete_expired(const expiry& bounds, std::size_t max_rows) = 0;

  /// Removes the registry rows of instances whose lease expired before bounds.hard_cutoff and
  /// replaces their stored cursors by "removed;at=<UTC time>" (the instance, if it comes back,
  /// reports Missed); deletes such markers older than ten times that age. A backend whose
  /// database has a clock of its own measures it as bounds.max_age back from that clock, as
  /// delete_expired() does (see expiry). Returns how many instances were removed.
  virtual std::size_t remove_dead_instances(const expiry& bounds) = 0;
};

/// Opens the backend named by `url` (see queue::queue) and applies pending migrations, without
/// registering an instance: for tools such as the eventq command. Only opts' busy_timeout,
/// change_check_interval and logger are used. Throws eventq::error as queue::queue does.
std::unique_ptr<storage> open_storage(std::string_view url, const options& opts);

}  // namespace eventq
