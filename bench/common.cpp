// Shared pieces of the benchmark (see bench.h).
#include <dlfcn.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <thread>

#include "bench.h"

// ---- statement counters ----------------------------------------------------------------------
// The program exports these (ENABLE_EXPORTS), so libeventq's and libpqxx's calls into libsqlite3
// and libpq land here first: the idle measurement counts the statements an instance really runs.

namespace {
// Statement executions by kind (bench::statement_kind): a statement is counted once when it
// starts, however many rows it returns.
std::atomic<std::uint64_t> g_statements[3];

bench::statement_kind kind_of(const char* sql) {
  if (!sql) return bench::statement_kind::query;
  if (std::strstr(sql, "data_version")) return bench::statement_kind::change_check;
  if (std::strstr(sql, "EventQueueInstances")) return bench::statement_kind::lease;
  return bench::statement_kind::query;
}
// EVENTQ_BENCH_TRACE=1 prints each counted statement to stderr (to see what an idle
// instance runs).
const bool g_trace = [] {
  const char* v = std::getenv("EVENTQ_BENCH_TRACE");
  return v && *v == '1';
}();

void count(bench::statement_kind k, const char* text) {
  ++g_statements[static_cast<int>(k)];
  if (g_trace) std::fprintf(stderr, "statement: %.100s\n", text ? text : "?");
}

template <class F>
F next_symbol(const char* name) {
  void* p = dlsym(RTLD_NEXT, name);
  if (!p) {
    std::fprintf(stderr, "bench: cannot find %s\n", name);
    std::abort();
  }
  return reinterpret_cast<F>(p);
}
}  // namespace

struct pg_conn;
struct pg_result;
extern "C" {
int sqlite3_step(sqlite3_stmt* s) {
  static auto real = next_symbol<int (*)(sqlite3_stmt*)>("sqlite3_step");
  if (!sqlite3_stmt_busy(s))
    count(kind_of(sqlite3_sql(s)), sqlite3_sql(s));  // a new execution, not a row
  return real(s);
}
pg_result* PQexec(pg_conn* c, const char* q) {
  static auto real = next_symbol<pg_result* (*)(pg_conn*, const char*)>("PQexec");
  count(kind_of(q), q);
  return real(c, q);
}
pg_result* PQexecParams(pg_conn* c, const char* q, int n, const unsigned* types,
                        const char* const* values, const int* lengths, const int* formats,
                        int result_format) {
  static auto real =
      next_symbol<pg_result* (*)(pg_conn*, const char*, int, const unsigned*, const char* const*,
                                 const int*, const int*, int)>("PQexecParams");
  count(kind_of(q), q);
  return real(c, q, n, types, values, lengths, formats, result_format);
}
pg_result* PQexecPrepared(pg_conn* c, const char* name, int n, const char* const* values,
                          const int* lengths, const int* formats, int result_format) {
  static auto real = next_symbol<pg_result* (*)(pg_conn*, const char*, int, const char* const*,
                                                const int*, const int*, int)>("PQexecPrepared");
  count(bench::statement_kind::query, name);  // eventq prepares only event and cursor statements
  return real(c, name, n, values, lengths, formats, result_format);
}
}

