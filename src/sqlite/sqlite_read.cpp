// The poller's reads of an SQLite file: a page after a cursor, of every type or of the types
// a filter names, and what the page says about rows deleted before this instance read them.
#include <algorithm>
#include <string>

#include "sqlite/sqlite_storage.h"
#include "util.h"

namespace eventq::sqlite {

namespace {

// Filters with more types and prefixes than this read every row (see read()).
constexpr std::size_t k_max_filter_terms = 64;

// One event row of a page statement (the columns of k_columns).
event_record row_of(statement& s) {
  bool local = s.int64(4) != 0;
  bool global = s.int64(5) != 0;
  event_record r;
  r.id = s.int64(0);
  r.type = s.text(1);
  r.data = s.text(2);
  r.instance = s.text(3);
  r.mode = local && global ? raise_mode::both
           : local         ? raise_mode::locally
           : global        ? raise_mode::globally
                           : raise_mode::none;  // refused by every instance, counted
  // Text that is no time: a value check_row() refuses (see event_record::created).
  r.created =
      detail::parse_utc(s.text_view(6)).value_or(std::chrono::system_clock::time_point::min());
  r.key_id = s.text(7);  // NULL reads as ""
  r.signature = s.text(8);
  return r;
}

}  // namespace

namespace {

// A page's rows come in Id order, then its trailer row: anything else is an SQLite this
// library does not support.
void check_page_order(statement& s, const char* what, std::int64_t cur, std::int64_t id,
                      std::int64_t last, bool trailer_seen) {
  if (!trailer_seen && id > last) return;
  s.reset();
  throw error(errc::database_error, std::string("SQLite returned the ") + what + " after Id " +
                                        std::to_string(cur) + " out of order (Id " +
                                        std::to_string(id) + " after " + std::to_string(last) +
                                        "); this SQLite version is not supported");
}

}  // namespace

read_result sqlite_storage::read(std::string_view cursor, std::size_t limit) {
  return read_page(cursor, limit, nullptr);
}

read_result sqlite_storage::read(std::string_view cursor, std::size_t limit,
                                 const type_filter& filter) {
  // Very long filters read everything (one compound term per type would not pay), and so does
  // a prefix whose range has no upper bound.
  if (filter.all() || filter.names.size() + filter.prefixes.size() > k_max_filter_terms ||
      std::any_of(filter.prefixes.begin(), filter.prefixes.end(),
                  [](const std::string& p) { return detail::prefix_end(p).empty(); })) {
    return read_page(cursor, limit, nullptr);
  }
  if (m_filter_unavailable) return read_page(cursor, limit, nullptr);
  try {
    return read_page(cursor, limit, &filter);
  } catch (const error& e) {
    // The filtered page names the index EventQueue_Type (migration 9): an operator who dropped
    // it must not stop the queue. Every row is read then, and filtered in the library.
    if (std::string_view(e.what()).find("no such index") == std::string_view::npos) throw;
    m_filter_unavailable = true;
    if (m_logger) {
      m_logger(log_level::warning,
               std::string("the index EventQueue_Type is missing (") + e.what() +
                   "): reading every event type and filtering in the library; recreate it "
                   "(schema/sqlite.sql) and reopen the queue to filter in the database again");
    }
    return read_page(cursor, limit, nullptr);
  }
}

read_result sqlite_storage::read_page(std::string_view cursor, std::size_t limit,
                                      const type_filter* filter) {
  std::lock_guard lk(m_read_mutex);
  read_result out;
  auto parsed = parse_cursor(cursor);
  std::int64_t cur;
  if (!parsed) {
    cur = head_locked().first;
    out.missed = "stored cursor '" + std::string(cursor.substr(0, 40)) +
                 "' is not an event Id; continuing from the newest event (Id " +
                 std::to_string(cur) + ")";
  } else {
    cur = parsed->id;
  }
  auto page = filter ? scan_filtered(cur, limit, *filter) : scan_page(cur, limit);
  // A cursor read from another database: its Ids name other events here (after a restore of
  // an older copy or a fresh file, Ids are given again), so nothing after it can be trusted.
  // Missed once, then the newest event of this file.
  if (parsed && !parsed->incarnation.empty() && parsed->incarnation != page.incarnation) {
    return foreign_cursor(cursor, *parsed, page);
  }
  m_draining = page.rows == limit;
  judge_page(cur, page, out);
  out.events = std::move(page.events);
  out.next_cursor = format_cursor(page.last, page.incarnation);
  out.more = page.rows == limit;
  out.skipped = page.skipped;
  return out;
}

// The page, the incarnation and the sequence come from one statement, so from one snapshot:
// were they read apart, a commit in between would look like deleted rows and the cursor would
// jump over it. REQUIRES: m_read_mutex held.
sqlite_storage::page_scan sqlite_storage::scan_page(std::int64_t cur, std::size_t limit) {
  page_scan p;
  p.last = cur;
  // Draining, the page alone; should it be empty after all, it is read again with the sequence.
  for (bool page_only = m_draining;; page_only = false) {
    auto& s = page_only ? *m_select_page_only : *m_select_page;
    bool trailer_seen = false;
    s.bind(1, cur).bind(2, static_cast<std::int64_t>(limit));
    while (s.step()) {
      if (s.is_null(0)) {
        trailer_seen = true;
        p.incarnation = checked_incarnation(s.text_view(1));
        if (!page_only) {
          p.seq = s.int64(8);  // NULL (no event ever raised): 0
          p.seq_seen = true;
        }
        continue;
      }
      auto id = s.int64(0);
      check_page_order(s, "page", cur, id, p.last, trailer_seen);
      ++p.rows;
      // Ids are consecutive (AUTOINCREMENT under serialised writers; a rollback gives its ids
      // back): a gap anywhere in the page is rows deleted before this instance read them.
      if (id != p.last + 1) {
        if (p.first_gap < 0) p.first_gap = p.last + 1;
        p.gap_rows += id - p.last - 1;
      }
      p.last = id;
      p.events.push_back(row_of(s));
    }
    s.reset();
    if (p.rows > 0 || !page_only) break;
  }
  p.total = p.rows;
  return p;
}

namespace {

// The rule of delivery::targets_me(), for the rows a filter left out (rows addressed to
// nobody are refused as malformed, not counted as of unknown type).
bool addressed_to(const event_record& r, std::string_view reader) {
  switch (r.mode) {
    case raise_mode::both:
      return true;
    case raise_mode::globally:
      return r.instance != reader;
    case raise_mode::locally:
      return r.instance == reader;
    case raise_mode::none:
      return false;
  }
  return false;
}

}  // namespace

// The filtered page statement for `names` exact types and `prefixes` prefix ranges, prepared
// on first use. Parameters: ?1 the cursor's Id, ?2 the limit, ?3 the reader, then each name,
// then each prefix's range [from, to).
//
// Each type (or prefix) is its own index range on EventQueue_Type (EventType, Id), limited to
// the page: an exact type's Ids come in order from the index, so it reads at most `limit`
// entries however many rows of other types lie in between. Their union, cut to the page, gives
// the Ids; the rows are then read by Id. The same statement (one snapshot) says how far the
// page reaches (`bound`: its last Id when full, else the newest row) and how many rows of any
// type lie in (cursor, bound]: Ids are consecutive, so fewer rows than Ids there means rows
// deleted before this instance read them, whatever their type.
statement& sqlite_storage::filtered_statement(std::size_t names, std::size_t prefixes) {
  auto& slot = m_select_filtered[{names, prefixes}];
  if (!slot) slot = std::make_unique<statement>(m_reader, filtered_page_sql(names, prefixes));
  return *slot;
}

std::string sqlite_storage::filtered_page_sql(std::size_t names, std::size_t prefixes) {
  std::string ids;
  int param = 4;
  auto term = [&](const std::string& where) {
    if (!ids.empty()) ids += " UNION ";
    ids += "SELECT Id FROM (SELECT Id FROM EventQueue INDEXED BY EventQueue_Type WHERE " + where +
           " AND Id > ?1 ORDER BY Id LIMIT ?2)";
  };
  for (std::size_t i = 0; i < names; ++i) term("EventType = ?" + std::to_string(param++));
  for (std::size_t i = 0; i < prefixes; ++i) {
    term("EventType >= ?" + std::to_string(param) + " AND EventType < ?" +
         std::to_string(param + 1));
    param += 2;
  }
  const std::string sql =
      "WITH ids AS (" + ids +
      " ORDER BY Id LIMIT ?2), "
      "bound AS (SELECT CASE WHEN (SELECT count(*) FROM ids) >= ?2 THEN (SELECT max(Id) FROM "
      "ids) ELSE max(?1, coalesce((SELECT max(Id) FROM EventQueue), ?1)) END AS b), "
      "span AS (SELECT count(*) AS n, coalesce(sum(CASE WHEN RaiseLocally <> 0 AND "
      "RaiseGlobally <> 0 THEN 1 WHEN RaiseGlobally <> 0 THEN InstanceName IS NOT ?3 WHEN "
      "RaiseLocally <> 0 THEN InstanceName IS ?3 ELSE 0 END), 0) AS mine FROM EventQueue, bound "
      "WHERE Id > ?1 AND Id <= bound.b) "
      "SELECT * FROM (" +
      std::string(k_columns) + "WHERE Id IN ids ORDER BY Id) UNION ALL SELECT NULL, " +
      k_incarnation +
      ", (SELECT b FROM bound), (SELECT n FROM span), (SELECT mine FROM span), NULL, NULL, "
      "NULL, " +
      k_sequence;
  return sql;
}

// The page of the types `f` asks for (see filtered_statement()). p.last is the page's bound:
// the cursor passes the rows the filter left out. REQUIRES: m_read_mutex held.
sqlite_storage::page_scan sqlite_storage::scan_filtered(std::int64_t cur, std::size_t limit,
                                                        const type_filter& f) {
  page_scan p;
  p.last = cur;
  auto& s = filtered_statement(f.names.size(), f.prefixes.size());
  std::vector<std::string> ends;  // bound without copying: they outlive the statement's steps
  ends.reserve(f.prefixes.size());
  int param = 4;
  s.bind(1, cur).bind(2, static_cast<std::int64_t>(limit)).bind_static(3, f.reader);
  for (const auto& n : f.names) s.bind_static(param++, n);
  for (const auto& pre : f.prefixes) {
    ends.push_back(detail::prefix_end(pre));
    s.bind_static(param, pre).bind_static(param + 1, ends.back());
    param += 2;
  }
  bool trailer_seen = false;
  std::int64_t bound = cur, addressed = 0, mine = 0;
  while (s.step()) {
    if (s.is_null(0)) {
      trailer_seen = true;
      p.incarnation = checked_incarnation(s.text_view(1));
      bound = s.int64(2);
      p.total = static_cast<std::size_t>(s.int64(3));
      addressed = s.int64(4);
      p.seq = s.int64(8);  // NULL (no event ever raised): 0
      p.seq_seen = true;
      continue;
    }
    auto id = s.int64(0);
    check_page_order(s, "filtered page", cur, id, p.last, trailer_seen);
    ++p.rows;
    p.last = id;
    p.events.push_back(row_of(s));
    if (addressed_to(p.events.back(), f.reader)) ++mine;
  }
  s.reset();
  if (!trailer_seen || bound < p.last) {
    throw error(errc::database_error, "SQLite returned a filtered page after Id " +
                                          std::to_string(cur) + " without its bound");
  }
  p.last = bound;
  // Fewer rows than Ids in (cur, bound]: deleted ones, of any type.
  const std::int64_t deleted = (bound - cur) - static_cast<std::int64_t>(p.total);
  if (deleted > 0) {
    p.first_gap = cur + 1;
    p.gap_rows = deleted;
  }
  p.skipped = addressed > mine ? static_cast<std::size_t>(addressed - mine) : 0;
  return p;
}

// The cursor names another database (see read()): Missed, and the newest event of this file.
// REQUIRES: m_read_mutex held.
read_result sqlite_storage::foreign_cursor(std::string_view cursor, const cursor_position& c,
                                           page_scan& p) {
  if (!p.seq_seen) std::tie(p.seq, p.incarnation) = head_locked();
  read_result out;
  out.missed = "stored cursor '" + std::string(cursor.substr(0, 80)) +
               "' belongs to another database (incarnation " + c.incarnation + ", this file's is " +
               (p.incarnation.empty() ? "none" : p.incarnation) +
               "): the SQLite file was replaced or restored from a backup, and its Ids name "
               "other events; continuing from the newest event (Id " +
               std::to_string(p.seq) + ")";
  out.next_cursor = format_cursor(p.seq, p.incarnation);
  m_draining = false;
  return out;
}

// Deleted rows inside the page, and a cursor that no row follows although it lies behind or
// ahead of the sequence: the Missed reason (unless out has one already), and where the cursor
// continues (p.last).
void sqlite_storage::judge_page(std::int64_t cur, page_scan& p, read_result& out) {
  if (p.first_gap >= 0 && !out.missed) {
    out.missed = std::to_string(p.gap_rows) + " event" + (p.gap_rows == 1 ? "" : "s") +
                 " between Id " + std::to_string(p.first_gap) + " and Id " +
                 std::to_string(p.last) +
                 " were deleted before this instance processed them (cleanup ran while it "
                 "was down, or rows were deleted by hand); delivering the rest";
  }
  if (p.total == 0 && !out.missed) {
    if (cur > p.seq) {
      out.missed = "stored cursor " + std::to_string(cur) + " is ahead of the newest event Id " +
                   std::to_string(p.seq) +
                   " (database restored from a backup, replaced, or Properties edited); "
                   "continuing from Id " +
                   std::to_string(p.seq);
      p.last = p.seq;
    } else if (cur < p.seq) {
      out.missed = "events with Id " + std::to_string(cur + 1) + ".." + std::to_string(p.seq) +
                   " were deleted before this instance processed them (cleanup ran while it "
                   "was down, or rows were deleted by hand); continuing after Id " +
                   std::to_string(p.seq);
      p.last = p.seq;
    }
  }
}

}  // namespace eventq::sqlite
