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

/// A stored cursor: "<position>[;c=<snapshot>][;db=<incarnation>]" where <position> is a
/// snapshot, or "prev|target|stamp:id" while a backlog larger than one page is drained against a
/// fixed target snapshot (stamp:id: the last row delivered). `c` is the snapshot in which the
/// deletion record was last read (absent: the target when paging, else prev); `db` names the
/// database incarnation the cursor belongs to (absent in cursors of eventq before schema 4).
struct parsed_cursor {
  snapshot prev;
  std::optional<snapshot> target;  // set while draining a backlog
  std::uint64_t last_stamp = 0;
  std::int64_t last_id = 0;
  std::optional<snapshot> checked;
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
  std::string next_cursor;
  bool more = false;
};

/// The cursor decision of one read: Missed or not, and the next cursor. `cur` is
/// parse_cursor(cursor) (nullopt: garbage, Missed, continue from now).
read_decision decide_read(std::string_view cursor, const std::optional<parsed_cursor>& cur,
                          const page_facts& facts, std::size_t limit);

/// The cursor of a new instance that starts at the oldest retained row: sees every transaction
/// older than `min_stamp` (the oldest Stamp in the table; nullopt: empty table) except those
/// running in `now`, so every retained row and every later commit is new to it. Always a cursor
/// parse_cursor() accepts.
std::string oldest_cursor_text(const snapshot& now, std::optional<std::uint64_t> min_stamp,
                               std::string_view incarnation);

/// The cursor of a new instance that starts now.
std::string head_cursor_text(const snapshot& now, std::string_view incarnation);

}  // namespace eventq::postgres
