// The PostgreSQL storage.
//
// Cursor: PgQ's snapshot method without its ticker. Every row carries Stamp, the id of the
// transaction that raised it. A cursor is a snapshot (pg_snapshot text, "xmin:xmax:xip,...");
// a read takes the current snapshot and delivers the rows visible in it that were not visible
// in the cursor's, in (Stamp, Id) order. A transaction that commits late is in the cursor's
// in-progress list (or beyond its xmax), so its rows arrive at a later read, never fall into a
// hole as they would behind an `Id > last` cursor; and a long unrelated transaction holds
// nobody up, as it would behind a cursor that waits for pg_snapshot_xmin.
//
// A backlog larger than one page is drained against a fixed target snapshot; meanwhile the
// cursor reads "prev|target|stamp:id" (the last row delivered) and collapses back to the target
// snapshot once the page is no longer full.
#include "postgres/postgres_storage.h"

#include <poll.h>
#ifdef __linux__
#include <sys/eventfd.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <charconv>
#include <limits>
#include <map>
#include <optional>
#include <pqxx/pqxx>
#include <thread>
#include <vector>

#include "backends.h"
#include "eventq/error.h"
#include "eventq/postgres.h"
#include "migrations.h"
#include "util.h"

namespace eventq::postgres {

namespace {

constexpr std::chrono::milliseconds k_listen_slice{40};
constexpr std::chrono::seconds k_listen_retry{1};
// After a NOTIFY, the next waits this long: raises in between share it. An isolated raise is
// announced at once; a stream of raises is announced every 2 ms (at most 2 ms later than
// without the gap) instead of with one NOTIFY transaction per raise, which cost a quarter of the
// raise rate with four raising queues. (5 ms also delayed a steady 200 raises/s: the gap met the
// raises' own period.)
constexpr std::chrono::microseconds k_notify_gap{2000};

// ---- snapshots -------------------------------------------------------------------------------

struct snapshot {
  std::uint64_t xmin = 0, xmax = 0;
  std::vector<std::uint64_t> xip;

  bool sees(std::uint64_t xid) const {
    if (xid < xmin) return true;
    if (xid >= xmax) return false;
    return !std::binary_search(xip.begin(), xip.end(), xid);
  }
  std::string text() const {
    std::string s = std::to_string(xmin) + ":" + std::to_string(xmax) + ":";
    for (std::size_t i = 0; i < xip.size(); ++i) {
      if (i) s += ',';
      s += std::to_string(xip[i]);
    }
    return s;
  }
};

std::optional<std::uint64_t> parse_u64(std::string_view s) {
  std::uint64_t v = 0;
  if (s.empty() || s.size() > 20) return std::nullopt;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

// Accepts exactly what pg_snapshot's input accepts (and this library writes).
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

struct parsed_cursor {
  snapshot prev;
  std::optional<snapshot> target;  // set while draining a backlog
  std::uint64_t last_stamp = 0;
  std::int64_t last_id = 0;
};

std::optional<parsed_cursor> parse_cursor(std::string_view s) {
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
  return "'" + std::string(s.substr(0, 60)) + (s.size() > 60 ? "...'" : "'");
}

}  // namespace

// ---- errors ----------------------------------------------------------------------------------

bool is_unavailable(const pqxx::sql_error& e) {
  const std::string& state = e.sqlstate();
  return state.rfind("08", 0) == 0 || state.rfind("57P", 0) == 0 || state == "53300";
}

// Converts the exception in flight into eventq::error. Call only from a catch block.
[[noreturn]] void rethrow_as_error(const config& cfg, const std::string& what) {
  const std::string where = "PostgreSQL at '" + cfg.display + "'";
  try {
    throw;
  } catch (const error&) {
    throw;
  } catch (const pqxx::in_doubt_error& e) {
    throw error(errc::database_unavailable,
                "the connection to " + where + " broke while committing (" + what +
                    "): the transaction may or may not have been written; check EventQueue "
                    "before retrying. The next call reconnects. (" +
                    e.what() + ")");
  } catch (const pqxx::broken_connection& e) {
    throw error(errc::database_unavailable,
                "cannot reach " + where + " while " + what + ": " + e.what() +
                    " Check that the server is running and reachable; the next call "
                    "reconnects.");
  } catch (const pqxx::sql_error& e) {
    if (is_unavailable(e)) {
      throw error(errc::database_unavailable, where + " is unavailable while " + what +
                                                  " (SQLSTATE " + e.sqlstate() + "): " + e.what() +
                                                  " The next call reconnects.");
    }
    std::string hint;
    if (e.sqlstate() == "42501") {
      hint =
          " Grant the connecting role USAGE and CREATE on the schema, or ask an operator "
          "to run schema/postgres.sql.";
    }
    throw error(errc::database_error, where + " refused a statement while " + what + " (SQLSTATE " +
                                          e.sqlstate() + "): " + e.what() + hint);
  } catch (const std::exception& e) {
    throw error(errc::database_error, where + ": " + what + " failed: " + e.what());
  }
}

namespace {

std::string created_text(std::chrono::system_clock::time_point t) {
  return detail::format_utc(t) + "+00";
}

// Empty means unsigned: stored as NULL, as a row written by other means would be.
const char* nullable(const std::string& s) { return s.empty() ? nullptr : s.c_str(); }
// A PostgreSQL array literal of text elements: {"a","b\"c"}.
// With `empty_is_null`, an empty field becomes a NULL element (unsigned rows).
template <class F>
std::string text_array(std::span<const event_record> rows, F field, bool empty_is_null = false) {
  std::string out = "{";
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (i) out += ',';
    if (empty_is_null && std::string_view(field(rows[i])).empty()) {
      out += "NULL";
      continue;
    }
    out += '"';
    for (char ch : field(rows[i])) {
      if (ch == '"' || ch == '\\') out += '\\';
      out += ch;
    }
    out += '"';
  }
  out += '}';
  return out;
}

// The fields of all rows joined by the unit separator (U+001F), which eventq's fields never
// hold: payloads are JSON written by nlohmann::json (control characters escaped), names and key
// ids are checked for control characters, the rest is digits and hex. The server splits it with
// string_to_array, much cheaper than parsing an array literal of escaped JSON. nullopt when a
// field holds the separator after all (the caller then sends array literals).
constexpr char k_unit_separator = '\x1f';
template <class F>
std::optional<std::string> joined(std::span<const event_record> rows, F field) {
  std::string out;
  out.reserve(rows.size() * 24);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    std::string_view v = field(rows[i]);
    if (v.find(k_unit_separator) != std::string_view::npos) return std::nullopt;
    if (i) out += k_unit_separator;
    out.append(v);
  }
  return out;
}

// True when the server has closed (or written to) an idle connection: it was restarted or
// terminated us. Checked before a write so that a statement is never sent on a dead connection,
// which would leave its outcome in doubt.
bool looks_closed(const pqxx::connection& c) {
  pollfd p{c.sock(), POLLIN, 0};
  return p.fd < 0 || ::poll(&p, 1, 0) != 0;
}

// A row of eventq_read: the event's columns start at index 2 (after the snapshot and
// EQDeletedStamp).
event_record to_record(const pqxx::row& row) {
  event_record r;
  r.id = row[2].as<std::int64_t>();
  r.type = row[3].as<std::string>();
  r.data = row[4].as<std::string>();
  r.instance = row[5].as<std::string>();
  bool local = row[6].as<bool>();
  bool global = row[7].as<bool>();
  r.mode = local && global ? raise_mode::both : local ? raise_mode::locally : raise_mode::globally;
  r.created =
      std::chrono::system_clock::time_point(std::chrono::microseconds(row[8].as<std::int64_t>()));
  // NULL (unsigned) reads as "".
  if (!row[10].is_null()) r.key_id = row[10].as<std::string>();
  if (!row[11].is_null()) r.signature = row[11].as<std::string>();
  return r;
}

}  // namespace

