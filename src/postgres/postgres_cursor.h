// The PostgreSQL cursor: snapshots as pg_snapshot writes them, and the cursor text this library
// stores in Properties. Pure functions, no server: tests/postgres_cursor_test.cpp drives them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace eventq::postgres {

/// A pg_snapshot: every transaction below xmin has ended, none from xmax on had started, and
/// xip lists (ascending) those in between still running when it was taken.
struct snapshot {
  std::uint64_t xmin = 0, xmax = 0;
  std::vector<std::uint64_t> xip;

  /// True when the rows of transaction `xid` (if it committed) are visible in this snapshot.
  bool sees(std::uint64_t xid) const;
  /// The pg_snapshot text form, "xmin:xmax:xip,...".
  std::string text() const;
};

/// A decimal uint64 with nothing around it; nullopt otherwise.
std::optional<std::uint64_t> parse_u64(std::string_view s);

/// Accepts exactly what pg_snapshot's input accepts (and this library writes).
std::optional<snapshot> parse_snapshot(std::string_view s);

/// A stored cursor: "<position>[;c=<snapshot>][;n=<stamp>:<id>][;db=<incarnation>]" where
/// <position> is a snapshot, or "prev|target|stamp:id" while a backlog larger than one page is
/// drained against a fixed target snapshot (stamp:id: the last row delivered). `c` is the
/// snapshot in which the deletion record was last read (absent: the target when paging, else
/// prev); `n` the newest row (Stamp, Id) visible in the snapshot the position was taken from,
/// what a failover checks (see decide_read(); absent while no row was ever visible to it, and in
/// cursors of eventq before it was recorded); `db` names the database incarnation the cursor
/// belongs to, "<system identifier>.<timeline>" (absent in cursors of eventq before schema 4).
struct parsed_cursor {
  snapshot prev;
  std::optional<snapshot> target;  // set while draining a backlog
  std::uint64_t last_stamp = 0;
  std::int64_t last_id = 0;
  std::optional<snapshot> checked;
  std::uint64_t newest_stamp = 0;  // 0: none
  std::int64_t newest_id = 0;
  std::string incarnation;

  /// The snapshot in which the deletion record was last read.
  const snapshot& deletions_checked() const { return checked ? *checked : target ? *target : prev; }
};

/// nullopt for anything this library does not write.
std::optional<parsed_cursor> parse_cursor(std::string_view s);
/// The text parse_cursor() reads back.
std::string format_cursor(const parsed_cursor& c);

/// One entry of EventQueueDeleted: a statement of transaction `deleter` deleted rows raised by
/// `stamps` (only those the cursor had not seen are listed), or, with `below`, every row raised
/// by a transaction below it (TRUNCATE). Cleanup prunes entries past the hard maximum age and
/// leaves nothing in their place: a cursor that had not read them by then is not told.
struct deletion_record {
  std::uint64_t deleter = 0;
  std::optional<std::uint64_t> below;
  std::vector<std::uint64_t> stamps;
};

/// Reads "deleter/below/s1,s2,...;deleter/below/..." (below may be empty); nullopt if garbled.
std::optional<std::vector<deletion_record>> parse_deletions(std::string_view s);

// Reading is split in two: plan_read() says what to ask, decide_read() what the answer means.
// Rows are read PgQ's way: those of the previous snapshot's in-progress ids, then those whose
// Stamp lies from its xmax to the target's (not "Stamp >= xmin" filtered by visibility, which
// walked everything raised since the oldest open transaction in the cluster began).

/// The arguments of the page statements for a cursor.
struct read_plan {
  bool paging = false;
  std::string prev;              ///< the cursor's snapshot ($1)
  std::string target;            ///< the target snapshot while paging, "" to read up to now ($2)
  std::uint64_t from_stamp = 0;  ///< (from_stamp, from_id): where the index scan starts
  std::int64_t from_id = 0;
  /// Where the scan of the Stamps from prev's xmax on starts: (from_stamp, from_id), or just
  /// below prev's xmax if that is later. (The other part reads prev's in-progress ids.)
  std::uint64_t range_from_stamp = 0;
  std::int64_t range_from_id = 0;
  std::string checked;  ///< deletions committed outside this snapshot are new to the cursor
};
read_plan plan_read(const parsed_cursor& c);

/// What one read found, in one statement snapshot.
struct page_facts {
  snapshot now;             ///< the statement's snapshot
  std::string incarnation;  ///< of the database now ("" unknown: not checked)
  /// The newest row visible in `now` (0: none, or not read by this statement).
  std::uint64_t newest_stamp = 0;
  std::int64_t newest_id = 0;
  /// After a failover (failed_over()): whether the cursor's newest row is on this server, or
  /// its transaction is known there as committed (its row pruned since). Unset: not checked.
  std::optional<bool> newest_found;
  /// Entries of EventQueueDeleted visible in `now` but not in the plan's `checked` snapshot.
  std::vector<deletion_record> deletions;
  std::size_t rows = 0;          ///< rows in the page (all of them, refused ones included)
  std::uint64_t last_stamp = 0;  ///< of the page's last row, when rows > 0
  std::int64_t last_id = 0;
};

/// What to do with a page.
struct read_decision {
  bool deliver = true;  ///< false: drop the page's rows (the cursor was not honoured)
  std::optional<std::string> missed;
  std::optional<std::string> notice;  ///< for the log: a failover ridden through
  std::string next_cursor;
  bool more = false;
};

/// True when incarnation `now` is a later timeline of the cluster `before` belongs to: a standby
/// of it was promoted (or a backup of it restored to a point in time). False for another
/// cluster, the same timeline, or a "" (unknown) side.
bool failed_over(std::string_view before, std::string_view now);

/// The cursor decision of one read: Missed or not, and the next cursor. `cur` is
/// parse_cursor(cursor) (nullopt: garbage, Missed, continue from now).
///
/// After a failover (failed_over(cur's incarnation, facts'), facts.newest_found set) the
/// cursor's snapshot cannot be trusted above its newest row: transaction ids the old primary
/// handed out whose WAL never reached the standby (aborted ones, and asynchronous commits such
/// as cursor stores) are handed out again by the new primary, and rows of such a reused id would
/// look already processed. A raise's commit returns only once a synchronous standby has it, so
/// the newest row is there and every id up to it is past: the cursor continues with its snapshot
/// cut at that row (no Missed; rows above it it had read are delivered again). When the newest
/// row is not there (asynchronous replication lost it), Missed, continue from now.
read_decision decide_read(std::string_view cursor, const std::optional<parsed_cursor>& cur,
                          const page_facts& facts, std::size_t limit);

/// The cursor of a new instance that starts at the oldest retained row: sees every transaction
/// older than `min_stamp` (the oldest Stamp in the table; nullopt: empty table) except those
/// running in `now`, so every retained row and every later commit is new to it. Always a cursor
/// parse_cursor() accepts.
std::string oldest_cursor_text(const snapshot& now, std::optional<std::uint64_t> min_stamp,
                               std::string_view incarnation);

/// The cursor of a new instance that starts now; `newest` the newest row visible in `now`
/// (page_facts::newest_stamp/_id; 0: none).
std::string head_cursor_text(const snapshot& now, std::string_view incarnation,
                             std::uint64_t newest_stamp = 0, std::int64_t newest_id = 0);

}  // namespace eventq::postgres
