// The PostgreSQL cursor's pure parts (see postgres_cursor.h).
#include "postgres/postgres_cursor.h"

#include <algorithm>
#include <charconv>
#include <limits>

#include "util.h"

namespace eventq::postgres {

bool snapshot::sees(std::uint64_t xid) const {
  if (xid < xmin) return true;
  if (xid >= xmax) return false;
  return !std::binary_search(xip.begin(), xip.end(), xid);
}

std::string snapshot::text() const {
  std::string s = std::to_string(xmin) + ":" + std::to_string(xmax) + ":";
  for (std::size_t i = 0; i < xip.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(xip[i]);
  }
  return s;
}

std::optional<std::uint64_t> parse_u64(std::string_view s) {
  std::uint64_t v = 0;
  if (s.empty() || s.size() > 20) return std::nullopt;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<snapshot> parse_snapshot(std::string_view s) {
  auto c1 = s.find(':');
  if (c1 == std::string_view::npos) return std::nullopt;
  auto c2 = s.find(':', c1 + 1);
  if (c2 == std::string_view::npos) return std::nullopt;
  snapshot snap;
  auto xmin = parse_u64(s.substr(0, c1));
  auto xmax = parse_u64(s.substr(c1 + 1, c2 - c1 - 1));
  if (!xmin || !xmax || *xmin == 0 || *xmin > *xmax) return std::nullopt;
  snap.xmin = *xmin;
  snap.xmax = *xmax;
  std::string_view rest = s.substr(c2 + 1);
  while (!rest.empty()) {
    auto comma = rest.find(',');
    auto x = parse_u64(rest.substr(0, comma));
    if (!x || *x < snap.xmin || *x >= snap.xmax || (!snap.xip.empty() && *x <= snap.xip.back())) {
      return std::nullopt;
    }
    snap.xip.push_back(*x);
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 1);
    if (rest.empty()) return std::nullopt;
  }
  return snap;
}

namespace {

bool valid_incarnation(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char ch : s) {
    if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || ch == '.')) return false;
  }
  return true;
}

std::optional<parsed_cursor> parse_position(std::string_view s) {
  parsed_cursor c;
  auto bar = s.find('|');
  if (bar == std::string_view::npos) {
    auto snap = parse_snapshot(s);
    if (!snap) return std::nullopt;
    c.prev = std::move(*snap);
    return c;
  }
  auto bar2 = s.find('|', bar + 1);
  if (bar2 == std::string_view::npos) return std::nullopt;
  auto prev = parse_snapshot(s.substr(0, bar));
  auto target = parse_snapshot(s.substr(bar + 1, bar2 - bar - 1));
  std::string_view last = s.substr(bar2 + 1);
  auto colon = last.find(':');
  if (!prev || !target || colon == std::string_view::npos) return std::nullopt;
  auto stamp = parse_u64(last.substr(0, colon));
  auto id = detail::parse_int64(last.substr(colon + 1));
  if (!stamp || !id || target->xmax < prev->xmax) return std::nullopt;
  c.prev = std::move(*prev);
  c.target = std::move(*target);
  c.last_stamp = *stamp;
  c.last_id = *id;
  return c;
}

std::string quoted_prefix(std::string_view s) {
  // Appended piece by piece: GCC 12 at -O2 warns (-Wrestrict) on "'" + std::string(...).
  std::string out = "'";
  out.append(s.substr(0, 60));
  out.append(s.size() > 60 ? "...'" : "'");
  return out;
}

bool operator==(const snapshot& a, const snapshot& b) {
  return a.xmin == b.xmin && a.xmax == b.xmax && a.xip == b.xip;
}

}  // namespace

