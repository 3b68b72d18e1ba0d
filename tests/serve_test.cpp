// `eventq serve` run as a process over a database with live instances; the page loaded in
// headless Chromium (Debian's chromium), /metrics and /api/status fetched over HTTP.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <httplib.h>

#include <cstdio>
#include <regex>
#include <set>
#include <sstream>

#include "support.h"

using namespace eventq;
using namespace eventq::test;
using namespace std::chrono_literals;

namespace {

// eventq serve in a child process, its stdout and stderr in files.
struct server {
  temp_dir dir;
  std::unique_ptr<child_process> proc;
  std::string url;  // "http://127.0.0.1:PORT"
  int port = 0;
  std::optional<int> exit_code;  // when it exited before listening

  explicit server(const std::vector<std::string>& args) {
    std::string cmd = "exec '" + std::string(EVENTQ_CLI) + "'";
    for (const auto& a : args) cmd += " '" + a + "'";
    cmd += " >" + dir.file("out") + " 2>" + dir.file("err");
    proc = std::make_unique<child_process>(std::vector<std::string>{"/bin/sh", "-c", cmd});
    std::smatch m;
    wait_until([&] {
      auto out = read_file(dir.file("out"));
      return std::regex_search(out, m, std::regex("listening on http://[^:]+:([0-9]+)/")) ||
             (exit_code = proc->wait(0ms)).has_value();
    });
    auto out = read_file(dir.file("out"));
    if (std::regex_search(out, m, std::regex("listening on (http://[^:]+:([0-9]+))/"))) {
      url = m[1];
      port = std::stoi(m[2]);
    }
  }
  std::string err() { return read_file(dir.file("err")); }
};

std::string run(const std::string& cmd) {
  std::string out;
  std::FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

// The page as Chromium sees it after parsing (the DOM, serialised).
std::string chromium_dom(const std::string& url, const temp_dir& dir) {
  return run("timeout 60 chromium --headless --no-sandbox --disable-gpu --user-data-dir=" +
             dir.file("chromium") + " --dump-dom '" + url + "' 2>/dev/null");
}

}  // namespace

TEST_CASE("the status page lists every instance with its lag; hostile text shows as text") {
  temp_dir dir;
  std::string db = "sqlite:" + dir.file("e.db");
  log_capture quiet;  // 1201 rows of types nobody subscribed to
  auto fast_opts = test_options("web-fast", &quiet);
  fast_opts.lease = 600ms;  // renews, and reports its counters, every 200 ms
  queue fast(db, fast_opts);
  auto slow_opts = test_options("web-slow");
  slow_opts.lease = 600ms;
  queue slow(db, slow_opts);
  queue raiser(db, test_options("raiser"));
  batch b;
  for (int i = 0; i < 1200; ++i) b.add_raw("page.changed", {{"page", i}}, raise_mode::globally);
  raiser.raise(b);
  raiser.raise_raw("<script>alert(1)</script>", nlohmann::json::object(), raise_mode::globally);
  fast.poll_once();  // caught up; web-slow is 1201 behind
  auto tools = open_storage(db, test_options("tools"));
  REQUIRE(wait_until([&] {
    for (const auto& i : tools->instances())
      if (i.name == "web-fast" && i.counters && i.counters->delivered == 0 &&
          i.counters->polls == 1)
        return true;
    return false;
  }));
  control_request r;
  r.instance = "web-slow";
  r.action = control_action::replay;
  r.since = std::chrono::system_clock::now() - 1h;
  r.requested_by = "serve_test";
  auto request_id = tools->add_control_request(r);
  // Handler failures as a session records them: 20 plain, then a hostile one (not UTF-8 either).
  std::vector<failure_record> failed(21);
  for (std::size_t i = 0; i < failed.size(); ++i) {
    failed[i].instance = "web-fast";
    failed[i].session = "search-index";
    failed[i].event_id = static_cast<std::int64_t>(i) + 1;
    failed[i].event_type = "page.changed";
    failed[i].error = "listener down";
    failed[i].attempts = 3;
    failed[i].failed_at = std::chrono::system_clock::now();
  }
  failed.back().event_type = "<script>alert(2)</script>";
  failed.back().error = "<img src=x onerror=alert(3)> \xff";
  tools->record_failures(failed);

  server srv({"serve", "--db", db, "--listen", "127.0.0.1:0"});
  REQUIRE_MESSAGE(srv.port > 0, srv.err());

  auto dom = chromium_dom(srv.url + "/", dir);
  INFO(dom);
  INFO(srv.err());
  REQUIRE(dom.find("<h1>eventq status</h1>") != std::string::npos);
  CHECK(std::regex_search(
      dom, std::regex("<tr[^>]*data-instance=\"web-fast\"[^>]*>.*?<td class=\"n behind\">0</td>")));
  CHECK(std::regex_search(
      dom,
      std::regex("<tr[^>]*data-instance=\"web-slow\"[^>]*>.*?<td class=\"n behind\">1,201</td>")));
  CHECK(dom.find("&lt;script&gt;alert(1)&lt;/script&gt;") != std::string::npos);
  CHECK(dom.find("<script") == std::string::npos);  // no element was made of it
  CHECK(dom.find("<img") == std::string::npos);
  // The latest 20 of the 21 failures, newest first, the hostile one as text (\xff as U+FFFD).
  CHECK(dom.find(
            "<p class=\"meta\" id=\"failures-total\">21 in EventQueueFailures, the latest 20 ") !=
        std::string::npos);
  CHECK(std::regex_search(
      dom, std::regex("<table id=\"failures\">[\\s\\S]*?<td>web-fast</td><td>search-index</td>"
                      "<td class=\"n\">21</td><td>&lt;script&gt;alert\\(2\\)&lt;/script&gt;</td>"
                      "<td class=\"n\">3</td><td>&lt;img src=x onerror=alert\\(3\\)&gt; "
                      "\xEF\xBF\xBD</td>")));
  std::size_t failure_rows = 0;
  for (auto at = dom.find("<td>search-index</td>"); at != std::string::npos;
       at = dom.find("<td>search-index</td>", at + 1))
    ++failure_rows;
  CHECK(failure_rows == 20);
  CHECK(dom.find("<svg id=\"chart\"") != std::string::npos);
  // Counters as web-fast reported them (it delivered none: nobody subscribed), and the request.
  CHECK(std::regex_search(dom, std::regex("data-instance=\"web-fast\".*?<td class=\"n "
                                          "delivered\">0</td>")));
  CHECK(std::regex_search(
      dom, std::regex("<table id=\"control\">[\\s\\S]*?<td class=\"n\">" +
                      std::to_string(request_id) + "</td><td>web-slow</td><td>replay since")));

  httplib::Client http("127.0.0.1", srv.port);
  INFO(srv.err());
  auto metrics = http.Get("/metrics");
  REQUIRE(metrics);
  CHECK(metrics->status == 200);
  std::set<std::string> typed;
  std::istringstream lines(metrics->body);
  std::string line;
  int samples = 0;
  while (std::getline(lines, line)) {
    INFO(line);
    if (line.rfind("# TYPE ", 0) == 0) {
      CHECK(std::regex_match(line, std::regex("# TYPE [a-z_]+ (gauge|counter)")));
      typed.insert(line.substr(7, line.find(' ', 7) - 7));
    } else if (line.rfind("# HELP ", 0) != 0) {
      CHECK(std::regex_match(
          line, std::regex("[a-z_]+(\\{([a-z_]+=\"([^\"\\\\]|\\\\.)*\",?)+\\})? -?[0-9.e+-]+")));
      CHECK(typed.count(line.substr(0, line.find_first_of("{ "))) == 1);
      ++samples;
    }
  }
  CHECK(samples > 10);
  CHECK(metrics->body.find("eventq_instance_behind{instance=\"web-slow\"} 1201\n") !=
        std::string::npos);
  CHECK(metrics->body.find("eventq_instance_delivered_total{instance=\"web-fast\"} 0\n") !=
        std::string::npos);
  CHECK(metrics->body.find("\neventq_failures 21\n") != std::string::npos);

  auto status = http.Get("/api/status");
  REQUIRE(status);
  CHECK(status->get_header_value("Content-Type") == "application/json");
  auto j = nlohmann::json::parse(status->body);
  REQUIRE(j.at("instances").size() == 3);
  CHECK(j.at("instances")[1].at("name") == "web-fast");
  CHECK(j.at("instances")[2].at("behind") == 1201);
  CHECK(j.at("instances")[1].at("counters").at("polls") == 1);
  REQUIRE(j.at("control_requests").size() == 1);
  CHECK(j.at("control_requests")[0].at("action") == "replay");
  CHECK(j.at("failures_total") == 21);
  REQUIRE(j.at("failures").size() == 20);
  CHECK(j.at("failures")[0].at("event_id") == 21);
  CHECK(j.at("failures")[0].at("type") == "<script>alert(2)</script>");
  CHECK(j.at("failures")[0].at("error") == "<img src=x onerror=alert(3)> \xEF\xBF\xBD");
  CHECK(j.at("failures")[19].at("event_id") == 2);

  srv.proc->kill(SIGTERM);
  CHECK(srv.proc->wait(5s) == std::optional<int>(0));
}

TEST_CASE("listening beyond loopback needs a token, and then every request must carry it") {
  temp_dir dir;
  std::string db = "sqlite:" + dir.file("e.db");
  { queue init(db, test_options("init")); }

  server open({"serve", "--db", db, "--listen", "0.0.0.0:0"});
  CHECK(open.exit_code == std::optional<int>(2));
  CHECK(open.err().find("not a loopback address") != std::string::npos);
  CHECK(open.err().find("--token") != std::string::npos);

  server srv({"serve", "--db", db, "--listen", "0.0.0.0:0", "--token", "s3cret"});
  REQUIRE_MESSAGE(srv.port > 0, srv.err());
  httplib::Client http("127.0.0.1", srv.port);
  INFO(srv.err());
  for (const char* path : {"/", "/metrics", "/api/status"}) {
    INFO(path);
    auto none = http.Get(path);
    REQUIRE(none);
    CHECK(none->status == 401);
    auto wrong = http.Get(path, {{"Authorization", "Bearer s3cre"}});
    REQUIRE(wrong);
    CHECK(wrong->status == 401);
    auto right = http.Get(path, {{"Authorization", "Bearer s3cret"}});
    REQUIRE(right);
    CHECK(right->status == 200);
  }
}
