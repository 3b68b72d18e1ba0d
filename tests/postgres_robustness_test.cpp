// Never hang on PostgreSQL: stop() cancels a query blocked on an operator's lock, and a network
// black hole (a path that stops forwarding without a reset) fails a poll within the configured
// timeout instead of blocking for the kernel's two hours. Real server, real TCP proxy.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <optional>
#include <set>
#include <thread>

#include "../src/postgres/postgres_watchdog.h"
#include "pg_support.h"
#include "support.h"

using namespace eventq;
using namespace eventq::test;
using namespace std::chrono_literals;

namespace {

using clock_type = std::chrono::steady_clock;

std::chrono::milliseconds since(clock_type::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - t0);
}

struct counter {
  std::mutex m;
  std::set<std::int64_t> ids;
  raw_handler handler() {
    return [this](const event_record& r, const nlohmann::json&) {
      std::lock_guard lk(m);
      ids.insert(r.id);
    };
  }
  std::size_t size() {
    std::lock_guard lk(m);
    return ids.size();
  }
};

// A TCP proxy from a loopback port to the test server that can stop forwarding without closing
// anything: what a failover without a reset or a dropped NAT entry looks like to a client.
class black_hole_proxy {
 public:
  explicit black_hole_proxy(int target_port) : m_target(target_port) {
    m_listen = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(m_listen, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(m_listen, 16) == 0);
    socklen_t len = sizeof a;
    ::getsockname(m_listen, reinterpret_cast<sockaddr*>(&a), &len);
    m_port = ntohs(a.sin_port);
    m_thread = std::thread([this] { run(); });
  }
  ~black_hole_proxy() {
    m_stop = true;
    m_thread.join();
    ::close(m_listen);
  }
  int port() const { return m_port; }
  void swallow(bool on) { m_black_hole = on; }

 private:
  void run() {
    std::vector<std::pair<int, int>> pairs;  // client, server
    while (!m_stop) {
      std::vector<pollfd> fds{{m_listen, POLLIN, 0}};
      if (!m_black_hole) {
        for (auto [c, s] : pairs) {
          fds.push_back({c, POLLIN, 0});
          fds.push_back({s, POLLIN, 0});
        }
      }
      if (::poll(fds.data(), fds.size(), 20) <= 0) continue;
      if (fds[0].revents) {
        int c = ::accept(m_listen, nullptr, nullptr);
        int s = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons(static_cast<std::uint16_t>(m_target));
        if (c >= 0 && ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
          pairs.emplace_back(c, s);
        } else {
          ::close(c);
          ::close(s);
        }
        continue;  // fds no longer matches pairs
      }
      for (std::size_t i = 0; i < pairs.size(); ++i) {
        auto [c, s] = pairs[i];
        bool closed = false;
        for (auto [from, to, revents] :
             {std::tuple{c, s, fds[1 + 2 * i].revents}, std::tuple{s, c, fds[2 + 2 * i].revents}}) {
          if (!revents || closed) continue;
          char buf[65536];
          auto n = ::read(from, buf, sizeof buf);
          if (n <= 0 || ::write(to, buf, static_cast<std::size_t>(n)) != n) closed = true;
        }
        if (closed) {
          ::close(c);
          ::close(s);
          pairs.erase(pairs.begin() + static_cast<std::ptrdiff_t>(i));
          break;
        }
      }
    }
    for (auto [c, s] : pairs) {
      ::close(c);
      ::close(s);
    }
  }

  int m_target;
  int m_listen = -1;
  int m_port = 0;
  std::atomic<bool> m_stop{false}, m_black_hole{false};
  std::thread m_thread;
};

int server_port() {
  auto url = pg::server_url();  // postgresql://user@127.0.0.1:PORT/db
  auto colon = url.rfind(':');
  return std::stoi(url.substr(colon + 1));
}

}  // namespace

TEST_CASE("stop() returns within a second while a poll waits for an operator's table lock") {
  auto schema = pg::fresh_schema();
  auto url = pg::url_with_schema(schema);
  counter got;
  queue q(url, test_options("a"));
  auto sub = q.subscribe_all(got.handler());
  for (int i = 0; i < 5; ++i) q.raise_raw("t", {{"i", i}}, raise_mode::both);

  auto op = pg::connect(schema);
  pqxx::work lock(*op);
  lock.exec("LOCK TABLE EventQueue IN ACCESS EXCLUSIVE MODE");
  q.start();
  REQUIRE(wait_until([&] {
    return pg::text(schema,
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = "
                    "to_regclass('" +
                        schema + ".eventqueue')") != "0";
  }));
  // On the old code stop() waited for the lock: give the lock up after 5 s so it fails, not hangs.
  std::thread release([&] {
    std::this_thread::sleep_for(5s);
    lock.abort();
  });
  auto t0 = clock_type::now();
  q.stop();
  auto took = since(t0);
  release.join();
  MESSAGE("stop() took " << took.count() << " ms");
  CHECK(took < 1000ms);
  CHECK(got.size() == 0);
  q.start();  // after the lock is gone, everything arrives
  CHECK(wait_until([&] { return got.size() == 5; }));
  q.stop();
}

