// The eventq command: what operators and schedulers run against an eventq database. Thin over
// the library (eventq/operations.h, eventq/storage.h): this file only parses arguments and
// prints. Exit codes: 0 done, 1 failed (the database refused or is unreachable...), 2 wrong usage.
// Every error is one line on stderr saying what is wrong and what to do.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <filesystem>
#include <iostream>
#include <thread>

#include "eventq/eventq.h"
#include "output.h"
#include "serve.h"

namespace {

using namespace eventq;

std::atomic<bool> g_stop{false};
extern "C" void on_signal(int) { g_stop = true; }

std::string one_line(std::string s) {
  for (auto& c : s) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

// A usage error: exit 2.
struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

options tool_options() {
  options o;
  o.instance_name = "eventq-cli";
  o.logger = [](log_level level, std::string_view msg) {
    if (level >= log_level::warning)
      std::cerr << "eventq: warning: " << one_line(std::string(msg)) << '\n';
  };
  return o;
}

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

struct args {
  std::string db;
  // raise
  std::string type, data, instance = "eventq-cli";
  std::string event_id, raiser, param = "null";  // a registry event (eventq/registry.h)
  bool local = false, global = false, both = false;
  // tail
  std::string tail_type;
  bool from_start = false, json = false, prometheus = false;
  std::size_t count = 0;
  // cleanup
  std::string keep, max_age = "7d", wait = "0";
  std::size_t batch_size = 2000;
  bool dry_run = false;
  // serve
  cli::serve_settings serve;
  // resync, replay
  std::string target, since, control_wait = "0";
  // failures
  std::string instance_filter;
};

// Throws usage_error unless a database is named; unless `create`, an SQLite file must exist (a
// typo in the path would otherwise create an empty database and report nothing wrong).
void check_db(const args& a, bool create) {
  if (a.db.empty()) {
    throw usage_error(
        "no database given: pass --db URL or set EVENTQ_DB (e.g. sqlite:/var/lib/app/events.db "
        "or postgresql://user@host/dbname)");
  }
  if (!create && a.db.rfind("sqlite:", 0) == 0) {
    std::string path = a.db.substr(7);
    if (path.rfind("//", 0) == 0) path = path.substr(2);
    path = path.substr(0, path.find('?'));  // parameters such as ?watch=off
    if (!path.empty() && !std::filesystem::exists(path)) {
      throw std::runtime_error("SQLite database '" + path +
                               "' does not exist: check --db / EVENTQ_DB, or create it with "
                               "'eventq migrate'");
    }
  }
}

std::unique_ptr<storage> open(const args& a, bool create = false) {
  check_db(a, create);
  return open_storage(a.db, tool_options());
}

int run_migrate(const args& a) {
  auto s = open(a, true);
  std::cout << "schema version " << s->schema_version() << " (" << s->backend_name()
            << "): up to date\n";
  return 0;
}

// --event-id, --raiser, --param: the type and payload of a registry row.
std::pair<std::string, nlohmann::json> registry_event(const args& a) {
  guid event_id, raiser;
  try {
    event_id = guid::parse(a.event_id);
    raiser = guid::parse(a.raiser);
  } catch (const error& e) {
    throw usage_error(std::string("--event-id / --raiser: ") + e.what());
  }
  nlohmann::json param = nlohmann::json::parse(a.param, nullptr, false);
  if (param.is_discarded()) {
    throw usage_error("--param is not valid JSON: quote text as JSON, e.g. --param '\"page 42\"'");
  }
  return {event_id.to_string(), registry_payload(raiser, param)};
}

int run_raise(const args& a) {
  if (!a.event_id.empty()) {
    auto [type, payload] = registry_event(a);
    args plain = a;
    plain.event_id.clear();
    plain.type = type;
    plain.data = payload.dump();
    return run_raise(plain);
  }
  if (a.type.empty() || a.data.empty()) {
    throw usage_error("raise needs --type and --data, or --event-id and --raiser (see --help)");
  }
  nlohmann::json data = nlohmann::json::parse(a.data, nullptr, false);
  if (data.is_discarded()) {
    throw usage_error("--data is not valid JSON: give an object, e.g. --data '{\"page\":42}'");
  }
  raise_mode mode = a.local  ? raise_mode::locally
                    : a.both ? raise_mode::both
                             : raise_mode::globally;
  auto s = open(a);
  auto o = tool_options();
  o.instance_name = a.instance;
  auto id = raise_as(*s, o, a.type, data, mode);
  std::cout << "raised event " << id << " (" << a.type << ", " << to_string(mode) << ", as "
            << a.instance << ")\n";
  return 0;
}

int run_tail(const args& a) {
  check_db(a, false);
  follower f(a.db, a.from_start ? start_position::oldest : start_position::now, tool_options());
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::size_t printed = 0;
  while (!g_stop) {
    auto page = f.next(std::chrono::milliseconds(200));
    if (page.missed) std::cerr << "eventq: missed: " << one_line(*page.missed) << '\n';
    for (const auto& e : page.events) {
      if (!a.tail_type.empty() && e.type != a.tail_type) continue;
      // What the instances will do with it: a forged or malformed row is marked, not shown as
      // if it were an event. A genuine registry row is shown as event id, raiser id, param.
      auto refusal = f.judge(e);
      auto registry_row = refusal ? std::nullopt : parse_registry_row(e);
      if (a.json) {
        auto j = cli::event_json(e, refusal);
        if (registry_row) cli::add_registry_fields(j, *registry_row);
        std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
      } else {
        std::cout << (registry_row ? cli::registry_line(e, *registry_row)
                                   : cli::event_line(e, refusal))
                  << '\n';
      }
      std::cout.flush();
      if (a.count > 0 && ++printed >= a.count) return 0;
    }
  }
  return 0;
}

int run_stats(const args& a) {
  auto s = open(a);
  auto summary = s->summary();
  auto instances = s->instances();
  if (a.json) {
    std::cout << cli::stats_json(s->backend_name(), summary, instances).dump(2) << '\n';
  } else if (a.prometheus) {
    write_prometheus(std::cout, summary, instances);
  } else {
    cli::print_stats_table(std::cout, s->backend_name(), summary, instances);
  }
  return 0;
}

int run_instances(const args& a) {
  auto s = open(a);
  auto instances = s->instances();
  if (a.json) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& i : instances) list.push_back(cli::instance_json(i));
    std::cout << list.dump(2) << '\n';
  } else {
    cli::print_instances_table(std::cout, instances);
  }
  return 0;
}