namespace bench {

std::uint64_t statements(statement_kind k) { return g_statements[static_cast<int>(k)]; }

// ---- the event ---------------------------------------------------------------------------------

void to_json(nlohmann::json& j, const item_changed& e) {
  j = nlohmann::json{{"seq", e.seq},       {"item", e.item_id}, {"path", e.path},
                     {"lang", e.language}, {"db", e.database},  {"version", e.version},
                     {"by", e.changed_by}, {"fields", e.fields}};
}

void from_json(const nlohmann::json& j, item_changed& e) {
  j.at("seq").get_to(e.seq);
  j.at("item").get_to(e.item_id);
  j.at("path").get_to(e.path);
  j.at("lang").get_to(e.language);
  j.at("db").get_to(e.database);
  j.at("version").get_to(e.version);
  j.at("by").get_to(e.changed_by);
  j.at("fields").get_to(e.fields);
}

item_changed make_event(std::int64_t seq) {
  item_changed e;
  e.seq = seq;
  char id[40];
  std::snprintf(id, sizeof id, "%08llx-4b1c-4d2e-9f3a-%012llx",
                static_cast<unsigned long long>(seq & 0xffffffff),
                static_cast<unsigned long long>(seq * 7919));
  e.item_id = id;
  e.path = "/sitecore/content/home/products/item-" + std::to_string(seq % 1000);
  e.language = "en";
  e.database = "web";
  e.version = seq % 7 + 1;
  e.changed_by = "sitecore\\editor";
  e.fields = {"Title", "Text"};
  return e;
}

std::string payload_text(std::int64_t seq) { return nlohmann::json(make_event(seq)).dump(); }

std::vector<result> raise_lines(
    const std::string& url, double raise_ratio,
    const std::function<double(int threads, int rows_per_tx)>& reference,
    std::chrono::milliseconds d) {
  std::vector<result> out;
  auto ratio_target = [](double x) {
    char buf[16];
    std::snprintf(buf, sizeof buf, ">= %.1fx", x);
    return std::string(buf);
  };
  double one = 0;
  for (int threads : {1, 4}) {
    double e = eventq_raise_rate(url, threads, false, d);
    double ref = reference(threads, 1);
    if (threads == 1) one = e;
    out.push_back({"",
                   "raise 1/tx, " + std::to_string(threads) + " thread(s), 1 queue each",
                   "events/s",
                   e,
                   ref,
                   "prepared INSERT, autocommit",
                   true,
                   ratio_target(raise_ratio),
                   e >= raise_ratio * ref,
                   {}});
  }
  for (int n : {100, 1000}) {
    double e = eventq_batch_rate(url, n, d);
    double ref = reference(1, n);
    out.push_back({"",
                   "batch raise " + std::to_string(n) + "/tx",
                   "events/s",
                   e,
                   ref,
                   "multi-row INSERT",
                   true,
                   ratio_target(0.8),
                   e >= 0.8 * ref,
                   {}});
  }
  double e = eventq_raise_rate(url, 8, true, d);
  out.push_back({"",
                 "raise 1/tx, 8 threads, one shared queue",
                 "events/s",
                 e,
                 one,
                 "eventq 1 thread (above)",
                 true,
                 ">= 5x",
                 e >= 5 * one,
                 {}});
  return out;
}

nlohmann::json to_json(const result& r) {
  nlohmann::json j{{"backend", r.backend},
                   {"measure", r.measure},
                   {"unit", r.unit},
                   {"eventq", r.eventq},
                   {"target", r.target}};
  if (r.reference) {
    j["reference"] = *r.reference;
    j["reference_name"] = r.reference_name;
    if (*r.reference > 0 && r.eventq > 0) {
      j["ratio"] = r.higher_is_better ? r.eventq / *r.reference : *r.reference / r.eventq;
    }
  }
  if (r.met) j["met"] = *r.met;
  if (!r.extra.is_null()) j["extra"] = r.extra;
  return j;
}

// ---- timing ------------------------------------------------------------------------------------

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

std::int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

double rate(int threads, std::chrono::milliseconds duration,
            const std::function<std::size_t(int)>& body) {
  std::atomic<bool> measuring{false}, stop{false};
  std::atomic<std::uint64_t> done{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      while (!stop) {
        std::size_t n = body(t);
        if (measuring) done += n;
      }
    });
  }
  std::this_thread::sleep_for(duration / 10);
  measuring = true;
  auto t0 = clock_type::now();
  std::this_thread::sleep_for(duration);
  measuring = false;
  double secs = seconds_since(t0);
  stop = true;
  for (auto& t : pool) t.join();
  return static_cast<double>(done.load()) / secs;
}

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  auto i = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::min(v.size() - 1, i == 0 ? 0 : i - 1)];
}

namespace {
long status_kib(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(key, 0) == 0) return std::stol(line.substr(std::strlen(key)));
  }
  return -1;
}
}  // namespace

long rss_kib() { return status_kib("VmRSS:"); }
long peak_rss_kib() { return status_kib("VmHWM:"); }

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// ---- child processes ---------------------------------------------------------------------------

child::child(const std::vector<std::string>& args) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  m_pid = fork();
  if (m_pid < 0) throw std::runtime_error("fork failed");
  if (m_pid == 0) {
    dup2(fds[1], 1);
    close(fds[0]);
    close(fds[1]);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(fds[1]);
  m_out = fdopen(fds[0], "r");
}

child::~child() {
  if (m_pid > 0) {
    kill(m_pid, SIGKILL);
    wait();
  }
  if (m_out) std::fclose(m_out);
}

std::string child::read_line() {
  std::string line;
  int c;
  while ((c = std::fgetc(m_out)) != EOF && c != '\n') line.push_back(static_cast<char>(c));
  return line;
}

int child::wait() {
  if (m_pid <= 0) return -1;
  int status = 0;
  waitpid(m_pid, &status, 0);
  m_pid = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace bench
