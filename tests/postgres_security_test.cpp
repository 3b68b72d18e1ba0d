// Hostile rows written by raw SQL, and the least-privilege roles of schema/postgres-roles.sql,
// on PostgreSQL (the SQLite side is in security_test.cpp). Run under scripts/with-postgres.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <thread>
#include <variant>

#include "../src/row_check.h"
#include "../src/util.h"
#include "pg_support.h"
#include "support.h"

using namespace eventq;
using namespace eventq::test;
using namespace std::chrono_literals;

namespace {

const std::string k_secret = "0123456789abcdef0123456789abcdef";
const signing_key k_key{"1", k_secret};

std::string hex(std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

options with_secret(const std::string& name, log_capture* logs = nullptr) {
  auto o = test_options(name, logs);
  o.secret = k_secret;
  return o;
}

// A row as a hostile (or careless) writer leaves it. Texts travel hex-encoded and are decoded
// by the server, so every byte (NUL, invalid UTF-8) reaches it: libpq would cut a text
// parameter at its first NUL.
struct raw_row {
  std::string type = "t";
  std::string data = "{}";
  std::string instance = "x";
  bool local = true, global = true;
  std::optional<signing_key> sign_with = k_key;  // nullopt: unsigned
  std::optional<std::string> key_id;             // overrides sign_with->id as stored
  std::optional<std::string> signature;          // overrides the computed one
};

// The Id of the new row; the server's error (what()) when it refused the INSERT.
std::variant<std::int64_t, std::string> insert(const std::string& schema, const raw_row& r) {
  event_record rec;
  rec.type = r.type;
  rec.data = r.data;
  rec.instance = r.instance;
  rec.mode = r.local && r.global ? raise_mode::both
             : r.local           ? raise_mode::locally
                                 : raise_mode::globally;
  rec.created =
      std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
  std::optional<std::string> key_id, sig;
  if (r.sign_with) {
    key_id = r.sign_with->id;
    sig = sign(rec, *r.sign_with);
  }
  if (r.key_id) key_id = r.key_id;
  if (r.signature) sig = r.signature;
  try {
    auto c = pg::connect(schema);
    pqxx::work tx(*c);
    auto res = tx.exec_params(
        "INSERT INTO EventQueue (EventType, InstanceData, InstanceName, RaiseLocally, "
        "RaiseGlobally, Created, KeyId, Signature) VALUES ("
        "convert_from(decode($1, 'hex'), 'UTF8'), convert_from(decode($2, 'hex'), 'UTF8')::json, "
        "convert_from(decode($3, 'hex'), 'UTF8'), $4::boolean, $5::boolean, $6::timestamptz, "
        "$7, $8) RETURNING Id",
        hex(r.type), hex(r.data), hex(r.instance), std::string(r.local ? "true" : "false"),
        std::string(r.global ? "true" : "false"), detail::format_utc(rec.created) + "+00",
        key_id ? key_id->c_str() : nullptr, sig ? sig->c_str() : nullptr);
    tx.commit();
    return res.at(0).at(0).as<std::int64_t>();
  } catch (const pqxx::sql_error& e) {
    return std::string(e.what());
  }
}

struct collector {
  std::mutex m;
  std::vector<std::int64_t> ids;
  raw_handler handler() {
    return [this](const event_record& r, const nlohmann::json&) {
      std::lock_guard lk(m);
      ids.push_back(r.id);
    };
  }
  std::vector<std::int64_t> get() {
    std::lock_guard lk(m);
    return ids;
  }
};

enum class expect { delivered, oversized, unauthentic, malformed };

}  // namespace

TEST_CASE("hostile rows between genuine events: each counted and logged, genuine ones delivered") {
  auto schema = pg::fresh_schema();
  auto url = pg::url_with_schema(schema);
  log_capture logs;
  queue a(url, with_secret("a"));
  queue b(url, with_secret("b", &logs));
  queue c(url, with_secret("c"));
  collector got_a, got_b, got_c;
  auto sa = a.subscribe_all(got_a.handler());
  auto sb = b.subscribe_all(got_b.handler());
  auto sc = c.subscribe_all(got_c.handler());
  b.start();  // b's poller thread must survive all of it; a and c poll from here

  const std::string ten_mb = "{\"x\":\"" + std::string(10 * 1024 * 1024, 'a') + "\"}";
  std::vector<std::pair<raw_row, expect>> hostile;
  auto add = [&](expect e, auto edit) {
    raw_row r;
    edit(r);
    hostile.emplace_back(r, e);
  };
  add(expect::malformed, [](raw_row& r) { r.data = "\"a string, not an object\""; });
  add(expect::malformed, [](raw_row& r) { r.data = "[1, 2, 3]"; });
  add(expect::unauthentic, [](raw_row& r) {
    r.data = "[1, 2, 3]";
    r.sign_with.reset();
  });
  add(expect::malformed, [](raw_row& r) { r.data = "null"; });
  add(expect::malformed,
      [](raw_row& r) { r.data = std::string(2000, '[') + std::string(2000, ']'); });
  add(expect::oversized, [&](raw_row& r) { r.data = ten_mb; });
  add(expect::oversized, [&](raw_row& r) {
    r.data = ten_mb;
    r.sign_with.reset();
  });
  // \u0000 is an ordinary JSON escape (json keeps the text; only jsonb refuses it): a signed
  // object with one is genuine, and its handler gets a string holding a NUL character.
  add(expect::delivered, [](raw_row& r) { r.data = R"({"a":"\u0000"})"; });
  add(expect::unauthentic, [](raw_row& r) {
    r.data = R"({"a":"\u0000"})";
    r.sign_with.reset();
  });
  // SQL text in names is text: genuine when signed, and nothing is executed.
  add(expect::delivered, [](raw_row& r) { r.type = "t'; DROP TABLE Properties; --"; });
  add(expect::delivered, [](raw_row& r) { r.instance = "'); DELETE FROM EventQueue; --"; });
  add(expect::unauthentic, [](raw_row& r) {
    r.instance = "'); DELETE FROM EventQueue; --";
    r.sign_with.reset();
  });
  add(expect::malformed, [](raw_row& r) { r.type = "t\x01"; });
  add(expect::malformed, [](raw_row& r) { r.type = ""; });
  add(expect::malformed, [](raw_row& r) { r.instance = "x\ny"; });
  // Bad and unknown signatures.
  add(expect::unauthentic, [](raw_row& r) { r.signature = std::string(64, '0'); });
  add(expect::unauthentic, [](raw_row& r) { r.signature = "'; DROP TABLE EventQueue; --"; });
  add(expect::unauthentic, [](raw_row& r) { r.signature = std::string(100000, 'f'); });
  add(expect::unauthentic, [](raw_row& r) { r.signature = ""; });
  add(expect::unauthentic, [](raw_row& r) { r.key_id.emplace(); });
  add(expect::unauthentic, [](raw_row& r) {
    r.sign_with = signing_key{"2", "another secret, 32 bytes long!!"};
  });
  add(expect::unauthentic, [](raw_row& r) { r.key_id = "1' OR '1'='1"; });
  add(expect::unauthentic, [](raw_row& r) {
    // A genuine signature over other contents.
    event_record other{0, "t", "{\"other\":1}", "x", raise_mode::both, {}, {}, {}};
    r.signature = sign(other, k_key);
  });

  std::vector<std::int64_t> genuine;
  auto raise = [&] {
    genuine.push_back(a.raise_raw("t", {{"n", genuine.size()}}, raise_mode::both));
  };
  raise();
  std::size_t delivered = 0, oversized = 0, unauthentic = 0, malformed = 0;
  std::vector<std::pair<std::int64_t, std::string>> refused;  // id, log verdict
  for (const auto& [row, e] : hostile) {
    auto id = insert(schema, row);
    REQUIRE_MESSAGE(std::holds_alternative<std::int64_t>(id),
                    "the server refused a row it should store: " << std::get<std::string>(id));
    auto n = std::get<std::int64_t>(id);
    switch (e) {
      case expect::delivered:
        ++delivered;
        break;
      case expect::oversized:
        ++oversized;
        refused.emplace_back(n, "oversized");
        break;
      case expect::unauthentic:
        ++unauthentic;
        refused.emplace_back(n, "unauthentic");
        break;
      case expect::malformed:
        ++malformed;
        refused.emplace_back(n, "malformed");
        break;
    }
    raise();
  }

  // What the server refuses cannot become a row at all.
  auto rows_before = pg::text(schema, "SELECT count(*) FROM EventQueue");
  std::vector<raw_row> impossible;
  auto add_impossible = [&](auto edit) {
    raw_row r;
    edit(r);
    impossible.push_back(r);
  };
  add_impossible([](raw_row& r) { r.data = "{broken"; });
  add_impossible([](raw_row& r) { r.data = "{\"a\": 1,}"; });
  add_impossible([](raw_row& r) { r.data = "{\"n\":\"\xff\xfe\"}"; });  // invalid UTF-8
  add_impossible([](raw_row& r) { r.data = "{\"n\":\"\xc0\xaf\"}"; });  // overlong '/'
  add_impossible([](raw_row& r) { r.type = "t\xed\xa0\x80"; });         // a surrogate
  add_impossible([](raw_row& r) { r.instance = "x\xff"; });
  add_impossible([](raw_row& r) { r.data = std::string("{\"n\":1}\0", 8); });  // NUL bytes
  add_impossible([](raw_row& r) { r.type = std::string("t\0x", 3); });
  add_impossible([](raw_row& r) { r.instance = std::string("x\0", 2); });
  add_impossible([](raw_row& r) { r.local = r.global = false; });  // meant for nobody
  for (const auto& r : impossible) {
    auto id = insert(schema, r);
    CHECK_MESSAGE(std::holds_alternative<std::string>(id),
                  "the server stored row " << std::get<std::int64_t>(id) << " (type '"
                                           << detail::printable(r.type) << "', data '"
                                           << detail::printable(r.data) << "')");
  }
  for (const char* nulls :
       {"NULL, '{}', 'x', true, true", "'t', NULL, 'x', true, true", "'t', '{}', NULL, true, true",
        "'t', '{}', 'x', NULL, true", "'t', '{}', 'x', true, NULL"}) {
    CHECK_THROWS_AS(
        pg::exec(schema, std::string("INSERT INTO EventQueue (EventType, InstanceData, "
                                     "InstanceName, RaiseLocally, RaiseGlobally) VALUES (") +
                             nulls + ")"),
        pqxx::sql_error);
  }
  CHECK(pg::text(schema, "SELECT count(*) FROM EventQueue") == rows_before);
  raise();

  const auto expected_total = genuine.size() + delivered;
  for (auto* q : {&a, &c}) {
    for (int i = 0; i < 100 && q->poll_once() > 0; ++i) {
    }
  }
  REQUIRE(wait_until([&] { return got_b.get().size() >= expected_total; }, 30s));
  CHECK(b.running());
  for (auto* got : {&got_a, &got_b, &got_c}) {
    auto ids = got->get();
    std::vector<std::int64_t> genuine_seen;
    std::copy_if(ids.begin(), ids.end(), std::back_inserter(genuine_seen), [&](std::int64_t id) {
      return std::find(genuine.begin(), genuine.end(), id) != genuine.end();
    });
    CHECK(genuine_seen == genuine);
    CHECK(ids.size() == expected_total);
  }
  for (auto* q : {&a, &b, &c}) {
    auto s = q->stats();
    CHECK(s.unauthentic == unauthentic);
    CHECK(s.oversized == oversized);
    CHECK(s.undecodable == malformed);
    CHECK(s.poll_errors == 0);
  }
  for (const auto& [id, verdict] : refused) {
    CHECK_MESSAGE(logs.contains("event " + std::to_string(id) + " skipped, " + verdict),
                  "no log line for row " << id);
  }
  CHECK(a.find_rejected_rows().size() == refused.size());
  CHECK(pg::text(schema, "SELECT count(*) FROM Properties WHERE Key LIKE 'EQStamp\\_%'") == "3");

  // The poller thread is alive and still delivers, promptly.
  raise();
  CHECK(wait_until([&] { return got_b.get().back() == genuine.back(); }));
  CHECK(b.running());
  b.stop();
}

TEST_CASE("a cursor holding garbage, a negative or huge number: Missed, then the poller delivers") {
  auto schema = pg::fresh_schema();
  auto url = pg::url_with_schema(schema);
  queue a(url, with_secret("a"));
  { queue b(url, with_secret("b")); }
  // NUL cannot be stored in a text column at all.
  CHECK_THROWS_AS(pg::exec(schema,
                           "UPDATE Properties SET Value = convert_from('\\x310032'::bytea, "
                           "'UTF8') WHERE Key = 'EQStamp_b'"),
                  pqxx::sql_error);
  const std::vector<std::string> cursors = {"-5",
                                            "99999999999999999999999",
                                            "-1:-1:",
                                            "18446744073709551615:18446744073709551615:",
                                            "garbage'; DROP TABLE EventQueue; --",
                                            "",
                                            " 7:7:",
                                            "5:3:",
                                            "1:2:|1:2:|x:1"};
  for (const auto& bad : cursors) {
    INFO("cursor '" << bad << "'");
    {
      auto conn = pg::connect(schema);
      pqxx::work tx(*conn);
      tx.exec_params("UPDATE Properties SET Value = $1 WHERE Key = 'EQStamp_b'", bad);
      tx.commit();
    }
    queue b(url, with_secret("b"));
    std::atomic<int> missed{0};
    auto m = b.on_missed([&](const missed_info&) { ++missed; });
    collector got;
    auto sub = b.subscribe_all(got.handler());
    b.start();
    CHECK(wait_until([&] { return missed == 1; }));
    auto id = a.raise_raw("t", nlohmann::json::object(), raise_mode::globally);
    CHECK(wait_until([&] {
      auto ids = got.get();
      return !ids.empty() && ids.back() == id;
    }));
    CHECK(b.running());
    CHECK(b.stats().poll_errors == 0);
    b.stop();
    CHECK(missed == 1);
  }
}

namespace {

// The test server's URL (schema: "" for none) for another (trust-authenticated) user.
std::string url_as(const std::string& user, const std::string& schema) {
  auto url = schema.empty() ? pg::server_url() : pg::url_with_schema(schema);
  auto scheme = url.find("://") + 3;
  return url.substr(0, scheme) + user + url.substr(url.find('@', scheme));
}

// Runs schema/postgres-roles.sql with psql as the server's superuser, as an operator would.
void apply_roles_script(const std::string& schema) {
  const char* bin = std::getenv("EVENTQ_TEST_PG_BIN");
  REQUIRE_MESSAGE(bin != nullptr, "EVENTQ_TEST_PG_BIN is not set (run under with-postgres)");
  std::string cmd = std::string(bin) + "/psql -X -q -v ON_ERROR_STOP=1 -v schema=" + schema +
                    " -f " EVENTQ_SOURCE_DIR "/schema/postgres-roles.sql '" + pg::server_url() +
                    "' >/dev/null";
  REQUIRE(std::system(cmd.c_str()) == 0);
}

std::unique_ptr<pqxx::connection> connect_as(const std::string& user, const std::string& schema) {
  auto c = std::make_unique<pqxx::connection>(url_as(user, ""));
  c->set_variable("client_min_messages", "warning");
  c->set_variable("search_path", schema);
  return c;
}

}  // namespace

TEST_CASE("least privilege: the app, operator and cleanup roles of schema/postgres-roles.sql") {
  auto schema = pg::fresh_schema();
  { queue owner(pg::url_with_schema(schema), with_secret("owner")); }  // creates the schema
  // A database secret exists too, to show that the app role cannot read it.
  pg::exec(schema, "INSERT INTO Properties (Key, Value) VALUES ('EQSecret', '" + k_secret + "')");
  apply_roles_script(schema);
  apply_roles_script(schema);  // idempotent: run again after every upgrade
  const std::string app = "app_" + schema, op = "op_" + schema, cl = "cl_" + schema;
  pg::exec(schema, "CREATE ROLE " + app + " LOGIN IN ROLE eventq_app; CREATE ROLE " + op +
                       " LOGIN IN ROLE eventq_operator; CREATE ROLE " + cl +
                       " LOGIN IN ROLE eventq_cleanup");

  SUBCASE(
      "app: raises, polls in the background, stores its cursor; cannot delete or read the "
      "secret") {
    queue w1(url_as(app, schema), with_secret("web1"));
    queue w2(url_as(app, schema), with_secret("web2"));
    collector got;
    auto sub = w2.subscribe_all(got.handler());
    w2.start();
    auto cursor_before =
        pg::text(schema, "SELECT Value FROM Properties WHERE Key = 'EQStamp_web2'");
    CHECK(!cursor_before.empty());
    auto id = w1.raise_raw("t", {{"n", 1}}, raise_mode::globally);
    CHECK(wait_until([&] { return got.get() == std::vector<std::int64_t>{id}; }));
    CHECK(wait_until([&] {
      return pg::text(schema, "SELECT Value FROM Properties WHERE Key = 'EQStamp_web2'") !=
             cursor_before;
    }));
    CHECK(w2.running());
    CHECK(w2.stats().poll_errors == 0);
    w2.stop();

    // A session's failed events are recorded under the app role (EventQueueFailures).
    {
      eventq::session_config cfg;
      cfg.retries = 0;
      auto s = w2.create_session(cfg);
      auto reg = s.add_listener({}, [](std::span<const eventq::event_record>) {
        throw std::runtime_error("listener down");
      });
      auto failed = w1.raise_raw("t", {{"n", 2}}, raise_mode::globally);
      w2.poll_once();
      REQUIRE(s.drain(5s));
      CHECK(pg::text(schema, "SELECT EventId || ' ' || Error FROM EventQueueFailures") ==
            std::to_string(failed) + " listener down");
    }

    auto c = connect_as(app, schema);
    {
      pqxx::work tx(*c);
      CHECK_THROWS_AS(tx.exec("DELETE FROM EventQueue"), pqxx::insufficient_privilege);
    }
    {
      pqxx::work tx(*c);
      CHECK_THROWS_AS(tx.exec("UPDATE EventQueue SET EventType = 'x'"),
                      pqxx::insufficient_privilege);
    }
    {
      pqxx::work tx(*c);
      CHECK(tx.exec("SELECT Value FROM Properties WHERE Key = 'EQSecret'").empty());
    }
    {
      // No row of Properties is written directly (cursors go through eventq_store_cursor()).
      pqxx::work tx(*c);
      CHECK_THROWS_AS(tx.exec("UPDATE Properties SET Value = 'x' WHERE Key = 'EQSecret'"),
                      pqxx::insufficient_privilege);
    }
    {
      pqxx::work tx(*c);
      CHECK_THROWS_AS(tx.exec("INSERT INTO Properties VALUES ('EQDeletedStamp', '1')"),
                      pqxx::insufficient_privilege);
    }
    {
      // Nor the deletion record.
      pqxx::work tx(*c);
      CHECK_THROWS_AS(tx.exec("INSERT INTO EventQueueDeleted (Below) VALUES ('5')"),
                      pqxx::insufficient_privilege);
    }
    CHECK_THROWS_AS(w1.cleanup(0s), eventq::error);
    // Without a secret of its own the app would need the database's: refused, at the call.
    CHECK_THROWS_AS(queue(url_as(app, schema), test_options("nosecret")), eventq::error);
    CHECK(pg::text(schema, "SELECT Value FROM Properties WHERE Key = 'EQSecret'") == k_secret);
  }

  SUBCASE(
      "app: renews and releases its own lease, but cannot move another instance's cursor or "
      "lease, keep a fake instance live, or change the cleanup task") {
    auto o = with_secret("web1");
    o.lease = 600ms;  // renewed every 200 ms
    auto w1 = std::make_unique<queue>(url_as(app, schema), o);
    w1->raise_raw("t", nlohmann::json::object(), raise_mode::both);
    CHECK(w1->poll_once() == 0);  // no handler; the cursor moves all the same
    CHECK(wait_until([&] { return w1->stats().lease_renewals >= 2; }));
    CHECK(w1->stats().lease_renewal_failures == 0);
    CHECK(w1->stats().cursor_writes_refused == 0);
    pg::exec(schema,
             "INSERT INTO EventQueueTasks (Name, LastRun, LastResult) VALUES "
             "('cleanup', now() - interval '1 hour', 'ok')");
    auto owner_read = [&](const std::string& sql) { return pg::text(schema, sql); };
    const std::string cursor_sql = "SELECT Value FROM Properties WHERE Key = 'EQStamp_web1'";
    const std::string lease_sql =
        "SELECT Token || ' ' || Host || ' ' || Pid FROM EventQueueInstances WHERE Name = 'web1'";
    const std::string task_sql =
        "SELECT coalesce(Holder, '-') || ' ' || LastRun || ' ' || LastResult FROM EventQueueTasks "
        "WHERE Name = 'cleanup'";
    const auto cursor = owner_read(cursor_sql), lease = owner_read(lease_sql),
               task = owner_read(task_sql);
    REQUIRE(!cursor.empty());
    // The registry gives no token away: what it stores is the token's sha256.
    const auto stored_token =
        owner_read("SELECT Token FROM EventQueueInstances WHERE Name = 'web1'");
    CHECK(stored_token.size() == 64);
    CHECK(owner_read("SELECT count(*) FROM EventQueueInstances WHERE length(Token) <> 64") == "0");

    auto c = connect_as(app, schema);
    auto refused = [&](const std::string& sql) {
      INFO(sql);
      pqxx::work tx(*c);
      CHECK_THROWS_AS(tx.exec(sql), pqxx::insufficient_privilege);
    };
    auto fails = [&](const std::string& sql) {
      INFO(sql);
      pqxx::work tx(*c);
      CHECK_THROWS_AS(tx.exec(sql), pqxx::sql_error);
    };
    auto answer = [&](const std::string& sql) {
      pqxx::work tx(*c);
      auto r = tx.exec1(sql)[0].as<std::string>();
      tx.commit();
      return r;
    };
    // (a) Another instance's cursor.
    refused("UPDATE Properties SET Value = '1:1:' WHERE Key = 'EQStamp_web1'");
    refused("DELETE FROM Properties WHERE Key = 'EQStamp_web1'");
    refused("INSERT INTO Properties VALUES ('EQStamp_web9', '1:1:')");
    CHECK(answer("SELECT eventq_store_cursor('web1', 'a guess', '1:1:')") == "f");
    CHECK(answer("SELECT eventq_store_cursor('web1', '" + stored_token + "', '1:1:')") == "f");
    CHECK(owner_read(cursor_sql) == cursor);
    // (b) Renewing or expiring another instance's lease.
    refused("UPDATE EventQueueInstances SET LeaseUntil = now() WHERE Name = 'web1'");
    refused("UPDATE EventQueueInstances SET Token = 'mine' WHERE Name = 'web1'");
    refused("DELETE FROM EventQueueInstances WHERE Name = 'web1'");
    CHECK(answer("SELECT eventq_renew_instance('web1', '" + stored_token + "', 1000, NULL)") ==
          "f");
    CHECK(answer("SELECT eventq_release_instance('web1', '" + stored_token + "')") == "f");
    CHECK(answer("SELECT eventq_claim_instance('web1', 'h', 1, 'v', 'mine', 1000, -1)") == "f");
    CHECK(owner_read(lease_sql) == lease);
    CHECK(owner_read("SELECT LeaseUntil > now() FROM EventQueueInstances WHERE Name = 'web1'") ==
          "t");
    // (c) A fake instance kept live for years, pinning rows against cleanup.
    refused(
        "INSERT INTO EventQueueInstances (Name, Host, Pid, Version, Token, Started, Heartbeat, "
        "LeaseUntil) VALUES ('ghost', 'h', 1, 'v', 't', now(), now(), now() + interval '10 "
        "years')");
    refused("UPDATE EventQueueInstances SET LeaseUntil = now() + interval '10 years'");
    fails("SELECT eventq_claim_instance('ghost', 'h', 1, 'v', 't', 315360000000, -1)");
    CHECK(owner_read("SELECT count(*) FROM EventQueueInstances WHERE Name = 'ghost'") == "0");
    // (d) The cleanup task: a LastRun in the future would disable cleanup.
    refused("UPDATE EventQueueTasks SET LastRun = now() + interval '10 years'");
    refused("INSERT INTO EventQueueTasks (Name, LastRun) VALUES ('other', now())");
    refused("DELETE FROM EventQueueTasks");
    refused("SELECT eventq_acquire_task('cleanup', 'me', 1000, 0)");
    refused("SELECT eventq_release_task('cleanup', '-', true, 'x')");
    CHECK(owner_read(task_sql) == task);

    // Closing releases the lease (through the function).
    w1.reset();
    CHECK(owner_read("SELECT LeaseUntil <= now() FROM EventQueueInstances WHERE Name = 'web1'") ==
          "t");
  }

  SUBCASE("app: a schema with pending migrations is refused with what to do") {
    pg::exec(schema,
             "DELETE FROM EventQueueSchema WHERE Version = " + latest_schema_version_text());
    try {
      queue q(url_as(app, schema), with_secret("web1"));
      FAIL("opened a schema with a pending migration");
    } catch (const eventq::error& e) {
      CHECK(e.code() == errc::schema_invalid);
      CHECK(std::string(e.what()).find("run migrations as the schema owner") != std::string::npos);
    }
    try {
      queue q(url_as(app, "nosuchschema"), with_secret("web1"));
      FAIL("created a schema without CREATE rights");
    } catch (const eventq::error& e) {
      CHECK(e.code() == errc::schema_invalid);
    }
    // The owner migrates (here: records the migration whose row was deleted); the app opens.
    pg::exec(schema, "INSERT INTO EventQueueSchema (Version, Description) VALUES (" +
                         latest_schema_version_text() + ", '" +
                         eventq::detail::postgres_migrations().back().name + "')");
    CHECK_NOTHROW(queue(url_as(app, schema), with_secret("web1")));
  }

  SUBCASE("operator: reads everything but the secret, writes nothing") {
    {
      queue w1(url_as(app, schema), with_secret("web1"));
      w1.raise_raw("t", nlohmann::json::object(), raise_mode::both);
    }
    auto c = connect_as(op, schema);
    {
      pqxx::work tx(*c);
      CHECK(tx.exec1("SELECT count(*) FROM EventQueue")[0].as<int>() == 1);
      CHECK(tx.exec1("SELECT count(*) FROM Properties WHERE Key LIKE 'EQStamp\\_%'")[0].as<int>() ==
            2);
      CHECK(tx.exec("SELECT Value FROM Properties WHERE Key = 'EQSecret'").empty());
      CHECK(tx.exec1("SELECT max(Version) FROM EventQueueSchema")[0].as<int>() ==
            latest_schema_version());
    }
    for (const char* sql :
         {"INSERT INTO EventQueue (EventType, InstanceData, InstanceName, RaiseLocally, "
          "RaiseGlobally) VALUES ('t', '{}', 'x', true, true)",
          "DELETE FROM EventQueue", "UPDATE Properties SET Value = '1:1:'",
          "INSERT INTO Properties VALUES ('EQStamp_op', '1:1:')"}) {
      pqxx::work tx(*c);
      CHECK_THROWS_AS(tx.exec(sql), pqxx::insufficient_privilege);
    }
  }

  SUBCASE("operator: asks a live app instance to resync, and the instance picks it up") {
    auto o = with_secret("web1");
    o.lease = 600ms;  // takes requests at each renewal, every 200 ms
    queue w1(url_as(app, schema), o);
    std::atomic<int> resyncs{0};
    auto sub = w1.on_missed([&](const missed_info& m) {
      if (m.reason == "resync requested by an operator") ++resyncs;
    });
    w1.start();
    auto operations = open_storage(url_as(op, schema), test_options("operator"));
    control_request r;
    r.instance = "web1";
    r.action = control_action::resync;
    r.requested_by = "postgres_security_test";
    auto id = operations->add_control_request(r);
    CHECK(wait_until([&] { return resyncs == 1; }));
    CHECK(wait_until([&] {
      for (const auto& c : operations->control_requests(10))
        if (c.id == id && c.done) return c.result.rfind("resynced", 0) == 0;
      return false;
    }));
    CHECK(w1.stats().lease_renewal_failures == 0);
  }

  SUBCASE("cleanup: deletes old events, and the trigger records it; cannot raise") {
    queue w1(url_as(app, schema), with_secret("web1"));
    w1.raise_raw("t", nlohmann::json::object(), raise_mode::both);
    w1.raise_raw("t", nlohmann::json::object(), raise_mode::both);
    w1.poll_once();  // cleanup keeps what a live instance has not processed yet
    queue janitor(url_as(cl, schema), with_secret("cleanup"));
    std::this_thread::sleep_for(20ms);
    CHECK(janitor.cleanup(0s) == 2);
    CHECK(pg::text(schema, "SELECT count(*) FROM EventQueue") == "0");
    CHECK(pg::text(schema, "SELECT count(*) FROM EventQueueDeleted") == "1");
    CHECK_THROWS_AS(janitor.raise_raw("t", nlohmann::json::object(), raise_mode::both),
                    eventq::error);
    auto c = connect_as(cl, schema);
    pqxx::work tx(*c);
    CHECK(tx.exec("SELECT Value FROM Properties WHERE Key = 'EQSecret'").empty());
  }

  SUBCASE("cleanup: marks the cursor of an instance dead too long as removed, writes no other") {
    { queue gone(url_as(app, schema), with_secret("gone")); }
    pg::exec(schema,
             "UPDATE EventQueueInstances SET LeaseUntil = '2000-01-01' WHERE Name = 'gone'");
    pg::exec(schema,
             "INSERT INTO EventQueueFailures (InstanceName, SessionName, EventId, EventType, "
             "Error, Attempts, FailedAt) VALUES ('gone', 's', 1, 't', 'e', 1, now() - interval "
             "'8 days'), ('gone', 's', 2, 't', 'e', 1, now())");
    queue janitor(url_as(cl, schema), with_secret("cleanup"));
    janitor.cleanup();
    CHECK(pg::text(schema,
                   "SELECT Value LIKE 'removed;at=%' FROM Properties WHERE Key = "
                   "'EQStamp_gone'") == "t");
    CHECK(pg::text(schema, "SELECT string_agg(EventId::text, ',') FROM EventQueueFailures") == "2");
    auto c = connect_as(cl, schema);
    for (const char* sql : {"UPDATE Properties SET Value = '1:1:' WHERE Key = 'EQStamp_cleanup'",
                            "UPDATE Properties SET Key = 'EQStamp_x' WHERE Key = 'EQStamp_gone'"}) {
      pqxx::work tx(*c);
      INFO(std::string(sql));
      CHECK_THROWS_AS(tx.exec(sql), pqxx::insufficient_privilege);
    }
    {
      pqxx::work tx(*c);  // the secret is invisible to the role: nothing to update
      CHECK(tx.exec("UPDATE Properties SET Value = 'removed;at=x' WHERE Key = 'EQSecret'")
                .affected_rows() == 0);
    }
    CHECK(pg::text(schema, "SELECT Value FROM Properties WHERE Key = 'EQSecret'") == k_secret);
    CHECK(pg::text(schema,
                   "SELECT Value LIKE 'removed;at=%' FROM Properties WHERE Key = "
                   "'EQStamp_cleanup'") == "f");
  }

  SUBCASE("cleanup set up by an older roles script: deletes the cursor, keeps failures, says so") {
    pg::exec(schema,
             "REVOKE UPDATE (Value) ON Properties FROM eventq_cleanup; REVOKE DELETE ON "
             "EventQueueFailures FROM eventq_cleanup; INSERT INTO EventQueueFailures "
             "(InstanceName, SessionName, EventId, EventType, Error, Attempts, FailedAt) VALUES "
             "('gone', 's', 1, 't', 'e', 1, now() - interval '8 days')");
    { queue gone(url_as(app, schema), with_secret("gone")); }
    pg::exec(schema,
             "UPDATE EventQueueInstances SET LeaseUntil = '2000-01-01' WHERE Name = 'gone'");
    auto o = with_secret("cleanup");
    std::vector<std::string> warnings;
    std::mutex m;
    o.logger = [&](log_level level, std::string_view msg) {
      std::lock_guard lk(m);
      if (level == log_level::warning) warnings.emplace_back(msg);
    };
    queue janitor(url_as(cl, schema), o);
    janitor.cleanup();
    CHECK(pg::text(schema, "SELECT count(*) FROM Properties WHERE Key = 'EQStamp_gone'") == "0");
    CHECK(pg::text(schema, "SELECT count(*) FROM EventQueueFailures") == "1");  // kept, said
    { queue again(url_as(app, schema), with_secret("gone")); }
    pg::exec(schema,
             "UPDATE EventQueueInstances SET LeaseUntil = '2000-01-01' WHERE Name = 'gone'");
    janitor.cleanup();  // the next cleanup says neither again
    std::lock_guard lk(m);
    for (const char* said :
         {"instead of marking them removed", "cannot delete old failure records"}) {
      CHECK_MESSAGE(std::count_if(warnings.begin(), warnings.end(),
                                  [&](const std::string& w) {
                                    return w.find(said) != std::string::npos &&
                                           w.find("run schema/postgres-roles.sql again") !=
                                               std::string::npos;
                                  }) == 1,
                    std::string(said));
    }
  }
}