TEST_CASE("a network black hole fails a poll within the timeout; stop() returns; nothing lost") {
  auto schema = pg::fresh_schema();
  black_hole_proxy proxy(server_port());
  auto direct = pg::url_with_schema(schema);
  auto via_proxy = "postgresql://postgres@127.0.0.1:" + std::to_string(proxy.port()) +
                   "/eventq_test?schema=" + schema + "&statement_timeout=1000&connect_timeout=2";
  queue raiser(direct, test_options("raiser"));
  log_capture logs;
  counter got;
  queue q(via_proxy, test_options("a", &logs));
  auto sub = q.subscribe_all(got.handler());
  raiser.raise_raw("t", {{"n", 0}}, raise_mode::globally);
  q.start();
  REQUIRE(wait_until([&] { return got.size() == 1; }));

  proxy.swallow(true);
  for (int i = 1; i <= 5; ++i) raiser.raise_raw("t", {{"n", i}}, raise_mode::globally);
  std::this_thread::sleep_for(500ms);  // the poller reads through the black hole now
  auto t0 = clock_type::now();
  q.stop();
  auto took = since(t0);
  MESSAGE("stop() during the black hole took " << took.count() << " ms");
  // A call in flight is cancelled, and cut off 500 ms later: about 500 ms on a quiet machine.
  // The bound leaves room for a loaded 2-core CI running sanitizer builds; without the
  // watchdog, stop() waits until the network comes back (here: for ever).
  CHECK(took < 2500ms);

  q.start();
  t0 = clock_type::now();
  REQUIRE(wait_until([&] { return q.stats().poll_errors > 0; }, 20s));
  MESSAGE("poll failed after " << since(t0).count() << " ms of black hole");
  CHECK(since(t0) < 5000ms);  // statement_timeout 1 s, plus a second, plus a slow machine
  CHECK(logs.contains("no reply from PostgreSQL"));

  proxy.swallow(false);
  CHECK(wait_until([&] { return got.size() == 6; }, 30s));
  q.stop();
}

// stop() cancels the poll in flight with libpq's cancel request, which travels on a connection
// of its own and can reach the server after that poll ended: it then cancels whatever runs next
// on the connection (CI saw a poll_once() right after stop() fail with SQLSTATE 57014). Here
// the call ends at once after the cancel is sent, and the next statement is a sleep that the
// late cancel hits; the watchdog must say so, so that the reader drops that connection (as
// on_reader() does) instead of running another statement on it.
TEST_CASE("a cancel sent for a call is reported once, so that the reader drops its connection") {
  using eventq::postgres::watchdog;
  watchdog w(std::chrono::milliseconds(0));
  pqxx::connection c(pg::server_url());
  {
    watchdog::armed call(w, watchdog::reader, c);  // prepares the cancel request: a round trip
    w.cancel(watchdog::reader, std::chrono::seconds(10));  // no cut-off: the request alone
  }  // the call is over before the request reaches the server
  CHECK(w.take_cancelled(watchdog::reader));
  CHECK_FALSE(w.take_cancelled(watchdog::reader));  // once
  // Why the connection must not be used again: the request usually reaches the server while
  // this sleep runs and cancels it. (It may also arrive while the connection is idle, where
  // the server ignores it: slow builds such as ThreadSanitizer's see that.)
  bool hit = false;
  try {
    pqxx::nontransaction tx(c);
    tx.exec("SELECT pg_sleep(2)");
  } catch (const pqxx::sql_error& e) {
    CHECK(e.sqlstate() == "57014");
    hit = true;
  }
  const std::string outcome = hit ? "cancelled" : "missed";
  MESSAGE("the late cancel " << outcome << " the next statement");
  // A call that was not cancelled reports nothing.
  pqxx::connection c2(pg::server_url());
  { watchdog::armed call(w, watchdog::reader, c2); }
  CHECK_FALSE(w.take_cancelled(watchdog::reader));
}

