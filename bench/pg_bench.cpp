// PostgreSQL: eventq beside hand-written SQL and PgQ on the same database (libpqxx).
#include <atomic>
#include <iostream>
#include <memory>
#include <pqxx/pqxx>
#include <thread>

#include "bench.h"

namespace bench {

namespace {

using namespace std::chrono_literals;

const char* k_created = "now()";  // reference rows: Created set by the server, like a user would

std::string insert_sql(int rows) {
  std::string sql =
      "INSERT INTO RefQueue (EventType, InstanceData, InstanceName, RaiseLocally, RaiseGlobally, "
      "Created, KeyId, Signature) VALUES ";
  for (int i = 0; i < rows; ++i) {
    int b = i * 7;
    auto p = [&](int k) { return "$" + std::to_string(b + k); };
    sql += std::string(i ? ",(" : "(") + p(1) + ", " + p(2) + "::json, " + p(3) + ", " + p(4) +
           "::boolean, " + p(5) + "::boolean, " + k_created + ", " + p(6) + ", " + p(7) + ")";
  }
  return sql + " RETURNING Id";
}

std::unique_ptr<pqxx::connection> connect(const std::string& url) {
  auto c = std::make_unique<pqxx::connection>(url);
  c->set_variable("client_min_messages", "warning");
  return c;
}

double ref_insert_rate(const std::string& url, int threads, int rows_per_tx,
                       std::chrono::milliseconds d) {
  std::vector<std::unique_ptr<pqxx::connection>> conns;
  for (int i = 0; i < threads; ++i) {
    conns.push_back(connect(url));
    conns.back()->prepare("ins", insert_sql(rows_per_tx));
  }
  std::atomic<std::int64_t> seq{0};
  return rate(threads, d, [&](int t) {
    auto& c = *conns[static_cast<std::size_t>(t)];
    std::vector<std::string> params;
    params.reserve(static_cast<std::size_t>(rows_per_tx) * 7);
    for (int r = 0; r < rows_per_tx; ++r) {
      params.emplace_back("bench.item_changed");
      params.push_back(payload_text(seq++));
      params.emplace_back("ref-raiser");
      params.emplace_back("false");
      params.emplace_back("true");
      params.emplace_back(k_ref_key_id);     // the same row shape as eventq's: a key id and a
      params.emplace_back(k_ref_signature);  // 64-hex-digit signature (not computed here)
    }
    pqxx::nontransaction tx(c);  // one statement, autocommit: one transaction
    auto r = tx.exec_prepared("ins", pqxx::prepare::make_dynamic_params(params));
    return r.size();
  });
}

// SQL producing the item_changed JSON for series value g (same shape, ~200 bytes).
const char* k_payload_sql =
    "json_build_object('seq', g, 'item', md5(g::text), 'path', "
    "'/sitecore/content/home/products/item-' || (g % 1000), 'lang', 'en', 'db', 'web', "
    "'version', g % 7 + 1, 'by', 'sitecore\\editor', 'fields', json_build_array('Title', "
    "'Text'))";

// Fills EventQueue with n rows in transactions of 500 (server-side), back-dated by age_days.
void fill_eventq(const std::string& url, std::int64_t n, int age_days) {
  auto c = connect(url);
  std::string sql = std::string(
                        "INSERT INTO EventQueue (EventType, InstanceData, InstanceName, "
                        "RaiseLocally, RaiseGlobally, Created) SELECT 'bench.item_changed', ") +
                    k_payload_sql + ", 'filler', false, true, now() - interval '" +
                    std::to_string(age_days) +
                    " days' FROM generate_series($1::bigint, $2::bigint) g";
  c->prepare("fill", sql);
  for (std::int64_t i = 0; i < n; i += 500) {
    pqxx::nontransaction tx(*c);
    tx.exec_prepared("fill", i, std::min(n, i + 500) - 1);
  }
}

// Fills the PgQ queue the same way, one tick after every 500-event transaction: pgq.ticker()
// (the function the pgqd daemon calls) cuts a batch once ticker_max_count (500) events are
// waiting, so every batch holds one eventq page.
void fill_pgq(const std::string& url, std::int64_t n) {
  auto c = connect(url);
  c->prepare("fill", std::string("SELECT count(pgq.insert_event('bench', 'bench.item_changed', ") +
                         k_payload_sql + "::text)) FROM generate_series($1::bigint, $2::bigint) g");
  for (std::int64_t i = 0; i < n; i += 500) {
    {
      pqxx::nontransaction tx(*c);
      tx.exec_prepared("fill", i, std::min(n, i + 500) - 1);
    }
    pqxx::nontransaction tx(*c);
    tx.exec("SELECT pgq.ticker('bench')");
  }
}

// PgQ's consumer loop: next_batch, get_batch_events, (decode each), finish_batch, commit.
double pgq_drain_rate(const std::string& url, const std::vector<std::string>& consumers,
                      std::size_t expected) {
  std::atomic<std::size_t> total{0};
  std::vector<std::unique_ptr<pqxx::connection>> conns;
  for (std::size_t i = 0; i < consumers.size(); ++i) {
    conns.push_back(connect(url));
    conns.back()->prepare("next", "SELECT pgq.next_batch('bench', $1)");
    conns.back()->prepare("events", "SELECT ev_id, ev_type, ev_data FROM pgq.get_batch_events($1)");
    conns.back()->prepare("finish", "SELECT pgq.finish_batch($1)");
  }
  auto t0 = clock_type::now();
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < consumers.size(); ++i) {
    threads.emplace_back([&, i] {
      auto& c = *conns[i];
      std::size_t n = 0;
      for (;;) {
        pqxx::work tx(c);
        auto b = tx.exec_prepared1("next", consumers[i]);
        if (b[0].is_null()) break;
        auto batch_id = b[0].as<std::int64_t>();
        auto rows = tx.exec_prepared("events", batch_id);
        for (const auto& row : rows) {
          auto e = nlohmann::json::parse(row[2].c_str()).get<item_changed>();
          n += e.seq >= 0 ? 1 : 0;
        }
        tx.exec_prepared("finish", batch_id);
        tx.commit();
      }
      total += n;
    });
  }
  for (auto& t : threads) t.join();
  double secs = seconds_since(t0);
  if (total != expected * consumers.size()) {
    std::cerr << "bench: PgQ drain got " << total << " events, expected "
              << expected * consumers.size() << '\n';
  }
  return static_cast<double>(total) / secs;
}

void exec(const std::string& url, const std::string& sql) {
  auto c = connect(url);
  pqxx::nontransaction tx(*c);
  tx.exec(sql);
}

}  // namespace