// ---- wake-ups within the process --------------------------------------------------------------

#ifdef __linux__
wake_fd::wake_fd() : m_fd(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
wake_fd::~wake_fd() {
  if (m_fd >= 0) close(m_fd);
}
void wake_fd::signal() noexcept {
  std::uint64_t one = 1;
  if (m_fd >= 0) [[maybe_unused]]
    auto n = write(m_fd, &one, sizeof one);
}
void wake_fd::clear() noexcept {
  std::uint64_t count = 0;
  if (m_fd >= 0) [[maybe_unused]]
    auto n = read(m_fd, &count, sizeof count);
}
#else
wake_fd::wake_fd() = default;
wake_fd::~wake_fd() = default;
void wake_fd::signal() noexcept {}
void wake_fd::clear() noexcept {}
#endif

// ---- connections -----------------------------------------------------------------------------

class postgres_storage::listener final : public pqxx::notification_receiver {
 public:
  listener(pqxx::connection& c, const std::string& channel, std::atomic<bool>& flag)
      : pqxx::notification_receiver(c, channel), m_flag(flag) {}
  void operator()(const std::string&, int) override { m_flag = true; }

 private:
  std::atomic<bool>& m_flag;
};

postgres_storage::postgres_storage(config cfg, const options& opts)
    : m_cfg(std::move(cfg)), m_logger(opts.logger) {
  try {
    auto c = connect("opening the queue");
    migrate(*c);
    m_writer = std::move(c);
    // The LISTEN connection opens at the first wait_for_change(), i.e. when a poller runs: a
    // queue that only raises must not listen, or every NOTIFY of every raiser would signal
    // its backend, and the notifications nobody reads would hold the server's NOTIFY queue.
    if (m_cfg.notify) {
      m_sent_wake_ups = sent_wake_ups::of(m_cfg.conninfo + '\n' + channel_of(m_cfg.schema));
      m_notifier = std::thread([this] { notifier_loop(); });
    }
  } catch (...) {
    rethrow_as_error(m_cfg, "opening the queue");
  }
}

postgres_storage::~postgres_storage() {
  if (m_notifier.joinable()) {
    {
      std::lock_guard lk(m_notify_mutex);
      m_notify_stop = true;
    }
    m_notify_cv.notify_all();
    m_notifier.join();
  }
  m_listener.reset();
  m_listen_conn.reset();
}

void postgres_storage::log(log_level level, const std::string& message) const {
  if (m_logger) m_logger(level, message);
}

std::unique_ptr<pqxx::connection> postgres_storage::connect(const char* role) {
  auto c = std::make_unique<pqxx::connection>(m_cfg.conninfo);
  // set_variable: libpqxx re-applies these if it ever re-establishes the connection itself.
  c->set_variable("client_min_messages", "warning");
  c->set_variable("search_path", m_cfg.schema);
  c->set_variable("application_name", std::string("'eventq ") + role + "'");
  // The page query's best plan depends on its snapshot bounds; a cached generic plan can scan
  // the whole Stamp range for every page of a backlog. Only the reader runs it: the writer's
  // INSERTs keep their cached plan (planning each one again cost the raise rate a tenth).
  //
  // And a page is always read in index order: with no statistics, or statistics taken while
  // the table was nearly empty (it usually is, between cleanups), the planner guessed 54 rows
  // for a 100,000-row backlog and chose a bitmap scan of the whole range plus a sort, for
  // every page: 33 ms a page instead of 0.2 ms, a drain at 10k events/s instead of 170k.
  // enable_bitmapscan=off leaves it the ordered walk of the (Stamp, Id) index, which stops at
  // the LIMIT (a sequential scan costs more whatever the guess). The reader's other statements
  // are key lookups. (enable_sort=off would do it too, but gave the one-statement poll's outer
  // ORDER BY a plan that took 200 ms.)
  if (std::string_view(role) == "reader") {
    c->set_variable("plan_cache_mode", "force_custom_plan");
    c->set_variable("enable_bitmapscan", "off");
  }
  // The reader only writes cursors: one lost to a server crash means redelivery (handlers are
  // idempotent), never a lost event, so its commits need not wait for the WAL flush.
  //
  // The notifier only sends NOTIFY. PostgreSQL gives a NOTIFY transaction an xid and a commit
  // record, so with synchronous_commit on every wake-up waited for a WAL flush of its own,
  // competing with the raises' flushes. A wake-up needs no durability: listeners see it once it
  // commits, and a server crash disconnects them anyway (they read again when they reconnect).
  if (std::string_view(role) == "reader" || std::string_view(role) == "notifier") {
    c->set_variable("synchronous_commit", "off");
  }
  // Raises send NOTIFY after their commit, from the notifier thread (see append()).
  c->prepare("eventq_insert", insert_statement(m_cfg.schema, wake_up::none));
  const std::string insert_rows =
      "INSERT INTO EventQueue (EventType, InstanceData, InstanceName, RaiseLocally, "
      "RaiseGlobally, Created, KeyId, Signature) ";
  c->prepare("eventq_insert_many",
             insert_rows +
                 "SELECT t, d::json, i, l, g, c, k, s FROM unnest($1::text[], $2::text[], "
                 "$3::text[], $4::boolean[], $5::boolean[], $6::timestamptz[], $7::text[], "
                 "$8::text[]) WITH ORDINALITY AS u(t, d, i, l, g, c, k, s, n) ORDER BY n "
                 "RETURNING Id");
  c->prepare("eventq_insert_joined",
             insert_rows +
                 "SELECT t, d::json, i, l::boolean, g::boolean, c::timestamptz, k, s FROM unnest("
                 "string_to_array($1, E'\\x1f', ''), string_to_array($2, E'\\x1f', ''), "
                 "string_to_array($3, E'\\x1f', ''), string_to_array($4, E'\\x1f', ''), "
                 "string_to_array($5, E'\\x1f', ''), string_to_array($6, E'\\x1f', ''), "
                 "string_to_array($7, E'\\x1f', ''), string_to_array($8, E'\\x1f', '')) "
                 "WITH ORDINALITY AS u(t, d, i, l, g, c, k, s, n) ORDER BY n RETURNING Id");
  c->prepare("eventq_wake", "SELECT pg_notify('" + channel_of(m_cfg.schema) + "', '')");
  // A page: the events after the cursor ($1: its snapshot; ($3, $4): the last row read when
  // paging) that are visible in `target`, in transaction order. The ORDER BY is qualified: a
  // bare "Stamp" could name a text output column, and text order ("1000" < "999") would make
  // paging skip and repeat rows.
  const std::string page_columns =
      "Id, EventType, InstanceData::text AS InstanceData, InstanceName, RaiseLocally, "
      "RaiseGlobally, (date_part('epoch', Created) * 1000000)::bigint AS CreatedUs, "
      "Stamp::text AS StampText, KeyId, Signature";
  auto page_of = [](const std::string& target) {
    return "FROM EventQueue WHERE Stamp >= pg_snapshot_xmin($1::pg_snapshot) "
           "AND Stamp < pg_snapshot_xmax(" +
           target +
           ") AND NOT pg_visible_in_snapshot(Stamp, $1::pg_snapshot) "
           "AND pg_visible_in_snapshot(Stamp, " +
           target +
           ") AND (Stamp, Id) > ($3::xid8, $4::bigint) "
           "ORDER BY EventQueue.Stamp, EventQueue.Id LIMIT $5";
  };
  // While paging through a backlog ($2: the target snapshot): the page alone, in eventq_read's
  // columns (no EQDeletedStamp: that check is for the first page). No LATERAL join and no
  // second sort of a full page.
  c->prepare("eventq_page", "SELECT (SELECT pg_current_snapshot()::text), NULL::text, " +
                                page_columns + " " + page_of("$2::pg_snapshot"));
  // A poll is this one statement (one snapshot, no BEGIN/COMMIT): the statement's own snapshot
  // and EQDeletedStamp, then the page. $2 is the target snapshot when paging through a backlog,
  // '' to read up to the statement's own snapshot: every row visible in it is visible to the
  // statement, so nothing committed before the snapshot can be passed over. With no new rows the
  // result is one row whose event columns are NULL.
  c->prepare("eventq_read",
             "WITH head AS MATERIALIZED (SELECT pg_current_snapshot() AS now, "
             "(SELECT Value FROM Properties WHERE Key = 'EQDeletedStamp') AS deleted) "
             "SELECT head.now::text, head.deleted, e.Id, e.EventType, e.InstanceData, "
             "e.InstanceName, e.RaiseLocally, e.RaiseGlobally, e.CreatedUs, e.StampText, e.KeyId, "
             "e.Signature FROM head LEFT JOIN LATERAL (SELECT " +
                 page_columns + ", Stamp AS StampOrder " +
                 page_of("coalesce(NULLIF($2, '')::pg_snapshot, head.now)") +
                 ") e ON true ORDER BY e.StampOrder, e.Id");
  c->prepare("eventq_get", "SELECT Value FROM Properties WHERE Key = $1");
  c->prepare("eventq_insert_property",
             "INSERT INTO Properties (Key, Value) VALUES ($1, $2) ON CONFLICT (Key) DO NOTHING");
  c->prepare("eventq_set",
             "INSERT INTO Properties (Key, Value) VALUES ($1, $2) "
             "ON CONFLICT (Key) DO UPDATE SET Value = EXCLUDED.Value");
  return c;
}

// The version recorded in `schema`, or 0 when it has no EventQueueSchema table. Needs only
// USAGE on the schema and SELECT on that table.
int postgres_storage::schema_version(pqxx::transaction_base& tx) const {
  // Schema names are checked (letters, digits, '_') and unquoted everywhere, as here.
  auto table =
      tx.exec_params1("SELECT to_regclass($1) IS NOT NULL", m_cfg.schema + ".EventQueueSchema");
  if (!table[0].as<bool>()) return 0;
  return tx.exec1("SELECT coalesce(max(Version), 0) FROM " + m_cfg.schema + ".EventQueueSchema")[0]
      .as<int>();
}

void postgres_storage::migrate(pqxx::connection& c) {
  const std::string& schema = m_cfg.schema;
  auto all = detail::postgres_migrations();
  const int newest = all.empty() ? 0 : all.back().version;
  auto too_new = [&](int version) {
    return error(errc::schema_too_new,
                 "PostgreSQL schema '" + schema + "' at '" + m_cfg.display +
                     "' has eventq schema version " + std::to_string(version) +
                     " but this library knows versions up to " + std::to_string(newest) +
                     ": upgrade the application (or the eventq command) to a newer eventq; "
                     "nothing was changed");
  };
  int version = 0;
  {
    // The usual case, and the only one a role without CREATE rights (schema/postgres-roles.sql)
    // can pass: the schema is current, nothing to create or lock.
    pqxx::read_transaction check(c);
    version = schema_version(check);
  }
  if (version == newest) return;
  if (version > newest) throw too_new(version);

  pqxx::work tx(c);
  // Serialises openers of this schema: the first migrates, the others then find it current.
  // What follows reads the catalogs by statement and takes locks (CREATE ... IF NOT EXISTS), so
  // it sees what the opener before us committed while we waited; a lookup served from this
  // session's caches (to_regclass) might not.
  tx.exec("SELECT pg_advisory_xact_lock(hashtext('eventq migrate ' || lower(" + tx.quote(schema) +
          ")))");
  try {
    auto exists =
        tx.exec("SELECT 1 FROM pg_namespace WHERE nspname = lower(" + tx.quote(schema) + ")");
    if (exists.empty()) tx.exec("CREATE SCHEMA " + schema);
    tx.exec("SET LOCAL search_path TO " + schema);
    tx.exec(
        "CREATE TABLE IF NOT EXISTS EventQueueSchema (Version int PRIMARY KEY, "
        "Description text NOT NULL, AppliedAt timestamptz NOT NULL DEFAULT now())");
    version = tx.exec1("SELECT coalesce(max(Version), 0) FROM EventQueueSchema")[0].as<int>();
    if (version > newest) throw too_new(version);
    for (const auto& m : all) {
      if (m.version <= version) continue;
      tx.exec(m.sql);
      tx.exec("INSERT INTO EventQueueSchema (Version, Description) VALUES (" +
              std::to_string(m.version) + ", " + tx.quote(std::string(m.name)) + ")");
    }
  } catch (const pqxx::insufficient_privilege& e) {
    throw error(errc::schema_invalid,
                "PostgreSQL schema '" + schema + "' at '" + m_cfg.display + "' is at eventq " +
                    "schema version " + std::to_string(version) + " and needs migrations up to " +
                    std::to_string(newest) + ", which this role may not apply (" + e.what() +
                    "): run migrations as the schema owner (eventq migrate, or open the queue "
                    "once with the owner's role), then open again; nothing was changed");
  }
  tx.commit();
}

pqxx::connection& postgres_storage::writer() {
  if (!m_writer || !m_writer->is_open()) m_writer = connect("writer");
  return *m_writer;
}

pqxx::connection& postgres_storage::reader() {
  if (!m_reader || !m_reader->is_open()) m_reader = connect("reader");
  return *m_reader;
}

// Runs f(reader connection) under the read mutex. These calls are idempotent, so a connection
// that broke while idle (server restarted since the last call) is replaced and f runs again.
template <class F>
auto postgres_storage::on_reader(const char* what, F&& f) {
  std::lock_guard lk(m_read_mutex);
  for (int attempt = 0;; ++attempt) {
    bool reused = m_reader && m_reader->is_open();
    try {
      return f(reader());
    } catch (const error&) {
      throw;
    } catch (const pqxx::broken_connection&) {
      m_reader.reset();
      if (reused && attempt == 0) continue;
      rethrow_as_error(m_cfg, what);
    } catch (const pqxx::sql_error& e) {
      m_reader.reset();
      if (reused && attempt == 0 && is_unavailable(e)) continue;
      rethrow_as_error(m_cfg, what);
    } catch (...) {
      m_reader.reset();
      rethrow_as_error(m_cfg, what);
    }
  }
}

// ---- writes ----------------------------------------------------------------------------------

// Several rows in one statement, their fields joined (see joined()); nullopt when a field
// holds the separator. Empty key ids and signatures become NULL (unsigned rows).
std::optional<std::vector<std::int64_t>> postgres_storage::insert_joined(
    pqxx::transaction_base& tx, std::span<const event_record> events) {
  std::string created;  // the rows of one raise share their time: format it once
  std::chrono::system_clock::time_point created_for{};
  auto created_of = [&](const event_record& e) -> std::string_view {
    if (created.empty() || e.created != created_for) {
      created = created_text(e.created);
      created_for = e.created;
    }
    return created;
  };
  auto type = joined(events, [](auto& e) { return std::string_view(e.type); });
  auto data = joined(events, [](auto& e) { return std::string_view(e.data); });
  auto inst = joined(events, [](auto& e) { return std::string_view(e.instance); });
  auto local = joined(
      events, [](auto& e) { return std::string_view(e.mode != raise_mode::globally ? "t" : "f"); });
  auto global = joined(
      events, [](auto& e) { return std::string_view(e.mode != raise_mode::locally ? "t" : "f"); });
  auto when = joined(events, created_of);
  auto key = joined(events, [](auto& e) { return std::string_view(e.key_id); });
  auto sig = joined(events, [](auto& e) { return std::string_view(e.signature); });
  if (!type || !data || !inst || !local || !global || !when || !key || !sig) return std::nullopt;
  auto r = tx.exec_prepared("eventq_insert_joined", *type, *data, *inst, *local, *global, *when,
                            *key, *sig);
  std::vector<std::int64_t> ids;
  ids.reserve(r.size());
  for (const auto& row : r) ids.push_back(row[0].as<std::int64_t>());
  // Ids are drawn in input order (ORDER BY n), so ascending order is input order.
  std::sort(ids.begin(), ids.end());
  return ids;
}

// One round trip: a single INSERT in autocommit is atomic, and PostgreSQL's own group commit
// lets concurrent raisers on other connections share the WAL flush. The NOTIFY is sent after
// the commit by the notifier thread: inside the transaction it would take PostgreSQL's
// database-wide notify lock until the commit is flushed, serialising every raising connection.
std::vector<std::int64_t> postgres_storage::append(std::span<const event_record> events) {
  std::vector<std::int64_t> ids;
  ids.reserve(events.size());
  {
    std::lock_guard lk(m_write_mutex);
    for (int attempt = 0;; ++attempt) {
      pqxx::connection* c = nullptr;
      bool reused = false;
      try {
        if (m_writer && m_writer->is_open() && looks_closed(*m_writer)) m_writer.reset();
        reused = m_writer && m_writer->is_open();
        c = &writer();
      } catch (...) {
        m_writer.reset();
        rethrow_as_error(m_cfg, "raising events");
      }
      try {
        pqxx::nontransaction tx(*c);
        if (events.size() == 1) {
          const auto& e = events.front();
          auto r =
              tx.exec_prepared("eventq_insert", e.type, e.data, e.instance,
                               std::string(e.mode != raise_mode::globally ? "true" : "false"),
                               std::string(e.mode != raise_mode::locally ? "true" : "false"),
                               created_text(e.created), nullable(e.key_id), nullable(e.signature));
          ids.push_back(r.at(0).at(0).as<std::int64_t>());
        } else if (auto sep = insert_joined(tx, events)) {
          ids = std::move(*sep);
        } else {
          auto r = tx.exec_prepared(
              "eventq_insert_many",
              text_array(events, [](auto& e) { return std::string_view(e.type); }),
              text_array(events, [](auto& e) { return std::string_view(e.data); }),
              text_array(events, [](auto& e) { return std::string_view(e.instance); }),
              text_array(events,
                         [](auto& e) {
                           return std::string_view(e.mode != raise_mode::globally ? "true"
                                                                                  : "false");
                         }),
              text_array(events,
                         [](auto& e) {
                           return std::string_view(e.mode != raise_mode::locally ? "true"
                                                                                 : "false");
                         }),
              text_array(events, [](auto& e) { return created_text(e.created); }),
              text_array(
                  events, [](auto& e) { return std::string_view(e.key_id); }, true),
              text_array(
                  events, [](auto& e) { return std::string_view(e.signature); }, true));
          for (const auto& row : r) ids.push_back(row[0].as<std::int64_t>());
          // Ids are drawn in input order (ORDER BY n), so ascending order is input order.
          std::sort(ids.begin(), ids.end());
        }
        if (ids.size() != events.size()) {
          throw error(errc::database_error, "PostgreSQL at '" + m_cfg.display + "' returned " +
                                                std::to_string(ids.size()) + " ids for " +
                                                std::to_string(events.size()) + " events");
        }
        break;
      } catch (const error&) {
        throw;
      } catch (const pqxx::broken_connection& e) {
        // The statement was sent: it may have committed just before the connection broke.
        m_writer.reset();
        throw error(errc::database_unavailable,
                    "the connection to PostgreSQL at '" + m_cfg.display +
                        "' broke while raising events: they may or may not have been written; "
                        "check EventQueue before retrying. The next call reconnects. (" +
                        e.what() + ")");
      } catch (const pqxx::sql_error& e) {
        // An error reply: the statement did not commit, so one retry is safe.
        m_writer.reset();
        if (reused && attempt == 0 && is_unavailable(e)) continue;
        rethrow_as_error(m_cfg, "raising events");
      } catch (...) {
        m_writer.reset();
        rethrow_as_error(m_cfg, "raising events");
      }
    }
  }
  // Wake this process's poller: through its condition variable, or, while it sleeps in poll()
  // on the listener's socket, through m_wake (a write() per raise only when it is there).
  bool poller_in_poll = false;
  {
    std::lock_guard w(m_wait_mutex);
    m_changed = true;
    poller_in_poll = m_in_wait;
  }
  m_wait_cv.notify_all();
  if (poller_in_poll) m_wake.signal();
  if (m_cfg.notify) {
    bool was_pending = false;
    {
      std::lock_guard n(m_notify_mutex);
      was_pending = std::exchange(m_notify_pending, true);
      m_notify_newest_commit = std::chrono::steady_clock::now();
    }
    // Already pending: the notifier is awake or waiting out k_notify_gap, and sends it then.
    if (!was_pending) m_notify_cv.notify_one();
  }
  return ids;
}

std::shared_ptr<postgres_storage::sent_wake_ups> postgres_storage::sent_wake_ups::of(
    const std::string& key) {
  static std::mutex registry_mutex;
  static std::map<std::string, std::weak_ptr<sent_wake_ups>> registry;
  std::lock_guard lk(registry_mutex);
  std::erase_if(registry, [](const auto& entry) { return entry.second.expired(); });
  auto& slot = registry[key];
  auto shared = slot.lock();
  if (!shared) {
    shared = std::make_shared<sent_wake_ups>();
    slot = shared;
  }
  return shared;
}

std::chrono::steady_clock::time_point postgres_storage::sent_wake_ups::last_started() {
  std::lock_guard lk(m_mutex);
  return m_last_started;
}

bool postgres_storage::sent_wake_ups::claim(std::chrono::steady_clock::time_point newest_commit) {
  std::lock_guard lk(m_mutex);
  if (m_last_started > newest_commit) return false;
  m_last_started = std::chrono::steady_clock::now();
  return true;
}

// Sends one NOTIFY per burst of raises: raises that commit while one is being sent, or within
// k_notify_gap of the last one, share the next. Its own connection, so a wake-up never waits behind
// a raise or a read.
//
// Queues of one process on the same server and channel share their wake-ups: a raise is
// announced by any NOTIFY on its channel that started after it committed, whichever queue of
// the process sent it (m_sent_wake_ups), so four raising queues send one stream of NOTIFYs,
// not four. Each NOTIFY is a transaction that signals every listening backend. (If the NOTIFY
// that covered another queue's raises fails, it is logged, and those raises are found by the
// next poll, as when a wake-up is lost in any other way.)
void postgres_storage::notifier_loop() {
  std::unique_ptr<pqxx::connection> conn;
  std::unique_lock lk(m_notify_mutex);
  for (;;) {
    m_notify_cv.wait(lk, [this] { return m_notify_pending || m_notify_stop; });
    // A raise that returned just before the queue closed still gets its wake-up.
    if (!m_notify_pending) return;
    m_notify_cv.wait_until(lk, m_sent_wake_ups->last_started() + k_notify_gap,
                           [this] { return m_notify_stop; });
    m_notify_pending = false;
    const auto newest_commit = m_notify_newest_commit;
    lk.unlock();
    if (!m_sent_wake_ups->claim(newest_commit)) {  // another queue's NOTIFY covers it
      lk.lock();
      continue;
    }
    bool failed = false;
    try {
      if (!conn || !conn->is_open() || looks_closed(*conn)) conn = connect("notifier");
      pqxx::nontransaction tx(*conn);
      tx.exec_prepared("eventq_wake");
    } catch (const std::exception& e) {
      conn.reset();
      failed = true;
      log(log_level::warning, "cannot send the NOTIFY wake-up to '" + m_cfg.display +
                                  "' (instances find the events at their next poll; retrying "
                                  "in 1 s): " +
                                  e.what());
    }
    lk.lock();
    if (failed && m_notify_stop) return;
    if (failed) m_notify_cv.wait_for(lk, k_listen_retry, [this] { return m_notify_stop; });
  }
}

// ---- cursors and reads -----------------------------------------------------------------------

std::string postgres_storage::head_cursor() {
  return on_reader("reading the current snapshot", [](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    return tx.exec1("SELECT pg_current_snapshot()::text")[0].as<std::string>();
  });
}

std::string postgres_storage::oldest_cursor() {
  return on_reader("reading the oldest event", [](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    auto row = tx.exec1("SELECT pg_current_snapshot()::text, min(Stamp)::text FROM EventQueue");
    auto now = parse_snapshot(row[0].c_str());
    if (!now) throw error(errc::database_error, "unexpected snapshot " + row[0].as<std::string>());
    // Sees every transaction older than the oldest row except those still running, so that
    // every retained row and every later commit is new to it.
    std::uint64_t m = now->xmin;
    if (!row[1].is_null()) m = parse_u64(row[1].c_str()).value_or(m);
    snapshot s;
    s.xmin = std::min(m, now->xmin);
    s.xmax = std::max(m, s.xmin);
    for (auto x : now->xip) {
      if (x >= s.xmin && x < s.xmax) s.xip.push_back(x);
    }
    return s.text();
  });
}

std::optional<std::string> postgres_storage::load_cursor(std::string_view instance) {
  return on_reader("loading a cursor", [&](pqxx::connection& c) -> std::optional<std::string> {
    pqxx::nontransaction tx(c);
    auto r = tx.exec_prepared("eventq_get", detail::cursor_key(instance));
    if (r.empty() || r[0][0].is_null()) return std::nullopt;
    return r[0][0].as<std::string>();
  });
}

void postgres_storage::store_cursor(std::string_view instance, std::string_view cursor) {
  on_reader("storing a cursor", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    tx.exec_prepared("eventq_set", detail::cursor_key(instance), std::string(cursor));
    return 0;
  });
}

