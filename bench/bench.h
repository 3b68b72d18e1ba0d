// Shared pieces of the benchmark: the event type, timing, results, child processes.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "eventq/eventq.h"

namespace bench {

using clock_type = std::chrono::steady_clock;

/// The benchmark's event: about 200 bytes of JSON, like a "content item changed" event.
struct item_changed {
  static constexpr std::string_view event_type = "bench.item_changed";
  std::int64_t seq = 0;
  std::string item_id;
  std::string path;
  std::string language;
  std::string database;
  std::int64_t version = 0;
  std::string changed_by;
  std::vector<std::string> fields;
};
void to_json(nlohmann::json& j, const item_changed& e);
void from_json(const nlohmann::json& j, item_changed& e);

/// An event with sequence number `seq` whose JSON text is ~200 bytes.
item_changed make_event(std::int64_t seq);
/// Its JSON text (for reference inserts of the same row shape).
std::string payload_text(std::int64_t seq);

/// One line of the results table: an eventq figure beside its reference.
struct result {
  std::string backend;              ///< "sqlite" or "postgresql"
  std::string measure;              ///< "raise 1/tx, 1 thread"
  std::string unit;                 ///< "events/s", "ms", ...
  double eventq = 0;                ///< eventq's figure
  std::optional<double> reference;  ///< the reference figure, if any
  std::string reference_name;       ///< what the reference is
  bool higher_is_better = true;
  std::string target;       ///< the issue's target, as text
  std::optional<bool> met;  ///< whether the target is met
  nlohmann::json extra;     ///< further figures (p99, max, ...)
};
nlohmann::json to_json(const result& r);

/// The raise lines both backends share: raise 1/tx with 1 and 4 threads (one queue each) beside
/// `reference(threads, 1)`, batch raise 100/tx and 1,000/tx beside `reference(1, n)`, and 8
/// threads on one queue beside the 1-thread figure. `raise_ratio` is the single-raise target
/// (0.9 on PostgreSQL, 0.8 on SQLite); batches must reach 0.8, the shared queue 5x.
std::vector<result> raise_lines(
    const std::string& url, double raise_ratio,
    const std::function<double(int threads, int rows_per_tx)>& reference,
    std::chrono::milliseconds duration);

/// Runs `body(i)` on `threads` threads for `duration` (after 10% warm-up) and returns operations
/// per second, counting what `body` returns (events done per call).
double rate(int threads, std::chrono::milliseconds duration,
            const std::function<std::size_t(int thread)>& body);

double seconds_since(clock_type::time_point t0);
std::int64_t now_ns();  ///< CLOCK_MONOTONIC, comparable across processes of this host

/// Percentile (0..100) of `v` (sorted in place).
double percentile(std::vector<double>& v, double p);

/// Resident set size now, and peak, in KiB (from /proc/self/status).
long rss_kib();
long peak_rss_kib();

/// Process CPU time (user + system) in seconds.
double cpu_seconds();

/// What the reference INSERTs write in the KeyId and Signature columns, so that their rows have
/// eventq's shape (eventq computes its signature; the references only store one).
inline constexpr const char* k_ref_key_id = "1";
inline constexpr const char* k_ref_signature =
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// What a counted statement is, told by its text.
enum class statement_kind {
  query,         ///< reading events, storing cursors: what a poll does
  change_check,  ///< SQLite's PRAGMA data_version after the WAL file changed (a wake-up check)
  lease,         ///< the instance registry: lease renewals
};

/// Statements executed by this process (libsqlite3 and libpq calls are interposed, see
/// common.cpp), counted once each when they start.
std::uint64_t statements(statement_kind k);

/// A child process running this program with `args`; stdout is read through a pipe.
class child {
 public:
  explicit child(const std::vector<std::string>& args);
  ~child();
  child(const child&) = delete;
  child& operator=(const child&) = delete;
  /// Reads one line from the child's stdout (without the newline); empty at EOF.
  std::string read_line();
  /// Waits for exit; returns the exit status.
  int wait();