std::optional<parsed_cursor> parse_cursor(std::string_view s) {
  auto semi = s.find(';');
  auto c = parse_position(s.substr(0, semi));
  if (!c) return std::nullopt;
  while (semi != std::string_view::npos) {
    s = s.substr(semi + 1);
    semi = s.find(';');
    std::string_view field = s.substr(0, semi);
    if (field.rfind("c=", 0) == 0 && !c->checked) {
      auto snap = parse_snapshot(field.substr(2));
      if (!snap) return std::nullopt;
      c->checked = std::move(*snap);
    } else if (field.rfind("n=", 0) == 0 && c->newest_stamp == 0) {
      std::string_view n = field.substr(2);
      auto colon = n.find(':');
      if (colon == std::string_view::npos) return std::nullopt;
      auto stamp = parse_u64(n.substr(0, colon));
      auto id = detail::parse_int64(n.substr(colon + 1));
      if (!stamp || *stamp == 0 || !id) return std::nullopt;
      c->newest_stamp = *stamp;
      c->newest_id = *id;
    } else if (field.rfind("db=", 0) == 0 && c->incarnation.empty() &&
               valid_incarnation(field.substr(3))) {
      c->incarnation = std::string(field.substr(3));
    } else {
      return std::nullopt;
    }
  }
  return c;
}

std::string format_cursor(const parsed_cursor& c) {
  std::string s = c.prev.text();
  if (c.target) {
    s += '|' + c.target->text() + '|' + std::to_string(c.last_stamp) + ':' +
         std::to_string(c.last_id);
  }
  if (c.checked) s += ";c=" + c.checked->text();
  if (c.newest_stamp) {
    s += ";n=" + std::to_string(c.newest_stamp) + ':' + std::to_string(c.newest_id);
  }
  if (!c.incarnation.empty()) s += ";db=" + c.incarnation;
  return s;
}

std::optional<std::vector<deletion_record>> parse_deletions(std::string_view s) {
  std::vector<deletion_record> out;
  while (!s.empty()) {
    auto semi = s.find(';');
    std::string_view entry = s.substr(0, semi);
    auto s1 = entry.find('/');
    if (s1 == std::string_view::npos) return std::nullopt;
    auto s2 = entry.find('/', s1 + 1);
    if (s2 == std::string_view::npos) return std::nullopt;
    deletion_record d;
    auto deleter = parse_u64(entry.substr(0, s1));
    if (!deleter) return std::nullopt;
    d.deleter = *deleter;
    std::string_view below = entry.substr(s1 + 1, s2 - s1 - 1);
    if (!below.empty()) {
      d.below = parse_u64(below);
      if (!d.below) return std::nullopt;
    }
    std::string_view stamps = entry.substr(s2 + 1);
    while (!stamps.empty()) {
      auto comma = stamps.find(',');
      auto x = parse_u64(stamps.substr(0, comma));
      if (!x) return std::nullopt;
      d.stamps.push_back(*x);
      if (comma == std::string_view::npos) break;
      stamps = stamps.substr(comma + 1);
    }
    out.push_back(std::move(d));
    if (semi == std::string_view::npos) break;
    s = s.substr(semi + 1);
  }
  return out;
}

read_plan plan_read(const parsed_cursor& c) {
  read_plan p;
  p.paging = c.target.has_value();
  p.prev = c.prev.text();
  p.target = p.paging ? c.target->text() : std::string();
  p.checked = c.deletions_checked().text();
  // The (Stamp, Id) lower bound is where the index scan starts. Paging, it is the last row
  // read; otherwise it must equal "Stamp >= xmin": a bound of (0, 0) made the scan walk
  // every older index entry and filter it out (17 ms per poll behind 300k old rows).
  // (xmin - 1, max) is exactly that, as no Id exceeds the maximum.
  if (p.paging) {
    p.from_stamp = c.last_stamp;
    p.from_id = c.last_id;
  } else if (c.prev.xmin > 0) {
    p.from_stamp = c.prev.xmin - 1;
    p.from_id = std::numeric_limits<std::int64_t>::max();
  }
  p.range_from_stamp = p.from_stamp;
  p.range_from_id = p.from_id;
  if (c.prev.xmax > 0 && c.prev.xmax - 1 > p.from_stamp) {  // every Stamp below xmax: in part 1
    p.range_from_stamp = c.prev.xmax - 1;
    p.range_from_id = std::numeric_limits<std::int64_t>::max();
  }
  return p;
}