std::string postgres_storage::get_or_insert_property(std::string_view key, std::string_view value) {
  return on_reader("storing a property", [&](pqxx::connection& c) {
    // Read committed: the SELECT, a statement of its own, sees a row that a concurrent opener
    // committed after our INSERT found it there and did nothing.
    pqxx::work tx(c);
    tx.exec_prepared("eventq_insert_property", std::string(key), std::string(value));
    auto r = tx.exec_prepared("eventq_get", std::string(key));
    if (r.empty() || r[0][0].is_null()) {
      throw error(errc::database_error,
                  "Properties '" + std::string(key) + "' vanished right after it was stored");
    }
    auto stored = r[0][0].as<std::string>();
    tx.commit();
    return stored;
  });
}

read_result postgres_storage::read(std::string_view cursor, std::size_t limit) {
  return on_reader("reading events", [&](pqxx::connection& c) {
    read_result out;
    pqxx::nontransaction tx(c);
    auto cur = parse_cursor(cursor);
    if (!cur) {
      auto now_text = tx.exec1("SELECT pg_current_snapshot()::text")[0].as<std::string>();
      out.missed = "stored cursor " + quoted_prefix(cursor) +
                   " is not a snapshot this library wrote (Properties edited?); continuing "
                   "from the current snapshot " +
                   now_text;
      out.next_cursor = now_text;
      return out;
    }
    bool paging = cur->target.has_value();
    std::string target_text = paging ? cur->target->text() : std::string();
    // The (Stamp, Id) lower bound is where the index scan starts. Paging, it is the last row
    // read; otherwise it must equal "Stamp >= xmin": a bound of (0, 0) made the scan walk
    // every older index entry and filter it out (17 ms per poll behind 300k old rows).
    // (xmin - 1, max) is exactly that, as no Id exceeds the maximum.
    std::uint64_t from_stamp = paging ? cur->last_stamp : cur->prev.xmin;
    long long from_id = paging ? static_cast<long long>(cur->last_id) : 0;
    if (!paging && from_stamp > 0) {
      from_stamp -= 1;
      from_id = std::numeric_limits<long long>::max();
    }
    // Paging, the page alone: rows are expected. Should it be empty after all (or not paging),
    // eventq_read, which always returns the head.
    pqxx::result rows;
    if (paging) {
      rows = tx.exec_prepared("eventq_page", cur->prev.text(), target_text,
                              std::to_string(from_stamp), from_id, static_cast<long long>(limit));
    }
    if (rows.empty()) {
      rows = tx.exec_prepared("eventq_read", cur->prev.text(), target_text,
                              std::to_string(from_stamp), from_id, static_cast<long long>(limit));
    }
    if (rows.empty()) throw error(errc::database_error, "eventq_read returned no row");
    const auto head = rows[0];
    std::string now_text = head[0].as<std::string>();
    auto now = parse_snapshot(now_text);
    if (!now) throw error(errc::database_error, "unexpected snapshot '" + now_text + "'");
    std::uint64_t cursor_xmax = cur->target ? cur->target->xmax : cur->prev.xmax;
    if (cursor_xmax > now->xmax) {
      out.missed = "stored cursor " + quoted_prefix(cursor) +
                   " is ahead of this database (it names transaction " +
                   std::to_string(cursor_xmax) + ", the server is at " + std::to_string(now->xmax) +
                   ": database restored from a backup, cluster changed, or Properties edited); "
                   "continuing from the current snapshot " +
                   now_text;
      out.next_cursor = now_text;
      return out;
    }
    if (!paging) target_text = now_text;
    if (!paging && !head[1].is_null()) {
      auto deleted = parse_u64(head[1].c_str());
      if (deleted && !cur->prev.sees(*deleted)) {
        out.missed =
            "events raised after this instance's cursor were deleted before it "
            "processed them (cleanup ran while it was down, or rows were deleted by "
            "hand; the newest deleted one was raised by transaction " +
            std::to_string(*deleted) + "); continuing from the oldest retained event";
      }
    }
    // No new rows: the one row has NULL event columns.
    std::size_t n = head[2].is_null() ? 0 : rows.size();
    for (std::size_t i = 0; i < n; ++i) {
      const auto row = rows[static_cast<pqxx::result::size_type>(i)];
      if (!row[6].as<bool>() && !row[7].as<bool>()) continue;  // addressed to nobody
      out.events.push_back(to_record(row));
    }
    if (n >= limit && n > 0) {
      const auto last = rows[static_cast<pqxx::result::size_type>(n - 1)];
      out.more = true;
      out.next_cursor = cur->prev.text() + "|" + target_text + "|" + last[9].as<std::string>() +
                        ":" + last[2].as<std::string>();
    } else if (!paging && n == 0 && !out.missed) {
      out.next_cursor = std::string(cursor);  // nothing new: no need to store a new cursor
    } else {
      out.next_cursor = target_text;
    }
    return out;
  });
}