double postgres_reference_rate(const std::string& url, int threads, int rows_per_tx,
                               std::chrono::milliseconds d) {
  { eventq::queue init(url, bench_options("init")); }  // EventQueue, for the row shape
  exec(url, "CREATE TABLE IF NOT EXISTS RefQueue (LIKE EventQueue INCLUDING ALL)");
  return ref_insert_rate(url, threads, rows_per_tx, d);
}

nlohmann::json postgres_drain_line(const std::string& url, std::int64_t rows, int instances) {
  { eventq::queue init(url, bench_options("init")); }
  exec(url,
       "TRUNCATE EventQueue, EventQueueTasks, EventQueueInstances; "
       "DELETE FROM Properties WHERE Key LIKE 'EQStamp%'");
  std::vector<std::string> names;
  for (int i = 0; i < instances; ++i) {
    names.push_back("drain-" + std::to_string(i));
    eventq::queue reg(url, bench_options(names.back()));
  }
  fill_eventq(url, rows, 0);
  double e = eventq_drain_rate(url, names, static_cast<std::size_t>(rows));
  return {{"eventq_events_per_s", e}};
}

nlohmann::json postgres_cleanup_line(const std::string& url, std::int64_t rows, bool fresh) {
  { eventq::queue init(url, bench_options("init")); }
  if (fresh) {  // alone: forget earlier runs' instances and cleanups, so this one runs at once
    exec(url,
         "TRUNCATE EventQueueTasks, EventQueueInstances; "
         "DELETE FROM Properties WHERE Key LIKE 'EQStamp%'");
  }
  exec(url, "TRUNCATE EventQueue");
  fill_eventq(url, rows, 2);
  exec(url, "VACUUM ANALYZE EventQueue");
  // Rows a day old were checkpointed long ago. Without this, the fill's ~600 MB of WAL makes
  // the server checkpoint during the cleanup (max_wal_size 1 GB), and the checkpoint's sync
  // phase stalls every commit on this disk by 90-110 ms, cleanup or not (log_checkpoints).
  exec(url, "CHECKPOINT");
  return eventq_cleanup(url);
}

nlohmann::json postgres_long_tx_line(const std::string& url, std::int64_t rows, int polls) {
  { eventq::queue init(url, bench_options("init")); }
  exec(url, "TRUNCATE EventQueue; DELETE FROM Properties WHERE Key = 'EQStamp_long-tx'");
  auto o = bench_options("long-tx");
  o.verify = eventq::verify_mode::off;  // rows filled by SQL are unsigned
  eventq::queue q(url, o);
  std::size_t got = 0;
  auto sub = q.subscribe_all([&](const eventq::event_record&, const nlohmann::json&) { ++got; });
  q.poll_once();
  // Idle polls after `rows` were raised and delivered: ms per poll.
  auto idle_poll_ms = [&] {
    got = 0;
    fill_eventq(url, rows, 0);
    while (got < static_cast<std::size_t>(rows)) q.poll_once();
    auto t0 = clock_type::now();
    for (int i = 0; i < polls; ++i) q.poll_once();
    return seconds_since(t0) * 1000 / polls;
  };
  double none_open = idle_poll_ms();
  exec(url, "TRUNCATE EventQueue");
  auto holder = connect(url);
  pqxx::work open_tx(*holder);
  open_tx.exec("SELECT pg_current_xact_id()");  // holds every snapshot's xmin from here on
  double open = idle_poll_ms();
  open_tx.abort();
  return {{"ms_per_poll_open", open},
          {"ms_per_poll_none_open", none_open},
          {"rows", rows},
          {"polls", polls}};
}

