// The eventq command run as a process, its output checked. Built twice: cli_test (SQLite) and
// postgres_cli_test (PostgreSQL, EVENTQ_TEST_POSTGRES).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cstdio>
#include <regex>
#include <sstream>
#include <thread>

#include "support.h"
#ifdef EVENTQ_TEST_POSTGRES
#include "pg_support.h"
#endif

using namespace eventq;
using namespace eventq::test;
using namespace std::chrono_literals;

namespace {

#ifdef EVENTQ_TEST_POSTGRES
struct database {
  std::string schema = pg::fresh_schema();
  std::string url = pg::url_with_schema(schema);
  void exec(const std::string& sql) { pg::exec(schema, sql); }
  std::string properties() {
    return pg::text(schema,
                    "SELECT string_agg(Key || '=' || Value, ';' ORDER BY Key) FROM Properties");
  }
};
#else
struct database {
  temp_dir dir;
  std::string url = "sqlite:" + dir.file("e.db");
  void exec(const std::string& sql) { sqlite_exec(dir.file("e.db"), sql); }
  std::string properties() {
    return sqlite_text(dir.file("e.db"),
                       "SELECT group_concat(kv, ';') FROM (SELECT Key || '=' || Value AS kv FROM "
                       "Properties ORDER BY Key)");
  }
};
#endif

struct result {
  int code = -1;
  std::string out, err;
};

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs the eventq command with `args` (and `env`, "NAME=value" words) through the shell.
result eventq_cmd(const std::vector<std::string>& args, const std::string& env = "") {
  temp_dir dir;
  std::string cmd = env + " " + quote(EVENTQ_CLI);
  for (const auto& a : args) {
    cmd += ' ';  // not " " + quote(a): GCC 12 at -O2 warns (-Wrestrict) inside that operator+
    cmd += quote(a);
  }
  cmd += " 2>" + dir.file("err");
  result r;
  std::FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = read_file(dir.file("err"));
  return r;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

bool one_line_error(const result& r) {
  return r.code != 0 && r.err.rfind("eventq: ", 0) == 0 && r.err.find('\n') == r.err.size() - 1;
}

}  // namespace

TEST_CASE("migrate, raise, stats (table, JSON, Prometheus), instances, cleanup") {
  database db;
  auto m = eventq_cmd({"--db", db.url, "migrate"});
  CHECK(m.code == 0);
  CHECK(m.out.find("schema version " + latest_schema_version_text()) != std::string::npos);

  queue a(db.url, test_options("web-01"));  // a live instance that has read nothing yet
  auto r1 =
      eventq_cmd({"raise", "--db", db.url, "--type", "page.changed", "--data", R"({"page":1})"});
  CHECK(r1.code == 0);
  CHECK(r1.out.find("raised event") == 0);
  auto r2 = eventq_cmd({"raise", "--type", "page.changed", "--data", R"({"page":2})", "--both",
                        "--instance", "editor"},
                       "EVENTQ_DB=" + quote(db.url));
  CHECK(r2.code == 0);
  CHECK(eventq_cmd({"raise", "--db", db.url, "--type", "cache.flush", "--data", "{}", "--local"})
            .code == 0);

  auto j = eventq_cmd({"stats", "--db", db.url, "--json"});
  REQUIRE(j.code == 0);
  auto stats = nlohmann::json::parse(j.out);
  CHECK(stats.at("rows") == 3);
  CHECK(stats.at("schema_version") == latest_schema_version());
  CHECK(stats.at("eventq_version") == std::string(eventq::version()));
  if (db.url.rfind("sqlite:", 0) == 0) {  // URL parameters are not part of the file name
    auto w = eventq_cmd({"stats", "--db", db.url + "?watch=off", "--json"});
    REQUIRE(w.code == 0);
    CHECK(nlohmann::json::parse(w.out).at("rows") == 3);
  }
  REQUIRE(stats.at("types").size() == 2);
  CHECK(stats.at("types")[0].at("type") == "cache.flush");
  CHECK(stats.at("types")[1].at("rows") == 2);
  REQUIRE(stats.at("instances").size() == 1);
  CHECK(stats.at("instances")[0].at("name") == "web-01");
  CHECK(stats.at("instances")[0].at("live") == true);
  CHECK(stats.at("instances")[0].at("behind") == 3);
  CHECK(stats.at("instances")[0].at("heartbeat_age_seconds").get<double>() < 60);

  auto p = eventq_cmd({"stats", "--db", db.url, "--prometheus"});
  REQUIRE(p.code == 0);
  CHECK(std::regex_search(p.out, std::regex("(^|\n)eventq_rows 3\n")));
  CHECK(
      std::regex_search(p.out, std::regex("\neventq_rows_by_type\\{type=\"page.changed\"\\} 2\n")));
  CHECK(std::regex_search(p.out,
                          std::regex("\neventq_instance_behind\\{instance=\"web-01\"\\} 3\n")));
  CHECK(
      std::regex_search(p.out, std::regex("\neventq_instance_live\\{instance=\"web-01\"\\} 1\n")));
  CHECK(std::regex_search(p.out, std::regex("\n# TYPE eventq_rows gauge\n")));
  CHECK(p.out.find("\neventq_build_info{version=\"" + std::string(eventq::version()) + "\"} 1\n") !=
        std::string::npos);
  for (const auto& line : lines_of(p.out)) {
    INFO(line);
    CHECK(std::regex_match(line,
                           std::regex("# (HELP|TYPE) .*|eventq_[a-z_]+(\\{[a-z]+=\"[^\"]*\"\\})? "
                                      "-?[0-9.e+-]+")));
  }

  auto t = eventq_cmd({"stats", "--db", db.url});
  CHECK(t.code == 0);
  CHECK(t.out.find("rows           3") != std::string::npos);
  CHECK(t.out.find("eventq         " + std::string(eventq::version()) + "\n") == 0);
  CHECK(t.out.find("web-01") != std::string::npos);

  auto i = eventq_cmd({"instances", "--db", db.url, "--json"});
  REQUIRE(i.code == 0);
  auto list = nlohmann::json::parse(i.out);
  REQUIRE(list.size() == 1);
  CHECK(list[0].at("pid") == static_cast<int>(getpid()));
  CHECK(eventq_cmd({"instances", "--db", db.url}).out.find("web-01") != std::string::npos);

  std::this_thread::sleep_for(5ms);
  auto dry = eventq_cmd({"cleanup", "--db", db.url, "--keep", "0", "--dry-run"});
  CHECK(dry.code == 0);
  CHECK(dry.out.find("cleanup (dry run): would delete 0 rows") == 0);  // web-01 has not read them
  a.poll_once();
  dry = eventq_cmd({"cleanup", "--db", db.url, "--keep", "0", "--dry-run"});
  CHECK(dry.out.find("would delete 3 rows") != std::string::npos);
  auto kept = eventq_cmd({"cleanup", "--db", db.url, "--keep", "1d"});
  CHECK(kept.code == 0);
  CHECK(kept.out.find("cleanup: deleted 0 rows") == 0);
  auto done = eventq_cmd({"cleanup", "--db", db.url, "--keep", "0s"});
  CHECK(done.code == 0);
  CHECK(std::regex_match(done.out, std::regex("cleanup: deleted 3 rows in 1 batch, removed 0 dead "
                                              "instances, [0-9.]+ s\n")));
  auto after = nlohmann::json::parse(eventq_cmd({"stats", "--db", db.url, "--json"}).out);
  CHECK(after.at("rows") == 0);
  CHECK(after.at("last_cleanup_result").get<std::string>().find("deleted 3 rows") !=
        std::string::npos);
}

TEST_CASE("resync and replay reach a live instance in another process; a dead one is refused") {
  database db;
  queue raiser(db.url, test_options("raiser"));
  temp_dir dir;
  auto ids = dir.file("ids");
  // The peer's lease is 1 s: it renews, and takes requests, every 333 ms.
  child_process consumer({peer_program(), "consume", db.url, "web-01", ids});
  auto tools = open_storage(db.url, test_options("tools"));
  // Live and with its start cursor stored: it registers first, then takes the head, and ticks
  // raised in between would fall before its start.
  REQUIRE(wait_until([&] {
    for (const auto& i : tools->instances())
      if (i.name == "web-01" && i.live && i.cursor) return true;
    return false;
  }));
  for (int i = 0; i < 3; ++i) raiser.raise_raw("tick", {{"n", i}}, raise_mode::globally);
  REQUIRE(wait_until([&] { return lines_of(read_file(ids)).size() == 3; }));

  auto t0 = std::chrono::steady_clock::now();
  auto replay = eventq_cmd(
      {"replay", "--db", db.url, "--instance", "web-01", "--since", "30m", "--wait", "10s"});
  INFO(replay.out << replay.err);
  CHECK(replay.code == 0);
  CHECK(replay.out.find("replaying every retained event raised since") != std::string::npos);
  CHECK(wait_until([&] { return lines_of(read_file(ids)).size() == 6; }));
  auto took = std::chrono::steady_clock::now() - t0;
  CHECK(took < 10s);  // bounded; the request's own times below are the precise measure
  auto got = lines_of(read_file(ids));
  CHECK(std::vector<std::string>(got.begin(), got.begin() + 3) ==
        std::vector<std::string>(got.begin() + 3, got.end()));

  auto resync = eventq_cmd({"resync", "--db", db.url, "--instance", "web-01", "--wait", "10s"});
  CHECK(resync.code == 0);
  CHECK(resync.out.find("resynced") != std::string::npos);
  CHECK(wait_until([&] {
    return read_file(ids + ".missed").find("resync requested by an operator") != std::string::npos;
  }));
  raiser.raise_raw("tick", {{"n", 3}}, raise_mode::globally);  // continues from the head
  CHECK(wait_until([&] { return lines_of(read_file(ids)).size() == 7; }));
  auto requests = tools->control_requests(10);
  REQUIRE(requests.size() == 2);
  CHECK(requests[0].action == control_action::resync);
  CHECK(requests[0].done.has_value());
  CHECK(requests[1].result.find("replaying") == 0);
  for (const auto& c : requests) {
    REQUIRE(c.picked_up.has_value());
    REQUIRE(c.done.has_value());
    // Taken at the next renewal, within lease/3 (333 ms; 300 ms more for a loaded CI), then
    // carried out at the next poll (100 ms).
    CHECK(*c.picked_up - c.requested < 333ms + 300ms);
    CHECK(*c.done - c.requested < 1500ms);
  }
  // The instance reported its counters at a renewal.
  CHECK(wait_until([&] {
    for (const auto& i : tools->instances())
      if (i.name == "web-01" && i.counters && i.counters->delivered >= 7) return true;
    return false;
  }));

  auto dead = eventq_cmd({"resync", "--db", db.url, "--instance", "raiser-gone"});
  CHECK(dead.code == 1);
  CHECK(one_line_error(dead));
  CHECK(dead.err.find("'raiser-gone' is not live") != std::string::npos);
  auto none = eventq_cmd({"replay", "--db", db.url, "--instance", "web-01"});
  CHECK(none.code == 2);  // --since is required

  raiser.raise_raw("stop", nlohmann::json::object(), raise_mode::globally);
  CHECK(consumer.wait(10s) == std::optional<int>(0));
  // Registered, then its process exited: still in the registry, no longer live, refused.
  REQUIRE(wait_until([&] {
    for (const auto& i : tools->instances())
      if (i.name == "web-01" && !i.live) return true;
    return false;
  }));
  auto stopped = eventq_cmd({"resync", "--db", db.url, "--instance", "web-01"});
  CHECK(stopped.code == 1);
  CHECK(one_line_error(stopped));
  CHECK(stopped.err.find("'web-01' is not live") != std::string::npos);
  CHECK(tools->control_requests(10).size() == 2);  // nothing was stored
}

TEST_CASE("eventq --version names the library's version, without a database") {
  auto v = eventq_cmd({"--version"}, "env -u EVENTQ_DB");
  CHECK(v.code == 0);
  CHECK(v.out == "eventq " + std::string(eventq::version()) + "\n");
}

TEST_CASE("every error is one line on stderr and a non-zero exit") {
  database db;
  CHECK(eventq_cmd({"--db", db.url, "migrate"}).code == 0);
  auto none = eventq_cmd({"stats"}, "env -u EVENTQ_DB");
  CHECK(none.code == 2);
  CHECK(one_line_error(none));
  CHECK(none.err.find("EVENTQ_DB") != std::string::npos);
  auto bad_keep = eventq_cmd({"cleanup", "--db", db.url, "--keep", "tomorrow"});
  CHECK(bad_keep.code == 2);
  CHECK(one_line_error(bad_keep));
  CHECK(bad_keep.err.find("1d") != std::string::npos);
  auto no_keep = eventq_cmd({"cleanup", "--db", db.url});
  CHECK(no_keep.code == 2);
  CHECK(one_line_error(no_keep));
  auto bad_json = eventq_cmd({"raise", "--db", db.url, "--type", "t", "--data", "{nope"});
  CHECK(bad_json.code == 2);
  CHECK(one_line_error(bad_json));
  auto not_object = eventq_cmd({"raise", "--db", db.url, "--type", "t", "--data", "[1]"});
  CHECK(not_object.code == 1);
  CHECK(one_line_error(not_object));
  auto unknown = eventq_cmd({"--db", db.url, "frobnicate"});
  CHECK(unknown.code == 2);
  CHECK(one_line_error(unknown));
  auto missing = eventq_cmd({"stats", "--db", "sqlite:/nonexistent/dir/e.db"});
  CHECK(missing.code == 1);
  CHECK(one_line_error(missing));
  CHECK(missing.err.find("eventq migrate") != std::string::npos);
  auto unreachable = eventq_cmd({"stats", "--db", "postgresql://nobody:secret@127.0.0.1:1/x"});
  CHECK(unreachable.code == 1);
  CHECK(one_line_error(unreachable));
  CHECK(unreachable.err.find("secret") == std::string::npos);
  auto bad_url = eventq_cmd({"stats", "--db", "mysql://x"});
  CHECK(bad_url.code == 1);
  CHECK(one_line_error(bad_url));
}

TEST_CASE("tail sees events raised by another process and changes no Properties row") {
  database db;
  { queue init(db.url, test_options("consumer")); }  // cursors that must not move
  { queue init(db.url, test_options("raiser")); }
  CHECK(eventq_cmd({"raise", "--db", db.url, "--type", "first", "--data", R"({"n":0})"}).code == 0);
  auto before = db.properties();
  REQUIRE(!before.empty());
  result tailed;
  std::thread t([&] {
    tailed = eventq_cmd({"tail", "--from-start", "--count", "3", "--json"},
                        "EVENTQ_DB=" + quote(db.url));
  });
  std::this_thread::sleep_for(500ms);
  child_process raiser({peer_program(), "raise", db.url, "raiser", "2"});
  CHECK(raiser.wait(30s) == 0);
  t.join();
  CHECK(tailed.code == 0);
  std::vector<nlohmann::json> lines;
  for (const auto& line : lines_of(tailed.out)) {
    lines.push_back(nlohmann::json::parse(line));
  }
  REQUIRE(lines.size() == 3);
  CHECK(lines[0].at("type") == "first");
  CHECK(lines[1].at("type") == "tick");
  CHECK(lines[1].at("instance") == "raiser");
  CHECK(lines[2].at("data").at("n") == 1);
  CHECK(db.properties() == before);

  auto typed =
      eventq_cmd({"tail", "--db", db.url, "--from-start", "--type", "tick", "--count", "1"});
  CHECK(typed.code == 0);
  CHECK(typed.out.find(" tick from raiser (globally) {\"n\":0}") != std::string::npos);
  CHECK(db.properties() == before);
}

TEST_CASE("verify lists the rows instances refuse, and exits 1 while there are any") {
  database db;
  {
    queue a(db.url, test_options("web-01"));
    a.raise_raw("page.changed", {{"page", 1}}, raise_mode::globally);
  }
  auto clean = eventq_cmd({"verify", "--db", db.url});
  CHECK(clean.code == 0);
  CHECK(clean.out.empty());
  CHECK(clean.err.find("0 row(s) would be refused") != std::string::npos);
  db.exec(
      "INSERT INTO EventQueue (EventType, InstanceData, InstanceName, RaiseLocally, "
      "RaiseGlobally) VALUES ('forged', '{\"page\": 2}', 'intruder', false, true)");
  auto bad = eventq_cmd({"verify", "--db", db.url, "--json"});
  CHECK(bad.code == 1);
  auto rows = lines_of(bad.out);
  REQUIRE(rows.size() == 1);
  auto j = nlohmann::json::parse(rows[0]);
  CHECK(j.at("type") == "forged");
  CHECK(j.at("instance") == "intruder");
  CHECK(j.at("verdict") == "unauthentic");
}

TEST_CASE("tail marks a forged copy of a genuine row as refused, and escapes control bytes") {
  database db;
  std::int64_t genuine = 0;
  {
    queue a(db.url, test_options("web-01"));
    genuine = a.raise_raw("page.changed", {{"page", 1}}, raise_mode::globally);
  }
  // A genuine row copied by SQL with another payload: its signature no longer matches.
  db.exec(
      "INSERT INTO EventQueue (EventType, InstanceData, InstanceName, RaiseLocally, "
      "RaiseGlobally, Created, KeyId, Signature) SELECT EventType, '{\"page\": 666}', "
      "InstanceName, RaiseLocally, RaiseGlobally, Created, KeyId, Signature FROM EventQueue "
      "WHERE Id = " +
      std::to_string(genuine));
#ifdef EVENTQ_TEST_POSTGRES
  const std::string esc = "chr(27)";
#else
  const std::string esc = "char(27)";
#endif
  db.exec(
      "INSERT INTO EventQueue (EventType, InstanceData, InstanceName, RaiseLocally, "
      "RaiseGlobally) VALUES ('evil' || " +
      esc + " || '[2J', '{}', 'x' || " + esc + ", true, true)");
  auto json = eventq_cmd({"tail", "--db", db.url, "--from-start", "--count", "3", "--json"});
  REQUIRE(json.code == 0);
  auto lines = lines_of(json.out);
  REQUIRE(lines.size() == 3);
  auto first = nlohmann::json::parse(lines[0]);
  auto forged = nlohmann::json::parse(lines[1]);
  CHECK(first.at("verdict") == "ok");
  CHECK(forged.at("verdict") == "unauthentic");
  CHECK(forged.at("reason").get<std::string>().find("signature does not match") !=
        std::string::npos);
  CHECK(forged.at("data").at("page") == 666);
  auto text = eventq_cmd({"tail", "--db", db.url, "--from-start", "--count", "3"});
  REQUIRE(text.code == 0);
  auto text_lines = lines_of(text.out);
  REQUIRE(text_lines.size() == 3);
  CHECK(text_lines[0].rfind("REFUSED", 0) == std::string::npos);
  CHECK(text_lines[1].rfind("REFUSED (unauthentic: signature does not match", 0) == 0);
  CHECK(text.out.find('\x1b') == std::string::npos);
  CHECK(text_lines[2].find("evil\\x1b[2J from x\\x1b") != std::string::npos);
  // verify prints the same names escaped.
  auto verified = eventq_cmd({"verify", "--db", db.url});
  CHECK(verified.code == 1);
  CHECK(verified.out.find('\x1b') == std::string::npos);
}

#ifdef EVENTQ_TEST_POSTGRES
TEST_CASE("an infinity row (stored before schema 4): verify lists it, stats works") {
  database db;
  { queue a(db.url, test_options("web-01")); }
  db.exec("ALTER TABLE EventQueue DROP CONSTRAINT EventQueue_Created");
  db.exec(
      "INSERT INTO EventQueue (EventType, InstanceData, InstanceName, RaiseLocally, "
      "RaiseGlobally, Created) VALUES ('t', '{}', 'x', true, true, 'infinity')");
  auto verified = eventq_cmd({"verify", "--db", db.url, "--json"});
  CHECK(verified.code == 1);
  auto rows = lines_of(verified.out);
  REQUIRE(rows.size() == 1);
  CHECK(nlohmann::json::parse(rows[0]).at("verdict") == "malformed");
  auto stats = eventq_cmd({"stats", "--db", db.url, "--json"});
  CHECK(stats.code == 0);
  CHECK(nlohmann::json::parse(stats.out).at("rows") == 1);
}
#endif

TEST_CASE("failures lists the events a session's listener gave up on") {
  database db;
  std::int64_t bad = 0;
  {
    queue r(db.url, test_options("web-01"));
    queue w(db.url, test_options("editor"));
    session_config cfg;
    cfg.name = "search";
    cfg.retries = 1;
    cfg.retry_backoff = std::chrono::milliseconds(1);
    auto s = r.create_session(cfg);
    auto reg = s.add_listener(
        {}, [](std::span<const event_record>) { throw std::runtime_error("index\nread-only"); });
    bad = w.raise_raw("page.changed", {{"page", 1}}, raise_mode::globally);
    r.poll_once();
    REQUIRE(s.drain(std::chrono::seconds(5)));
  }
  auto text = eventq_cmd({"failures", "--db", db.url});
  CHECK(text.code == 0);
  auto lines = lines_of(text.out);
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].find("\tweb-01\tsearch\t" + std::to_string(bad) +
                      "\tpage.changed\t2\tindex read-only") != std::string::npos);
  auto json = eventq_cmd({"failures", "--db", db.url, "--json", "--instance", "web-01"});
  REQUIRE(json.code == 0);
  auto j = nlohmann::json::parse(lines_of(json.out).at(0));
  CHECK(j.at("event_id") == bad);
  CHECK(j.at("attempts") == 2);
  CHECK(j.at("error") == "index\nread-only");
  auto none = eventq_cmd({"failures", "--db", db.url, "--instance", "someone-else"});
  CHECK(none.code == 0);
  CHECK(none.out.empty());
  CHECK(open_storage(db.url, test_options("tools"))->failure_count() == 1);  // the status page's
}