// ---- wake-ups --------------------------------------------------------------------------------

bool postgres_storage::ensure_listener() {
  if (m_listener && m_listen_conn && m_listen_conn->is_open()) return true;
  auto now = std::chrono::steady_clock::now();
  if (now < m_next_listen_attempt) return false;
  m_listener.reset();
  m_listen_conn.reset();
  try {
    m_listen_conn = connect("listening");
    m_listener = std::make_unique<listener>(*m_listen_conn, channel_of(m_cfg.schema), m_notified);
  } catch (const std::exception& e) {
    m_listener.reset();
    m_listen_conn.reset();
    m_next_listen_attempt = now + k_listen_retry;
    log(log_level::warning, "cannot listen for NOTIFY wake-ups on '" + m_cfg.display +
                                "' (polling goes on; retrying in 1 s): " + e.what());
    return false;
  }
  // Notifications sent before it listened (or while it was down) never arrive: report a
  // change so the caller reads once more.
  m_notified = true;
  return true;
}

bool postgres_storage::wait_for_change(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    std::unique_lock lk(m_wait_mutex);
    if (m_interrupted) {
      m_interrupted = false;
      return false;
    }
    if (m_changed) {
      m_changed = false;
      return true;
    }
    if (m_notified.exchange(false)) return true;
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return false;
    auto left = deadline - now;
    if (!m_cfg.notify) {
      m_wait_cv.wait_until(lk, deadline, [this] { return m_changed || m_interrupted; });
      continue;
    }
    m_in_wait = true;  // until it is reset, a raise of this process signals m_wake (append())
    lk.unlock();
    const bool listening = ensure_listener();
    if (listening && !m_notified) {  // a new listener reports a change: read first
      try {
        wait_for_notification(left);
      } catch (const std::exception& e) {
        log(log_level::warning, "NOTIFY listener connection to '" + m_cfg.display +
                                    "' failed (polling goes on; reconnecting): " + e.what());
        m_listener.reset();
        m_listen_conn.reset();
        m_next_listen_attempt = std::chrono::steady_clock::now() + k_listen_retry;
        m_notified = true;  // what was sent meanwhile is lost: have the caller read
      }
    }
    lk.lock();
    m_in_wait = false;
    if (!listening) {
      m_wait_cv.wait_for(lk, std::min<std::chrono::steady_clock::duration>(k_listen_retry, left),
                         [this] { return m_changed || m_interrupted; });
    }
  }
}