// Rows an instance would refuse: exit 0 when there are none, 1 when there are (so that a
// monitoring job can alert on it), each listed with its id and the reason.
int run_verify(const args& a) {
  auto s = open(a);
  auto rows = find_rejected_rows(*s, tool_options(), a.count > 0 ? a.count : 1000);
  for (const auto& r : rows) {
    if (a.json) {
      std::cout << nlohmann::json{{"id", r.row.id},
                                  {"type", r.row.type},
                                  {"instance", r.row.instance},
                                  {"verdict", r.verdict},
                                  {"reason", r.reason}}
                       .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                << '\n';
    } else {
      std::cout << r.row.id << '\t' << r.verdict << '\t' << cli::escaped(r.row.type) << '\t'
                << cli::escaped(r.row.instance) << '\t' << cli::escaped(r.reason) << '\n';
    }
  }
  std::cerr << "eventq: " << rows.size() << " row(s) would be refused\n";
  return rows.empty() ? 0 : 1;
}

// Events that sessions gave up on (EventQueueFailures), newest first: what an operator looks at
// when session metrics count failures. Exit 0 either way (listing is not alerting).
int run_failures(const args& a) {
  auto s = open(a);
  auto rows = s->failures(a.count > 0 ? a.count : 100, a.instance_filter);
  // Texts come from listeners' exceptions and the table: control bytes are not printed raw.
  auto cell = [](std::string v) {
    for (auto& c : v) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
    }
    return v;
  };
  for (const auto& f : rows) {
    if (a.json) {
      std::cout << nlohmann::json{{"id", f.id},
                                  {"failed_at", cli::iso_time(f.failed_at)},
                                  {"instance", f.instance},
                                  {"session", f.session},
                                  {"event_id", f.event_id},
                                  {"type", f.event_type},
                                  {"attempts", f.attempts},
                                  {"error", f.error}}
                       .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                << '\n';
    } else {
      std::cout << cli::iso_time(f.failed_at) << '\t' << cell(f.instance) << '\t' << cell(f.session)
                << '\t' << f.event_id << '\t' << cell(f.event_type) << '\t' << f.attempts << '\t'
                << cell(f.error) << '\n';
    }
  }
  if (!a.json) std::cerr << "eventq: " << rows.size() << " failure(s) listed\n";
  return 0;
}