// Sessions wake the poller when a batch finishes, so that it stores the cursor. The wake-up
// used to be stop()'s interrupt(), which also cancelled the read in flight: every batch that
// finished during a read failed that poll (SQLSTATE 57014, a poll error, a retry with backoff).
TEST_CASE("a session finishing batches wakes the poller without cancelling its read") {
  auto schema = pg::fresh_schema();
  auto url = pg::url_with_schema(schema);
  log_capture logs;
  auto o = test_options("a", &logs);
  o.page_size = 50;
  queue q(url, o);
  session_config cfg;
  cfg.threads = 2;
  cfg.batch_size = 5;
  cfg.batch_time = std::chrono::milliseconds(0);
  auto s = q.create_session(cfg);
  std::atomic<std::size_t> handled{0};
  auto reg = s.add_listener({}, [&](std::span<const event_record> b) {
    std::this_thread::sleep_for(std::chrono::microseconds(300));
    handled += b.size();
  });
  constexpr std::size_t k_events = 3000;
  for (std::size_t i = 0; i < k_events; i += 500) {
    batch b;
    for (std::size_t j = i; j < i + 500; ++j) b.add_raw("t", {{"i", j}}, raise_mode::both);
    q.raise(b);
  }
  q.start();
  REQUIRE(wait_until([&] { return handled.load() >= k_events; }, 60s));
  q.stop();
  CHECK(handled.load() == k_events);
  CHECK(q.stats().poll_errors == 0);
  CHECK(logs.count("57014") == 0);
}

// Issue 11, item 7: a transaction left open anywhere in the cluster holds every snapshot's xmin
// back. Reading "Stamp >= xmin" and filtering by visibility then walked every row raised since
// it began on every poll; reading what PgQ reads (the previous snapshot's in-progress ids, then
// the Stamps from its xmax on) walks only what is new. Counted in index entries read.
TEST_CASE("an idle poll behind a long open transaction reads no old index entries") {
  auto schema = pg::fresh_schema();
  auto url = pg::url_with_schema(schema);
  auto o = test_options("b");
  o.verify = verify_mode::off;  // rows written by SQL carry no signature
  queue b(url, o);
  std::atomic<int> got{0};
  auto sub = b.subscribe_all([&](const event_record&, const nlohmann::json&) { ++got; });
  b.poll_once();

  auto idle = pg::connect(schema);
  pqxx::work long_tx(*idle);
  long_tx.exec("SELECT pg_current_xact_id()");  // holds xmin back until it ends
  const int rows = 20000;
  pg::exec(schema,
           "INSERT INTO EventQueue (EventType, InstanceData, InstanceName, RaiseLocally, "
           "RaiseGlobally) SELECT 'fill', json_build_object('n', g), 'sql', false, true "
           "FROM generate_series(1, " +
               std::to_string(rows) + ") g");
  auto stats = [&] {
    auto t = pg::text(schema,
                      "SELECT idx_scan || ' ' || idx_tup_read FROM pg_stat_user_indexes "
                      "WHERE schemaname = '" +
                          schema + "' AND indexrelname = 'eventqueue_stamp'");
    auto sp = t.find(' ');
    return std::pair<long long, long long>(std::stoll(t.substr(0, sp)),
                                           std::stoll(t.substr(sp + 1)));
  };
  auto start = stats();
  b.poll_once();  // the backlog
  REQUIRE(got == rows);
  // Statistics reach the view within a second or so of the reader going idle.
  REQUIRE(wait_until([&] { return stats().second - start.second >= rows; }, 15s));
  std::this_thread::sleep_for(1500ms);
  auto before = stats();
  constexpr int polls = 5;
  for (int i = 0; i < polls; ++i) CHECK(b.poll_once() == 0);
  REQUIRE(wait_until([&] { return stats().first - before.first >= polls; }, 15s));
  auto read = stats().second - before.second;
  MESSAGE(polls << " idle polls behind an open transaction read " << read << " index entries");
  CHECK(read < rows / 10);  // the old read walked all 20,000 on every poll
  long_tx.abort();
}

// statement_timeout and lock_timeout bound every call on the server; a call past them is the
// database being unavailable for now (errc::database_unavailable), not a wrong statement.
TEST_CASE("lock_timeout: a poll behind an operator's lock fails as database_unavailable") {
  auto schema = pg::fresh_schema();
  auto o = test_options("a");
  queue q(pg::url_with_schema(schema, "&lock_timeout=300"), o);
  counter got;
  auto sub = q.subscribe_all(got.handler());
  q.raise_raw("t", nlohmann::json::object(), raise_mode::both);
  auto op = pg::connect(schema);
  pqxx::work lock(*op);
  lock.exec("LOCK TABLE EventQueue IN ACCESS EXCLUSIVE MODE");
  auto t0 = clock_type::now();
  std::optional<errc> code;
  std::string what;
  try {
    q.poll_once();
  } catch (const error& e) {
    code = e.code();
    what = e.what();
  }
  auto took = since(t0);
  MESSAGE("poll_once() failed after " << took.count() << " ms: " << what);
  REQUIRE(code.has_value());
  CHECK(*code == errc::database_unavailable);
  CHECK(what.find("lock_timeout") != std::string::npos);
  CHECK(took < 5000ms);
  lock.abort();
  q.poll_once();
  CHECK(got.size() == 1);  // nothing lost
}
