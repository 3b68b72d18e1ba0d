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

#include <algorithm>
#include <optional>
#include <pqxx/pqxx>
#include <thread>
#include <vector>

#include "backends.h"
#include "eventq/error.h"
#include "postgres/postgres_connection.h"
#include "postgres/postgres_cursor.h"
#include "postgres/postgres_statements.h"
#include "util.h"

namespace eventq::postgres {

postgres_storage::postgres_storage(config cfg, const options& opts)
    : m_cfg(std::move(cfg)), m_logger(opts.logger) {
  try {
    m_watchdog = std::make_unique<watchdog>(m_cfg.statement_timeout.count() > 0
                                                ? m_cfg.statement_timeout + std::chrono::seconds(1)
                                                : std::chrono::milliseconds(0));
    for (auto& s : statements_for(m_cfg.schema)) {
      m_statements[s.name] = {std::move(s.sql), prepared_name(s.name, m_cfg.schema)};
    }
    m_pool = connection_pool::of(m_cfg);
    m_local = local_channel::of(m_cfg.conninfo + '\n' + channel_of(m_cfg.schema));
    m_local_subscription = m_local->subscribe([this] { changed(); });
    {
      auto c = m_pool->acquire(*m_watchdog, watchdog::writer, "opening the queue");
      try {
        migrate(c.conn());
      } catch (...) {
        c.discard();
        throw;
      }
    }
    // The queue listens (through the process's LISTEN connection) from its first
    // wait_for_change(), i.e. when a poller runs: a queue that only raises must not listen, or
    // every NOTIFY of every raiser would signal its backend.
    if (m_cfg.notify) {
      m_sent_wake_ups = sent_wake_ups::of(m_cfg.pool_key() + '\n' + channel_of(m_cfg.schema));
      m_notifier = std::thread([this] { notifier_loop(); });
    }
  } catch (...) {
    if (m_local) m_local->unsubscribe(m_local_subscription);
    rethrow_as_error(m_cfg, "opening the queue");
  }
}

postgres_storage::~postgres_storage() {
  if (m_hub) m_hub->unsubscribe(m_subscription);
  if (m_local) m_local->unsubscribe(m_local_subscription);
  if (m_notifier.joinable()) {
    {
      std::lock_guard lk(m_notify_mutex);
      m_notify_stop = true;
    }
    m_notify_cv.notify_all();
    m_notifier.join();
  }
}

void postgres_storage::log(log_level level, const std::string& message) const {
  if (m_logger) m_logger(level, message);
}

// ---- writes ----------------------------------------------------------------------------------

// Several rows in one statement, their fields joined (see joined()); nullopt when a field
// holds the separator. Empty key ids and signatures become NULL (unsigned rows).
std::optional<std::vector<std::int64_t>> postgres_storage::insert_joined(
    pqxx::transaction_base& tx, connection_pool::lease& c, std::span<const event_record> events) {
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
  auto r = run(tx, c, "eventq_insert_joined", true, *type, *data, *inst, *local, *global, *when,
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
      std::optional<connection_pool::lease> lease;
      try {
        lease.emplace(m_pool->acquire(*m_watchdog, watchdog::writer, "raising events"));
      } catch (...) {
        rethrow_as_error(m_cfg, "raising events");
      }
      auto& c = *lease;
      const bool reused = c.reused();
      try {
        watchdog::armed watch(*m_watchdog, watchdog::writer, c.conn());
        pqxx::nontransaction tx(c.conn());
        if (events.size() == 1) {
          const auto& e = events.front();
          auto r = run(tx, c, "eventq_insert", true, e.type, e.data, e.instance,
                       std::string(e.mode != raise_mode::globally ? "true" : "false"),
                       std::string(e.mode != raise_mode::locally ? "true" : "false"),
                       created_text(e.created), nullable(e.key_id), nullable(e.signature));
          ids.push_back(r.at(0).at(0).as<std::int64_t>());
        } else if (auto sep = insert_joined(tx, c, events)) {
          ids = std::move(*sep);
        } else {
          auto r = run(tx, c, "eventq_insert_many", true,
                       text_array(events, [](auto& e) { return std::string_view(e.type); }),
                       text_array(events, [](auto& e) { return std::string_view(e.data); }),
                       text_array(events, [](auto& e) { return std::string_view(e.instance); }),
                       text_array(events,
                                  [](auto& e) {
                                    return std::string_view(
                                        e.mode != raise_mode::globally ? "true" : "false");
                                  }),
                       text_array(events,
                                  [](auto& e) {
                                    return std::string_view(
                                        e.mode != raise_mode::locally ? "true" : "false");
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
        c.discard();
        throw error(errc::database_unavailable,
                    "the connection to PostgreSQL at '" + m_cfg.display +
                        "' broke while raising events: they may or may not have been written; "
                        "check EventQueue before retrying. The next call reconnects. (" +
                        e.what() + ")");
      } catch (const pqxx::sql_error& e) {
        // An error reply: the statement did not commit, so one retry is safe.
        c.discard();
        if (reused && attempt == 0 && is_unavailable(e)) continue;
        rethrow_as_error(m_cfg, "raising events");
      } catch (...) {
        c.discard();
        rethrow_as_error(m_cfg, "raising events");
      }
    }
  }
  // Wake the pollers of this process's queues on this schema, this one's included.
  m_local->signal();
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

// ---- cursors and reads -----------------------------------------------------------------------

namespace {

// A text[] literal of `items`: {"a","b\"c"}.
std::string text_array_of(const std::vector<std::string>& items) {
  std::string out = "{";
  for (const auto& v : items) {
    if (out.size() > 1) out += ',';
    out += '"';
    for (char ch : v) {
      if (ch == '"' || ch == '\\') out += '\\';
      out += ch;
    }
    out += '"';
  }
  return out + '}';
}

// "Stamp:Id" (the statements' newest row) into `f`; NULL or garbled leaves 0.
void take_newest(const pqxx::field& field, page_facts& f) {
  if (field.is_null()) return;
  std::string_view v = field.c_str();
  auto colon = v.find(':');
  auto stamp = parse_u64(v.substr(0, colon));
  auto id =
      colon == std::string_view::npos ? std::nullopt : detail::parse_int64(v.substr(colon + 1));
  if (!stamp || !id) return;
  f.newest_stamp = *stamp;
  f.newest_id = *id;
}

// What the head of read_rows()'s answer says.
page_facts facts_of(const pqxx::result& rows, bool head_alone) {
  if (rows.empty()) throw error(errc::database_error, "eventq_read returned no row");
  const auto head = rows[0];
  page_facts facts;
  auto now = parse_snapshot(head[0].c_str());
  if (!now)
    throw error(errc::database_error, "unexpected snapshot '" + head[0].as<std::string>() + "'");
  facts.now = std::move(*now);
  if (head_alone) {  // eventq_head
    if (!head[1].is_null()) facts.incarnation = head[1].as<std::string>();
    take_newest(head[3], facts);
    return facts;
  }
  if (!head[1].is_null()) {
    auto deletions = parse_deletions(head[1].c_str());
    if (!deletions) {
      throw error(errc::database_error, "unexpected EventQueueDeleted summary '" +
                                            head[1].as<std::string>().substr(0, 80) + "'");
    }
    facts.deletions = std::move(*deletions);
  }
  if (!head[2].is_null()) facts.incarnation = head[2].as<std::string>();
  take_newest(head[13], facts);
  // No new rows: the one row has NULL event columns.
  facts.rows = head[3].is_null() ? 0 : rows.size();
  if (facts.rows > 0) {
    const auto last = rows[static_cast<pqxx::result::size_type>(facts.rows - 1)];
    facts.last_stamp = parse_u64(last[10].c_str()).value_or(0);
    facts.last_id = last[3].as<std::int64_t>();
  }
  return facts;
}

}  // namespace

// The filter's arguments of the *_types statements: the names ($9), the prefixes ($10) and
// where each prefix's range ends ($11). A prefix without such an end reads everything.
struct filter_arguments {
  bool filtered = false;
  std::string names, prefixes, prefix_ends;

  explicit filter_arguments(const type_filter& filter) {
    std::vector<std::string> ends;
    for (const auto& p : filter.prefixes) ends.push_back(detail::prefix_end(p));
    filtered =
        !filter.all() && std::none_of(ends.begin(), ends.end(), [](auto& e) { return e.empty(); });
    names = text_array_of(filter.names);
    prefixes = text_array_of(filter.prefixes);
    prefix_ends = text_array_of(ends);
  }
};

// The statement of one poll: the head alone for a cursor this library did not write, else the
// page after the cursor (with the head). Paging, the page alone: rows are expected. Should it be
// empty after all (or not paging), eventq_read, which always returns the head. All unnamed, so
// planned for their own bounds each time: a cached generic plan can scan the whole Stamp range
// for every page of a backlog.
pqxx::result postgres_storage::read_rows(pqxx::transaction_base& tx, connection_pool::lease& c,
                                         const std::optional<parsed_cursor>& cur, std::size_t limit,
                                         const filter_arguments& f) {
  if (!cur) return run(tx, c, "eventq_head", true);
  auto plan = plan_read(*cur);
  auto page = [&](const char* statement) {
    if (f.filtered) {
      return run(tx, c, std::string(statement) + "_types", false, plan.prev, plan.target,
                 std::to_string(plan.from_stamp), static_cast<long long>(plan.from_id),
                 static_cast<long long>(limit), plan.checked, std::to_string(plan.range_from_stamp),
                 static_cast<long long>(plan.range_from_id), f.names, f.prefixes, f.prefix_ends);
    }
    return run(tx, c, statement, false, plan.prev, plan.target, std::to_string(plan.from_stamp),
               static_cast<long long>(plan.from_id), static_cast<long long>(limit), plan.checked,
               std::to_string(plan.range_from_stamp), static_cast<long long>(plan.range_from_id));
  };
  pqxx::result rows;
  if (plan.paging) rows = page("eventq_page");
  if (rows.empty()) rows = page("eventq_read");
  return rows;
}

std::string postgres_storage::head_cursor() {
  return on_reader("reading the current snapshot", [this](connection_pool::lease& c) {
    pqxx::nontransaction tx(c.conn());
    auto row = run(tx, c, "eventq_head", true).at(0);
    auto now = parse_snapshot(row[0].c_str());
    if (!now) throw error(errc::database_error, "unexpected snapshot " + row[0].as<std::string>());
    page_facts f;
    take_newest(row[3], f);
    return head_cursor_text(*now, row[1].is_null() ? "" : row[1].c_str(), f.newest_stamp,
                            f.newest_id);
  });
}

std::string postgres_storage::oldest_cursor() {
  return on_reader("reading the oldest event", [this](connection_pool::lease& c) {
    pqxx::nontransaction tx(c.conn());
    auto row = run(tx, c, "eventq_head", true).at(0);
    auto now = parse_snapshot(row[0].c_str());
    if (!now) throw error(errc::database_error, "unexpected snapshot " + row[0].as<std::string>());
    std::optional<std::uint64_t> min_stamp;
    if (!row[2].is_null()) min_stamp = parse_u64(row[2].c_str());
    return oldest_cursor_text(*now, min_stamp, row[1].is_null() ? "" : row[1].c_str());
  });
}

std::optional<std::string> postgres_storage::load_cursor(std::string_view instance) {
  return on_reader("loading a cursor",
                   [&](connection_pool::lease& c) -> std::optional<std::string> {
                     pqxx::nontransaction tx(c.conn());
                     auto r = run(tx, c, "eventq_get", true, detail::cursor_key(instance));
                     if (r.empty() || r[0][0].is_null()) return std::nullopt;
                     return r[0][0].as<std::string>();
                   });
}

void postgres_storage::store_cursor(std::string_view instance, std::string_view cursor) {
  on_reader("storing a cursor", [&](connection_pool::lease& c) {
    pqxx::nontransaction tx(c.conn());
    run(tx, c, "eventq_set", true, detail::cursor_key(instance), std::string(cursor));
    return 0;
  });
}

bool postgres_storage::store_cursor_fenced(std::string_view instance, std::string_view token,
                                           std::string_view cursor) {
  return on_reader("storing a cursor", [&](connection_pool::lease& c) {
    pqxx::nontransaction tx(c.conn());
    auto r = run(tx, c, "eventq_store_cursor", true, std::string(instance), std::string(token),
                 std::string(cursor));
    return r.at(0)[0].as<bool>();
  });
}

std::string postgres_storage::get_or_insert_property(std::string_view key, std::string_view value) {
  return on_reader("storing a property", [&](connection_pool::lease& c) {
    // Read committed: the SELECT, a statement of its own, sees a row that a concurrent opener
    // committed after our INSERT found it there and did nothing. (Committed synchronously: the
    // database secret may not be lost to a crash, events get signed with it at once.)
    pqxx::work tx(c.conn());
    run(tx, c, "eventq_insert_property", true, std::string(key), std::string(value));
    auto r = run(tx, c, "eventq_get", true, std::string(key));
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
  return read(cursor, limit, type_filter{});
}

// The cursor decisions are pure functions (postgres_cursor.h); this runs their statements.
read_result postgres_storage::read(std::string_view cursor, std::size_t limit,
                                   const type_filter& filter) {
  const filter_arguments args(filter);
  return on_reader("reading events", [&](connection_pool::lease& c) {
    read_result out;
    // Through a transaction pooler no session setting holds: the page's plan setting (see
    // connection_pool::set_up()) and the timeouts are set for this transaction alone.
    std::optional<pqxx::work> in_tx;
    std::optional<pqxx::nontransaction> no_tx;
    pqxx::transaction_base* tx = nullptr;
    if (m_cfg.transaction_pooling) {
      tx = &in_tx.emplace(c.conn());
      tx->exec("SET LOCAL enable_bitmapscan = off; SET LOCAL statement_timeout = " +
               std::to_string(m_cfg.statement_timeout.count()) +
               "; SET LOCAL lock_timeout = " + std::to_string(m_cfg.lock_timeout.count()));
    } else {
      tx = &no_tx.emplace(c.conn());
    }
    auto cur = parse_cursor(cursor);
    auto rows = read_rows(*tx, c, cur, limit, args);
    auto facts = facts_of(rows, !cur);
    if (cur && failed_over(cur->incarnation, facts.incarnation)) {
      facts.newest_found = cur->newest_stamp == 0 || run(*tx, c, "eventq_newest_found", true,
                                                         std::to_string(cur->newest_stamp),
                                                         static_cast<long long>(cur->newest_id))
                                                         .at(0)[0]
                                                         .as<bool>();
    }
    auto d = decide_read(cursor, cur, facts, limit);
    out.missed = std::move(d.missed);
    out.notice = std::move(d.notice);
    out.next_cursor = std::move(d.next_cursor);
    out.more = d.more;
    if (!d.deliver) return out;
    out.events.reserve(facts.rows);
    for (std::size_t i = 0; i < facts.rows; ++i) {
      out.events.push_back(to_record(rows[static_cast<pqxx::result::size_type>(i)]));
    }
    return out;
  });
}

}  // namespace eventq::postgres

namespace eventq::detail {

std::unique_ptr<storage> open_postgres(std::string_view conninfo, const options& opts) {
  return std::make_unique<postgres::postgres_storage>(postgres::parse_url(conninfo), opts);
}

}  // namespace eventq::detail