int run_cleanup(const args& a) {
  cleanup_settings c;
  try {
    c.keep = parse_duration(a.keep);
    c.max_age = parse_duration(a.max_age);
    c.wait_for_other = parse_duration(a.wait);
  } catch (const error& e) {
    throw usage_error(e.what());
  }
  c.batch_size = a.batch_size;
  c.dry_run = a.dry_run;
  auto s = open(a);
  auto report =
      eventq::run_cleanup(*s, c, "eventq-cli@" + host_name() + ":" + std::to_string(getpid()));
  std::cout << report.summary() << '\n';
  return 0;
}

// eventq resync / replay: stores the request for a live instance (exit 1 and a message when
// it is not live); with --wait, waits for the instance to acknowledge it and prints the result.
int run_control(const args& a, control_action action) {
  control_request r;
  r.instance = a.target;
  r.action = action;
  std::chrono::seconds wait{0};
  try {
    if (action == control_action::replay) {
      r.since = std::chrono::system_clock::now() - parse_duration(a.since);
    }
    wait = parse_duration(a.control_wait);
  } catch (const error& e) {
    throw usage_error(e.what());
  }
  r.requested_by = "eventq-cli@" + host_name() + ":" + std::to_string(getpid());
  auto s = open(a);
  auto id = s->add_control_request(r);
  std::cout << "request " << id << ": " << to_string(action) << " of " << r.instance
            << " stored; the instance carries it out at its next lease renewal" << std::endl;
  auto deadline = std::chrono::steady_clock::now() + wait;
  while (wait.count() > 0 && !g_stop) {
    for (const auto& c : s->control_requests(100)) {
      if (c.id == id && c.done) {
        std::cout << "request " << id << ": " << c.result << '\n';
        return c.result.rfind("failed", 0) == 0 ? 1 : 0;
      }
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      std::cerr << "eventq: request " << id << " not acknowledged within " << a.control_wait
                << " (is the instance's renewal failing? see 'eventq instances')\n";
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return 0;
}

int run_serve(const args& a) {
  try {
    cli::check_listen(a.serve);
  } catch (const std::invalid_argument& e) {
    throw usage_error(e.what());
  }
  check_db(a, false);
  status_reader reader(a.db, tool_options());
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  return cli::serve(reader, a.serve, g_stop);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "eventq: inspect and maintain an eventq database (events between application "
      "instances through a shared table)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "eventq " + std::string(eventq::version()),
                       "print the eventq library's version and exit");
  args a;
  app.add_option("--db", a.db, "database URL: sqlite:/path/events.db or postgresql://...")
      ->envname("EVENTQ_DB");

  auto* migrate = app.add_subcommand("migrate", "create or upgrade the schema; print the version");
  auto* raise = app.add_subcommand("raise", "raise one event, as an instance would");
  auto* type = raise->add_option("--type", a.type, "event type name");
  auto* data = raise->add_option("--data", a.data, "JSON object payload");
  auto* event_id = raise->add_option("--event-id", a.event_id,
                                     "instead of --type/--data: an EPiServer-style event's GUID");
  auto* raiser = raise->add_option("--raiser", a.raiser, "with --event-id: the raiser's GUID");
  auto* param = raise->add_option("--param", a.param, "with --event-id: the parameter (JSON)")
                    ->capture_default_str();
  event_id->excludes(type)->excludes(data)->needs(raiser);
  raiser->needs(event_id);
  param->needs(event_id);
  auto* l = raise->add_flag("--local", a.local, "only to the raising instance");
  auto* g = raise->add_flag("--global", a.global, "to every other instance (the default)");
  auto* b = raise->add_flag("--both", a.both, "to every instance");
  l->excludes(g)->excludes(b);
  g->excludes(b);
  raise->add_option("--instance", a.instance, "raise as this instance name")->capture_default_str();

  auto* tail = app.add_subcommand("tail", "print events as they arrive; moves no cursor");
  tail->add_option("--type", a.tail_type, "only events of this type");
  tail->add_flag("--from-start", a.from_start, "begin with the oldest retained event");
  tail->add_option("--count", a.count, "exit after this many events");
  tail->add_flag("--json", a.json, "one JSON object per line");

  auto* stats = app.add_subcommand("stats", "rows, ages, rows per type, instances and their lag");
  auto* sj = stats->add_flag("--json", a.json, "JSON");
  auto* sp = stats->add_flag("--prometheus", a.prometheus, "Prometheus text format");
  sj->excludes(sp);

  auto* instances = app.add_subcommand("instances", "the instance registry");
  instances->add_flag("--json", a.json, "JSON");

  auto* cleanup = app.add_subcommand("cleanup", "delete old events (what a scheduler runs)");
  cleanup->add_option("--keep", a.keep, "keep events younger than this: 1d, 12h, 30m, 90s")
      ->required();
  cleanup
      ->add_option("--max-age", a.max_age,
                   "delete even unprocessed events older than this; remove instances dead "
                   "longer than this")
      ->capture_default_str();
  cleanup->add_option("--batch-size", a.batch_size, "rows per transaction")->capture_default_str();
  cleanup->add_option("--wait", a.wait, "wait this long for another running cleanup")
      ->capture_default_str();
  cleanup->add_flag("--dry-run", a.dry_run, "count what would be deleted; change nothing");

  auto* verify = app.add_subcommand(
      "verify",
      "list rows instances refuse (bad signature, unknown key, malformed); exit 1 if any");
  verify->add_option("--count", a.count, "list at most this many (default 1000)");
  verify->add_flag("--json", a.json, "one JSON object per line");

  auto* serve = app.add_subcommand(
      "serve", "HTTP: a status page (/), Prometheus metrics (/metrics), JSON (/api/status)");
  serve
      ->add_option("--listen", a.serve.listen,
                   "HOST:PORT to listen on; other than loopback it needs --token")
      ->capture_default_str();
  serve
      ->add_option("--token", a.serve.token,
                   "require 'Authorization: Bearer TOKEN' on every request")
      ->envname("EVENTQ_SERVE_TOKEN");
  serve->add_option("--refresh", a.serve.refresh_seconds, "the page reloads every N seconds")
      ->capture_default_str();

  auto* resync = app.add_subcommand(
      "resync", "make one live instance raise Missed and continue from the head (a cold boot)");
  resync->add_option("--instance", a.target, "the instance name")->required();
  resync->add_option("--wait", a.control_wait, "wait this long for its result (e.g. 30s)");
  auto* replay = app.add_subcommand(
      "replay", "make one live instance deliver again every retained event since a time");
  replay->add_option("--instance", a.target, "the instance name")->required();
  replay->add_option("--since", a.since, "how far back: 30m, 2h, 1d")->required();
  replay->add_option("--wait", a.control_wait, "wait this long for its result (e.g. 30s)");

  
  auto* failures = app.add_subcommand(
      "failures", "list events that sessions' listeners gave up on (EventQueueFailures)");
  failures->add_option("--count", a.count, "list at most this many, newest first (default 100)");
  failures->add_option("--instance", a.instance_filter, "only this instance's failures");
  failures->add_flag("--json", a.json, "one JSON object per line");

  for (auto* sub :
       {migrate, raise, tail, stats, instances, cleanup, verify, serve, resync, replay, failures})
    sub->fallthrough();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    std::cerr << "eventq: " << one_line(e.what()) << " (see eventq --help)\n";
    return 2;
  }
  try {
    if (*migrate) return run_migrate(a);
    if (*raise) return run_raise(a);
    if (*tail) return run_tail(a);
    if (*stats) return run_stats(a);
    if (*instances) return run_instances(a);
    if (*cleanup) return run_cleanup(a);
    if (*verify) return run_verify(a);
    if (*serve) return run_serve(a);
    if (*resync) return run_control(a, control_action::resync);
    if (*replay) return run_control(a, control_action::replay);
    if (*failures) return run_failures(a);
  } catch (const usage_error& e) {
    std::cerr << "eventq: " << one_line(e.what()) << '\n';
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "eventq: " << one_line(e.what()) << '\n';
    return 1;
  }
  return 2;
}