// Sleeps until the listener's socket has input or the wake eventfd is signalled (same-process
// raise, interrupt()), so an idle instance does not wake at all between polls.
void postgres_storage::wait_for_notification(std::chrono::steady_clock::duration left) {
  if (m_wake.fd() < 0) {  // no eventfd: wake up in slices to notice interrupt()
    auto slice = std::min<std::chrono::steady_clock::duration>(k_listen_slice, left);
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(slice).count();
    m_listen_conn->await_notification(0, static_cast<long>(us));
    return;
  }
  pollfd fds[2] = {{m_listen_conn->sock(), POLLIN, 0}, {m_wake.fd(), POLLIN, 0}};
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
  int n = ::poll(fds, 2, static_cast<int>(std::min<long long>(ms, 60000)));
  if (n <= 0) return;
  if (fds[1].revents) m_wake.clear();
  if (fds[0].revents) m_listen_conn->get_notifs();  // throws broken_connection if it closed
}

void postgres_storage::interrupt() {
  {
    std::lock_guard lk(m_wait_mutex);
    m_interrupted = true;
  }
  m_wait_cv.notify_all();
  m_wake.signal();
}

}  // namespace eventq::postgres

namespace eventq::detail {

std::unique_ptr<storage> open_postgres(std::string_view conninfo, const options& opts) {
  return std::make_unique<postgres::postgres_storage>(postgres::parse_url(conninfo), opts);
}

}  // namespace eventq::detail