 private:
  int m_pid = -1;
  FILE* m_out = nullptr;
};

/// Settings of one run, from the command line.
struct settings {
  std::string sqlite_path;  ///< empty: skip SQLite
  std::string pg_url;       ///< empty: skip PostgreSQL
  double scale = 1.0;       ///< multiplies durations and event counts (0.05 for a smoke test)
  std::string self;         ///< path of this program, for child processes
};

std::vector<result> run_sqlite(const settings& s);
std::vector<result> run_postgres(const settings& s);
/// The PostgreSQL reference alone (bench's `ref-raise`): `threads` connections, each inserting
/// `rows_per_tx` rows per autocommit INSERT into RefQueue (created like EventQueue if missing).
double postgres_reference_rate(const std::string& url, int threads, int rows_per_tx,
                               std::chrono::milliseconds d);

/// The SQLite one-instance drain line alone (bench's `drain`): a new file with `rows` rows,
/// drained by eventq and by the hand-written loop.
nlohmann::json sqlite_drain_line(const std::string& path, std::int64_t rows);
/// eventq's PostgreSQL drain alone (bench's `drain` with a PostgreSQL URL): `rows` rows, drained
/// by `instances` new instances at once; total events/s (PgQ is not run).
nlohmann::json postgres_drain_line(const std::string& url, std::int64_t rows, int instances);
/// The PostgreSQL cleanup line: `rows` back-dated rows, then eventq_cleanup(). `fresh` (bench's
/// `cleanup` subcommand) first forgets the instances and cleanups of earlier runs.
nlohmann::json postgres_cleanup_line(const std::string& url, std::int64_t rows, bool fresh);

/// The long-transaction line (bench's `long-tx`): ms per idle poll after `rows` rows were
/// raised and delivered, with a transaction open since before they were raised (it holds every
/// snapshot's xmin back; its age does not matter) and with none open.
nlohmann::json postgres_long_tx_line(const std::string& url, std::int64_t rows, int polls);

/// The farm lines (bench's `farm`, farm_bench.cpp): `processes` child processes with `queues`
/// queues each (schemas farm0...), idle for `idle_seconds` (connections in pg_stat_activity,
/// CPU of the server's processes and of the farm), then `pings` events raised 100 ms apart in
/// farm0: raise→handler latency over every process (p50/p99).
nlohmann::json postgres_farm_line(const settings& s, const std::string& url, int processes,
                                  int queues, int idle_seconds, int pings);
int child_farm(const std::vector<std::string>& args);

/// Measurements shared by both backends (eventq side), in eventq_side.cpp.
eventq::options bench_options(const std::string& instance);
double eventq_raise_rate(const std::string& url, int threads, bool shared_queue,
                         std::chrono::milliseconds d);
double eventq_batch_rate(const std::string& url, int batch_size, std::chrono::milliseconds d);
/// Drains everything pending for the given (already registered) instances at once; returns
/// events delivered per second per instance and checks each got `expected`.
double eventq_drain_rate(const std::string& url, const std::vector<std::string>& instances,
                         std::size_t expected);
/// Raise→handler latency through another process; fills p50/p99/max (ms).
nlohmann::json eventq_latency(const settings& s, const std::string& url, bool wakeups, int events);
/// Idle instance in another process: statements/min and CPU s/hour.
nlohmann::json eventq_idle(const settings& s, const std::string& url, int seconds);
/// Memory while draining `count` events already queued for `instance`, in another process.
nlohmann::json eventq_memory(const settings& s, const std::string& url, const std::string& instance,
                             std::size_t count);
/// Cleanup of everything older than 1 day while a thread raises: seconds and longest stall.
nlohmann::json eventq_cleanup(const std::string& url);

/// Event sessions (issue 13): a drain of `rows` events (filled by `fill_rows` after the
/// instance registered) through a session of 4 threads, 4 listeners and batches of 100 beside a
/// default-session listener; and in-process raise→listener latency with batch_time 0 and 50 ms.
std::vector<result> session_lines(const std::string& url, std::int64_t rows,
                                  const std::function<void(std::int64_t)>& fill_rows,
                                  int latency_events);

/// Child-process entry points (argv after the mode name).
int child_latency_receiver(const std::vector<std::string>& args);
int child_idle(const std::vector<std::string>& args);
int child_memory(const std::vector<std::string>& args);

}  // namespace bench
