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