namespace {

// Whether the cursor has already processed the rows of transaction `s`. A row of the last
// delivered transaction may lie on either side of the last row: counted as not processed.
bool processed(const parsed_cursor& c, std::uint64_t s) {
  if (c.prev.sees(s)) return true;
  return c.target && c.target->sees(s) && s < c.last_stamp;
}

// Whether the cursor may have rows of a transaction below `below` still to process.
bool unprocessed_below(const parsed_cursor& c, std::uint64_t below) {
  for (auto x : c.prev.xip) {
    if (x < below && !processed(c, x)) return true;
  }
  if (c.prev.xmax >= below) return false;
  if (!c.target || below > c.last_stamp) return true;
  // [prev.xmax, below) lies below the last row: only the target's running ones are left.
  for (auto x : c.target->xip) {
    if (x >= c.prev.xmax && x < below) return true;
  }
  return false;
}

// The Missed reason when an entry of the deletion record new to the cursor names rows it had
// not processed; nullopt otherwise.
std::optional<std::string> deletions_missed(const parsed_cursor& c, const page_facts& f) {
  const snapshot& checked = c.deletions_checked();
  std::vector<std::uint64_t> lost;
  bool lost_range = false;
  for (const auto& del : f.deletions) {
    // Known already, or not of this incarnation (a committed deleter is below now's xmax).
    if (checked.sees(del.deleter) || del.deleter >= f.now.xmax) continue;
    if (del.below && unprocessed_below(c, *del.below)) lost_range = true;
    for (auto s : del.stamps) {
      if (!processed(c, s) && s < f.now.xmax) lost.push_back(s);
    }
  }
  if (lost_range || !lost.empty()) {
    std::sort(lost.begin(), lost.end());
    lost.erase(std::unique(lost.begin(), lost.end()), lost.end());
    std::string which;
    for (std::size_t i = 0; i < lost.size() && i < 3; ++i) {
      which += (i ? ", " : "") + std::to_string(lost[i]);
    }
    if (lost.size() > 3) which += " and " + std::to_string(lost.size() - 3) + " more";
    return std::string(
               "events raised after this instance's cursor were deleted before it processed them "
               "(cleanup ran while it was down, or rows were deleted by hand") +
           (lost_range ? "; the table was truncated" : "") +
           (lost.empty() ? "" : "; raised by transaction " + which) +
           "); continuing with the events still there";
  }
  return std::nullopt;
}

// `s` with every transaction from `bound` on taken as not yet seen.
snapshot cut_at(const snapshot& s, std::uint64_t bound) {
  snapshot out;
  out.xmax = std::max<std::uint64_t>(1, std::min(s.xmax, bound));
  out.xmin = std::min(s.xmin, out.xmax);
  for (auto x : s.xip) {
    if (x >= out.xmin && x < out.xmax) out.xip.push_back(x);
  }
  return out;
}

// The cursor after a failover: its snapshot cut above its newest row (every id up to that row's
// was used on the old timeline; later ones may be reused). Paging restarts from prev: the rows
// of the backlog already delivered come again. The deletions are read again from there.
parsed_cursor after_failover(const parsed_cursor& c, std::string_view incarnation) {
  parsed_cursor out;
  out.prev = cut_at(c.prev, c.newest_stamp + 1);
  out.newest_stamp = c.newest_stamp;
  out.newest_id = c.newest_id;
  out.incarnation = std::string(incarnation);
  return out;
}

std::pair<std::string_view, std::optional<std::uint64_t>> split_incarnation(std::string_view s) {
  auto dot = s.rfind('.');
  if (dot == std::string_view::npos) return {s, std::nullopt};
  return {s.substr(0, dot), parse_u64(s.substr(dot + 1))};
}

}  // namespace

bool failed_over(std::string_view before, std::string_view now) {
  if (before.empty() || now.empty()) return false;
  auto [cluster_before, timeline_before] = split_incarnation(before);
  auto [cluster_now, timeline_now] = split_incarnation(now);
  return cluster_before == cluster_now && timeline_before && timeline_now &&
         *timeline_now > *timeline_before;
}