std::vector<result> run_postgres(const settings& s) {
  const std::string& url = s.pg_url;
  exec(url,
       "DROP TABLE IF EXISTS RefQueue; DROP EXTENSION IF EXISTS pgq CASCADE; "
       "DROP TABLE IF EXISTS EventQueue, Properties, EventQueueSchema CASCADE");
  { eventq::queue init(url, bench_options("init")); }
  exec(url, "CREATE TABLE RefQueue (LIKE EventQueue INCLUDING ALL)");
  auto d = std::chrono::milliseconds(static_cast<long>(3000 * s.scale));
  std::vector<result> out;
  auto add = [&](result r) {
    r.backend = "postgresql";
    std::cerr << "  postgresql: " << r.measure << ": " << r.eventq << " " << r.unit << '\n';
    out.push_back(std::move(r));
  };

  auto reference = [&](int threads, int rows) { return ref_insert_rate(url, threads, rows, d); };
  for (auto& r : raise_lines(url, 0.9, reference, d)) add(std::move(r));

  // Drain. PgQ: queue and consumers registered before the fill, like eventq's instances.
  auto drain_n = static_cast<std::int64_t>(200000 * s.scale);
  auto expected = static_cast<std::size_t>(drain_n);
  std::vector<std::string> solo{"drain-1"}, four{"drain-4a", "drain-4b", "drain-4c", "drain-4d"};
  exec(url, "CREATE EXTENSION pgq");
  exec(url, "SELECT pgq.create_queue('bench')");
  for (const auto& name : {"drain-1", "drain-4a", "drain-4b", "drain-4c", "drain-4d"}) {
    eventq::queue reg(url, bench_options(name));
    exec(url, std::string("SELECT pgq.register_consumer('bench', '") + name + "')");
  }
  fill_eventq(url, drain_n, 0);
  fill_pgq(url, drain_n);
  for (const auto* group : {&solo, &four}) {
    bool one = group->size() == 1;
    double e = eventq_drain_rate(url, *group, expected);
    double ref = pgq_drain_rate(url, *group, expected);
    add({"",
         one ? "drain 200k, 1 instance" : "drain 200k, 4 instances at once (total)",
         "events/s",
         e,
         ref,
         one ? "PgQ consumer, batches of 500" : "PgQ, 4 consumers at once",
         true,
         ">= 1.0x",
         e >= ref,
         {}});
  }

  int latency_events = std::max(100, static_cast<int>(2000 * s.scale));
  for (auto& r : session_lines(
           url, static_cast<std::int64_t>(200000 * s.scale),
           [&](std::int64_t n) { fill_eventq(url, n, 0); }, latency_events)) {
    add(std::move(r));
  }
  for (bool wake : {true, false}) {
    auto j = eventq_latency(s, url, wake, latency_events);
    result r{"",
             std::string("latency raise->handler, other process, ") +
                 (wake ? "wake-ups on" : "polling only"),
             "ms p50",
             j["p50_ms"],
             std::nullopt,
             "",
             false,
             wake ? "p50 <= 5, p99 <= 25" : "(none)",
             std::nullopt,
             j};
    if (wake) r.met = j["p50_ms"].get<double>() <= 5 && j["p99_ms"].get<double>() <= 25;
    add(r);
  }
  {
    auto j = eventq_idle(s, url, std::max(5, static_cast<int>(60 * s.scale)));
    add({"", "idle instance: CPU", "s/hour", j["cpu_s_per_hour"], std::nullopt, "", false,
         "<= 1 s/hour", j["cpu_s_per_hour"].get<double>() <= 1, j});
    add({"", "idle instance: queries", "per min", j["queries_per_min"], std::nullopt, "", false,
         "<= 1 per poll interval + renewals", j["within_target"].get<bool>(), j});
  }
  {
    auto n = static_cast<std::int64_t>(1000000 * s.scale);
    { eventq::queue reg(url, bench_options("memory")); }
    fill_eventq(url, n, 0);
    auto j = eventq_memory(s, url, "memory", static_cast<std::size_t>(n));
    add({"", "memory draining 1M: peak RSS / RSS at start", "x", j["ratio"], std::nullopt, "",
         false, "<= 2x", j["ratio"].get<double>() <= 2, j});
  }
  {
    auto j = postgres_long_tx_line(url, static_cast<std::int64_t>(100000 * s.scale), 200);
    double open = j["ms_per_poll_open"], none = j["ms_per_poll_none_open"];
    add({"", "idle poll, 100k rows raised since an open transaction began", "ms", open, none,
         "the same, no transaction open", false, "<= 2x", open <= 2 * std::max(none, 0.05), j});
  }
  {
    auto j = postgres_cleanup_line(url, static_cast<std::int64_t>(1000000 * s.scale), false);
    add({"", "cleanup 1M old rows: longest raise stall", "ms", j["max_stall_ms"], std::nullopt, "",
         false, "<= 100 ms", j["max_stall_ms"].get<double>() <= 100, j});
  }
  return out;
}

}  // namespace bench
