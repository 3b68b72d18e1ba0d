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

/// A stored cursor: a snapshot, or "prev|target|stamp:id" while a backlog larger than one page
/// is drained against a fixed target snapshot (stamp:id: the last row delivered).
struct parsed_cursor {
  snapshot prev;
  std::optional<snapshot> target;  // set while draining a backlog
  std::uint64_t last_stamp = 0;
  std::int64_t last_id = 0;
};

/// nullopt for anything this library does not write.
std::optional<parsed_cursor> parse_cursor(std::string_view s);

}  // namespace eventq::postgres