read_decision decide_read(std::string_view cursor, const std::optional<parsed_cursor>& cur,
                          const page_facts& f, std::size_t limit) {
  read_decision d;
  auto restart = [&](const std::string& why) {
    d.deliver = false;
    d.missed = why + "; continuing from the current snapshot " + f.now.text();
    d.next_cursor = head_cursor_text(f.now, f.incarnation, f.newest_stamp, f.newest_id);
    return d;
  };
  if (!cur) {
    return restart("stored cursor " + quoted_prefix(cursor) +
                   " is not a snapshot this library wrote (Properties edited?)");
  }
  if (failed_over(cur->incarnation, f.incarnation) && f.newest_found) {
    const std::string newest = cur->newest_stamp ? "the newest event it had seen (raised by "
                                                   "transaction " +
                                                       std::to_string(cur->newest_stamp) + ", Id " +
                                                       std::to_string(cur->newest_id) + ")"
                                                 : "no event seen";
    if (!*f.newest_found) {
      return restart("the database failed over (incarnation " + cur->incarnation + ", now " +
                     f.incarnation + ") and " + newest +
                     " is not on the new primary: replication was asynchronous, or the standby "
                     "was behind, and events raised just before the failover are lost");
    }
    d.deliver = false;
    d.more = true;  // read again at once, from the cut cursor
    d.notice = "the database failed over (incarnation " + cur->incarnation + ", now " +
               f.incarnation + "); " + newest +
               " is on the new primary: continuing from the cursor, events after it again";
    d.next_cursor = format_cursor(after_failover(*cur, f.incarnation));
    return d;
  }
  if (!cur->incarnation.empty() && !f.incarnation.empty() && cur->incarnation != f.incarnation) {
    return restart("stored cursor " + quoted_prefix(cursor) +
                   " belongs to another incarnation of this database (system identifier and "
                   "timeline " +
                   cur->incarnation + ", now " + f.incarnation +
                   ": restored from a backup, or failed over to a replica)");
  }
  std::uint64_t cursor_xmax = cur->target ? cur->target->xmax : cur->prev.xmax;
  if (cur->checked) cursor_xmax = std::max(cursor_xmax, cur->checked->xmax);
  if (cursor_xmax > f.now.xmax) {
    return restart("stored cursor " + quoted_prefix(cursor) +
                   " is ahead of this database (it names transaction " +
                   std::to_string(cursor_xmax) + ", the server is at " +
                   std::to_string(f.now.xmax) +
                   ": database restored from a backup, cluster changed, or Properties edited)");
  }
  d.missed = deletions_missed(*cur, f);
  const snapshot& t = cur->target ? *cur->target : f.now;
  parsed_cursor next;
  next.incarnation = f.incarnation.empty() ? cur->incarnation : f.incarnation;
  // The newest row visible in the snapshot the next position comes from: now's, unless this
  // statement did not say (a page of a backlog: the target's, recorded when paging began).
  next.newest_stamp = cur->newest_stamp;
  next.newest_id = cur->newest_id;
  if (f.newest_stamp > cur->newest_stamp ||
      (f.newest_stamp == cur->newest_stamp && f.newest_id > cur->newest_id)) {
    next.newest_stamp = f.newest_stamp;
    next.newest_id = f.newest_id;
  }
  if (f.rows >= limit && f.rows > 0) {
    d.more = true;
    next.prev = cur->prev;
    next.target = t;
    next.last_stamp = f.last_stamp;
    next.last_id = f.last_id;
  } else if (!cur->target && f.rows == 0 && !d.missed && f.deletions.empty() &&
             next.incarnation == cur->incarnation && !cur->checked) {
    d.next_cursor = std::string(cursor);  // nothing new: no need to store a new cursor
    return d;
  } else {
    next.prev = t;
  }
  if (!(f.now == t)) next.checked = f.now;
  d.next_cursor = format_cursor(next);
  return d;
}

std::string oldest_cursor_text(const snapshot& now, std::optional<std::uint64_t> min_stamp,
                               std::string_view incarnation) {
  std::uint64_t m = min_stamp.value_or(now.xmin);
  snapshot s;
  s.xmin = std::max<std::uint64_t>(1, std::min(m, now.xmin));  // 0 is no snapshot's xmin
  s.xmax = std::max(m, s.xmin);
  for (auto x : now.xip) {
    if (x >= s.xmin && x < s.xmax) s.xip.push_back(x);
  }
  parsed_cursor c;
  c.prev = std::move(s);
  c.incarnation = std::string(incarnation);
  return format_cursor(c);
}

std::string head_cursor_text(const snapshot& now, std::string_view incarnation,
                             std::uint64_t newest_stamp, std::int64_t newest_id) {
  parsed_cursor c;
  c.prev = now;
  c.newest_stamp = newest_stamp;
  c.newest_id = newest_id;
  c.incarnation = std::string(incarnation);
  return format_cursor(c);
}

}  // namespace eventq::postgres
