#include "sqlite/sqlite_storage.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <thread>
#include <tuple>

#include "migrations.h"
#include "util.h"

namespace eventq::sqlite {

namespace {

// Storages of this process by file, so a raise wakes every poller on the same file at once
// (other processes notice through the WAL file watch, see wait_for_change()).
std::mutex g_registry_mutex;
std::multimap<std::string, sqlite_storage*> g_registry;

std::string canonical_path(const std::string& path) {
  std::error_code ec;
  auto p = std::filesystem::weakly_canonical(path, ec);
  return ec ? path : p.string();
}

constexpr const char* k_columns =
    "SELECT Id, EventType, InstanceData, InstanceName, RaiseLocally, RaiseGlobally, Created, "
    "KeyId, Signature FROM EventQueue ";

// Scalar subqueries, so that a statement reads them in the snapshot of its other columns.
constexpr const char* k_sequence = "(SELECT seq FROM sqlite_sequence WHERE name = 'EventQueue')";
constexpr const char* k_incarnation = "(SELECT Value FROM Properties WHERE Key = 'EQIncarnation')";

}  // namespace

std::string checked_incarnation(std::string_view value) {
  if (value.empty() || value.size() > 64) return {};
  for (char ch : value) {
    if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return {};
  }
  return std::string(value);
}

std::optional<cursor_position> parse_cursor(std::string_view text) {
  auto semi = text.find(';');
  auto id = detail::parse_int64(text.substr(0, semi));
  if (!id || *id < 0) return std::nullopt;
  cursor_position c;
  c.id = *id;
  if (semi != std::string_view::npos) {
    std::string_view rest = text.substr(semi + 1);
    if (rest.rfind("db=", 0) != 0) return std::nullopt;
    c.incarnation = checked_incarnation(rest.substr(3));
    if (c.incarnation.empty()) return std::nullopt;
  }
  return c;
}

std::string format_cursor(std::int64_t id, std::string_view incarnation) {
  std::string s = std::to_string(id);
  if (!incarnation.empty()) {
    s += ";db=";
    s += incarnation;
  }
  return s;
}

sqlite_storage::sqlite_storage(const std::string& path, const options& opts, bool watch)
    : m_path(path),
      m_check_interval(opts.change_check_interval),
      m_logger(opts.logger),
      m_writer(path, opts.busy_timeout),
      m_reader(path, opts.busy_timeout) {
  migrate();
  // The reader writes only cursors: a cursor lost to a power cut means redelivery (handlers are
  // idempotent), never a lost event, so its commits skip the fsync that raises need.
  m_reader.exec("PRAGMA synchronous=NORMAL");
  const std::string insert =
      "INSERT INTO EventQueue (EventType, InstanceData, InstanceName, RaiseLocally, "
      "RaiseGlobally, Created, KeyId, Signature) VALUES ";
  m_insert = std::make_unique<statement>(m_writer, insert + "(?,?,?,?,?,?,?,?)");
  for (std::size_t size : {std::size_t{32}, std::size_t{8}}) {
    std::string rows;
    for (std::size_t i = 0; i < size; ++i) rows += i ? ",(?,?,?,?,?,?,?,?)" : "(?,?,?,?,?,?,?,?)";
    m_insert_chunks.emplace_back(size, std::make_unique<statement>(m_writer, insert + rows));
  }
  // One statement, so one snapshot and one query per poll: the page, then a last row (Id NULL)
  // that carries the file's incarnation and the sequence (the newest Id ever given), which
  // tells deleted rows from no rows.
  const std::string page = "SELECT * FROM (" + std::string(k_columns) +
                           "WHERE Id > ?1 ORDER BY Id LIMIT ?2) UNION ALL SELECT NULL, " +
                           k_incarnation + ", NULL, NULL, NULL, NULL, NULL, NULL, ";
  m_select_page = std::make_unique<statement>(m_reader, page + k_sequence);
  // While draining a backlog (the previous page was full) the page and the incarnation: rows
  // are expected, and the sequence is only needed when there are none.
  m_select_page_only = std::make_unique<statement>(m_reader, page + "NULL");
  m_select_head = std::make_unique<statement>(
      m_reader, std::string("SELECT ") + k_sequence + ", " + k_incarnation);
  m_select_oldest = std::make_unique<statement>(
      m_reader,
      std::string("SELECT (SELECT min(Id) FROM EventQueue), ") + k_sequence + ", " + k_incarnation);
  m_get_property =
      std::make_unique<statement>(m_reader, "SELECT Value FROM Properties WHERE Key = ?1");
  m_set_property =
      std::make_unique<statement>(m_reader,
                                  "INSERT INTO Properties (Key, Value) VALUES (?1, ?2) "
                                  "ON CONFLICT (Key) DO UPDATE SET Value = excluded.Value");
  // The fence: one statement, so no other process can take the name between the check and the
  // write. (The WHERE also settles SQLite's parsing ambiguity of INSERT ... SELECT ... ON.)
  m_set_cursor_fenced = std::make_unique<statement>(
      m_reader,
      "INSERT INTO Properties (Key, Value) SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM "
      "EventQueueInstances WHERE Name = ?3 AND Token = ?4) "
      "ON CONFLICT (Key) DO UPDATE SET Value = excluded.Value");
  m_data_version = std::make_unique<statement>(m_reader, "PRAGMA data_version");
  data_version_changed();  // records the starting value
  m_watching = watch;
  if (watch) m_watch = std::make_unique<change_watch>(path);

  std::lock_guard lk(g_registry_mutex);
  m_path = canonical_path(path);
  g_registry.emplace(m_path, this);
}

sqlite_storage::~sqlite_storage() {
  std::lock_guard lk(g_registry_mutex);
  auto [b, e] = g_registry.equal_range(m_path);
  for (auto it = b; it != e; ++it) {
    if (it->second == this) {
      g_registry.erase(it);
      break;
    }
  }
}

void sqlite_storage::migrate() {
  std::lock_guard lk(m_write_mutex);
  // BEGIN IMMEDIATE serialises concurrent openers: the first migrates, the others then find
  // the schema current.
  write_transaction tx(m_writer);
  m_writer.exec(
      "CREATE TABLE IF NOT EXISTS EventQueueSchema (Version INTEGER PRIMARY KEY, "
      "Description TEXT NOT NULL, AppliedAt TEXT NOT NULL)");
  statement current(m_writer, "SELECT coalesce(max(Version), 0) FROM EventQueueSchema");
  current.step();
  std::int64_t version = current.int64(0);
  current.reset();
  auto all = detail::sqlite_migrations();
  int newest = all.empty() ? 0 : all.back().version;
  if (version > newest) {
    throw error(errc::schema_too_new,
                "SQLite database '" + m_path + "' has eventq schema version " +
                    std::to_string(version) + " but this library knows versions up to " +
                    std::to_string(newest) +
                    ": upgrade the application (or the eventq command) to a newer eventq; "
                    "nothing was changed");
  }
  if (version == newest) {
    tx.commit();
    return;
  }
  // A migration that meets stored rows breaking a new rule writes what to tell the operator
  // here (SQLite has no RAISE WARNING); logged once the migrations committed.
  m_writer.exec(
      "CREATE TEMP TABLE IF NOT EXISTS eventq_migration_warnings (Message TEXT NOT NULL)");
  statement record(m_writer,
                   "INSERT INTO EventQueueSchema (Version, Description, AppliedAt) VALUES "
                   "(?1, ?2, ?3)");
  for (const auto& m : all) {
    if (m.version <= version) continue;
    m_writer.exec(m.sql);
    record.bind(1, static_cast<std::int64_t>(m.version))
        .bind(2, std::string_view(m.name))
        .bind(3, detail::format_utc(std::chrono::system_clock::now()))
        .run();
  }
  std::vector<std::string> warnings;
  {
    statement read(m_writer, "SELECT Message FROM temp.eventq_migration_warnings ORDER BY rowid");
    while (read.step()) warnings.push_back(read.text(0));
  }
  m_writer.exec("DROP TABLE temp.eventq_migration_warnings");
  tx.commit();
  if (m_logger) {
    for (const auto& w : warnings) m_logger(log_level::warning, w);
  }
}

namespace {
// Binds one row's 8 parameters from `base` + 1, without copying: `e` and `created` outlive
// the statement's run(). `created` is the row's formatted time.
void bind_row(statement& s, int base, const event_record& e, const std::string& created) {
  bool local = e.mode != raise_mode::globally;
  bool global = e.mode != raise_mode::locally;
  s.bind_static(base + 1, e.type)
      .bind_static(base + 2, e.data)
      .bind_static(base + 3, e.instance)
      .bind(base + 4, std::int64_t{local})
      .bind(base + 5, std::int64_t{global})
      .bind(base + 6, created);
  // Empty means unsigned: stored as NULL, as a row written by other means would be.
  if (e.key_id.empty()) {
    s.bind_null(base + 7);
  } else {
    s.bind_static(base + 7, e.key_id);
  }
  if (e.signature.empty()) {
    s.bind_null(base + 8);
  } else {
    s.bind_static(base + 8, e.signature);
  }
}
}  // namespace

std::vector<std::int64_t> sqlite_storage::append(std::span<const event_record> events) {
  std::vector<std::int64_t> ids;
  ids.reserve(events.size());
  {
    std::lock_guard lk(m_write_mutex);
    // The rows of one raise share their time: format it once.
    std::string created;
    std::chrono::system_clock::time_point created_for{};
    auto created_text = [&](const event_record& e) -> const std::string& {
      if (created.empty() || e.created != created_for) {
        created = detail::format_utc(e.created);
        created_for = e.created;
      }
      return created;
    };
    if (events.size() == 1) {
      // One statement in autocommit is atomic and takes the write lock itself, with no read
      // lock held before it (so the busy handler applies): no BEGIN/COMMIT round needed.
      bind_row(*m_insert, 0, events.front(), created_text(events.front()));
      m_insert->run();
      ids.push_back(sqlite3_last_insert_rowid(m_writer.get()));
    } else {
      write_transaction tx(m_writer);
      std::size_t i = 0;
      // Whole chunks through multi-row INSERTs (32 rows, then 8: a group commit of eight
      // raisers is one statement). The rows of one statement get consecutive Ids
      // (AUTOINCREMENT, under the write lock), checked by the row count.
      for (auto& [size, stmt] : m_insert_chunks) {
        for (; i + size <= events.size(); i += size) {
          for (std::size_t r = 0; r < size; ++r) {
            bind_row(*stmt, static_cast<int>(8 * r), events[i + r], created_text(events[i + r]));
          }
          stmt->run();
          if (m_writer.changes() != size) {
            throw error(errc::database_error, "SQLite database '" + m_path + "': a " +
                                                  std::to_string(size) + "-row INSERT wrote " +
                                                  std::to_string(m_writer.changes()) + " rows");
          }
          std::int64_t last = sqlite3_last_insert_rowid(m_writer.get());
          for (std::size_t r = 0; r < size; ++r) {
            ids.push_back(last - static_cast<std::int64_t>(size - 1 - r));
          }
        }
      }
      for (; i < events.size(); ++i) {
        bind_row(*m_insert, 0, events[i], created_text(events[i]));
        m_insert->run();
        ids.push_back(sqlite3_last_insert_rowid(m_writer.get()));
      }
      tx.commit();
    }
  }
  std::lock_guard lk(g_registry_mutex);
  auto [b, e] = g_registry.equal_range(m_path);
  for (auto it = b; it != e; ++it) {
    if (it->second == this || it->second->m_watching) it->second->notify_change();
  }
  return ids;
}

std::pair<std::int64_t, std::string> sqlite_storage::head_locked() {
  m_select_head->step();
  std::pair<std::int64_t, std::string> out{m_select_head->int64(0),  // NULL (no row yet): 0
                                           checked_incarnation(m_select_head->text_view(1))};
  m_select_head->reset();
  return out;
}

std::string sqlite_storage::head_cursor() {
  std::lock_guard lk(m_read_mutex);
  auto [seq, incarnation] = head_locked();
  return format_cursor(seq, incarnation);
}

std::string sqlite_storage::oldest_cursor() {
  std::lock_guard lk(m_read_mutex);
  m_select_oldest->step();  // min(Id) and the sequence from one snapshot
  bool empty = m_select_oldest->is_null(0);
  std::int64_t at = empty ? m_select_oldest->int64(1) : m_select_oldest->int64(0) - 1;
  auto incarnation = checked_incarnation(m_select_oldest->text_view(2));
  m_select_oldest->reset();
  return format_cursor(at, incarnation);
}

std::optional<std::string> sqlite_storage::load_cursor(std::string_view instance) {
  std::lock_guard lk(m_read_mutex);
  m_get_property->bind(1, detail::cursor_key(instance));
  std::optional<std::string> value;
  if (m_get_property->step()) value = m_get_property->text(0);
  m_get_property->reset();
  return value;
}

std::string sqlite_storage::get_or_insert_property(std::string_view key, std::string_view value) {
  {
    std::lock_guard lk(m_write_mutex);
    write_transaction tx(m_writer);
    statement insert(m_writer,
                     "INSERT INTO Properties (Key, Value) VALUES (?1, ?2) ON CONFLICT (Key) DO "
                     "NOTHING");
    insert.bind(1, key).bind(2, value).run();
    tx.commit();
  }
  std::lock_guard lk(m_read_mutex);
  statement get(m_reader, "SELECT Value FROM Properties WHERE Key = ?1");
  get.bind(1, key);
  if (!get.step()) {
    throw error(errc::database_error, "Properties '" + std::string(key) + "' vanished in '" +
                                          m_path + "' right after it was stored");
  }
  return get.text(0);
}

void sqlite_storage::store_cursor(std::string_view instance, std::string_view cursor) {
  std::lock_guard lk(m_read_mutex);
  m_set_property->bind(1, detail::cursor_key(instance)).bind(2, cursor).run();
}

bool sqlite_storage::store_cursor_fenced(std::string_view instance, std::string_view token,
                                         std::string_view cursor) {
  std::lock_guard lk(m_read_mutex);
  m_set_cursor_fenced->bind(1, detail::cursor_key(instance))
      .bind(2, cursor)
      .bind(3, instance)
      .bind(4, token)
      .run();
  return m_reader.changes() == 1;
}

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

bool sqlite_storage::data_version_changed() {
  std::lock_guard lk(m_read_mutex);
  m_data_version->step();
  std::int64_t v = m_data_version->int64(0);
  m_data_version->reset();
  bool changed = m_last_data_version >= 0 && v != m_last_data_version;
  m_last_data_version = v;
  return changed;
}

void sqlite_storage::notify_change() {
  {
    std::lock_guard lk(m_wait_mutex);
    m_changed = true;
  }
  m_wait_cv.notify_all();
  if (m_watch) m_watch->signal();
}

void sqlite_storage::interrupt() {
  {
    std::lock_guard lk(m_wait_mutex);
    m_interrupted = true;
  }
  m_wait_cv.notify_all();
  if (m_watch) m_watch->signal();
}

bool sqlite_storage::wait_for_change(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_lock lk(m_wait_mutex);
  for (;;) {
    if (m_changed) {
      m_changed = false;
      return true;
    }
    if (m_interrupted) {
      m_interrupted = false;
      return false;
    }
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return false;
    if (!m_watching) {  // polling only: sleep until the deadline, a local raise, or interrupt()
      m_wait_cv.wait_until(lk, deadline, [this] { return m_changed || m_interrupted; });
      continue;
    }
    if (m_watch->valid()) {
      // Sleeps until a commit writes the WAL (any process) or a same-process signal: no
      // periodic checks while idle. data_version filters out this storage's own cursor writes.
      lk.unlock();
      auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - now);
      bool changed = false;
      if (m_watch->wait(left) == watch_event::file_changed) {
        // A writer appends to the WAL, syncs it, and only then publishes the commit in the
        // shared-memory index (no file event): look again for a while before going back to
        // sleep, or a commit could wait for the next poll.
        // The publish follows the WAL write by about an fsync (~0.1 ms here): start there,
        // and look for 64 ms in all (a slow disk's fsync).
        std::chrono::microseconds pause{100};
        std::chrono::microseconds waited{0};
        constexpr std::chrono::microseconds k_look_for{64000};
        while (!(changed = data_version_changed()) && waited < k_look_for) {
          auto step = std::min(pause, k_look_for - waited);
          std::this_thread::sleep_for(step);
          waited += step;
          pause *= 2;
        }
      }
      lk.lock();
      if (changed) return true;
      continue;
    }
    auto slice = std::min<std::chrono::steady_clock::duration>(m_check_interval, deadline - now);
    if (m_wait_cv.wait_for(lk, slice, [this] { return m_changed || m_interrupted; })) continue;
    lk.unlock();
    bool changed = data_version_changed();
    lk.lock();
    if (changed) return true;
  }
}

}  // namespace eventq::sqlite
