// Signatures, key rotation, the database secret and hostile rows, on SQLite (the same checks on
// PostgreSQL are in postgres_security_test.cpp).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

#include "../src/row_check.h"
#include "../src/util.h"
#include "support.h"

using namespace eventq;
using namespace eventq::test;
using namespace std::chrono_literals;

namespace {

const std::string k_secret = "0123456789abcdef0123456789abcdef";

std::string hex(std::string_view bytes) {
  static constexpr char digits[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

// A row as a hostile (or careless) writer leaves it. Every text goes in as a hex literal cast to
// TEXT, so any bytes at all can be written.
struct raw_row {
  std::string type = "t";
  std::string data = "{}";
  std::string instance = "x";
  raise_mode mode = raise_mode::both;
  std::chrono::system_clock::time_point created =
      std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
  std::optional<signing_key> sign_with;  // nullopt: unsigned
  std::optional<std::string> signature;  // overrides the computed one
};

void insert(const std::string& db, const raw_row& r) {
  event_record rec;
  rec.type = r.type;
  rec.data = r.data;
  rec.instance = r.instance;
  rec.mode = r.mode;
  rec.created = r.created;
  std::string key_id = "NULL", sig = "NULL";
  if (r.sign_with) {
    key_id = "'" + r.sign_with->id + "'";
    sig = "'" + sign(rec, *r.sign_with) + "'";
  }
  if (r.signature) sig = "CAST(X'" + hex(*r.signature) + "' AS TEXT)";
  bool local = r.mode != raise_mode::globally, global = r.mode != raise_mode::locally;
  sqlite_exec(db,
              "INSERT INTO EventQueue (EventType, InstanceData, InstanceName, RaiseLocally, "
              "RaiseGlobally, Created, KeyId, Signature) VALUES (CAST(X'" +
                  hex(r.type) + "' AS TEXT), CAST(X'" + hex(r.data) + "' AS TEXT), CAST(X'" +
                  hex(r.instance) + "' AS TEXT), " + (local ? "1" : "0") + ", " +
                  (global ? "1" : "0") + ", '" + detail::format_utc(r.created) + "', " + key_id +
                  ", " + sig + ")");
}

options with_secret(const std::string& name, log_capture* logs = nullptr) {
  auto o = test_options(name, logs);
  o.secret = k_secret;
  return o;
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

}  // namespace

TEST_CASE(
    "a forged signature and an unknown key id are refused, counted, logged; later rows flow") {
  temp_dir dir;
  auto db = dir.file("e.db");
  log_capture logs;
  queue a("sqlite:" + db, with_secret("a"));
  queue b("sqlite:" + db, with_secret("b", &logs));
  collector got;
  auto sub = b.subscribe_all(got.handler());
  auto g1 = a.raise_raw("t", {{"n", 1}}, raise_mode::globally);
  raw_row forged;
  forged.sign_with = signing_key{"1", "not the secret, but long enough"};
  insert(db, forged);
  raw_row unknown;
  unknown.sign_with = signing_key{"9", k_secret};
  insert(db, unknown);
  raw_row unsigned_row;
  insert(db, unsigned_row);
  raw_row garbage_sig;
  garbage_sig.sign_with = signing_key{"1", k_secret};
  garbage_sig.signature = "zz'; DROP TABLE EventQueue; --";
  insert(db, garbage_sig);
  auto g2 = a.raise_raw("t", {{"n", 2}}, raise_mode::globally);
  b.poll_once();
  CHECK(got.get() == std::vector<std::int64_t>{g1, g2});
  CHECK(b.stats().unauthentic == 4);
  CHECK(logs.contains("event " + std::to_string(g1 + 1) +
                      " skipped, unauthentic: signature does "
                      "not match"));
  CHECK(logs.contains("event " + std::to_string(g1 + 2) +
                      " skipped, unauthentic: signed with "
                      "unknown key id '9'"));
  CHECK(logs.contains("event " + std::to_string(g1 + 3) + " skipped, unauthentic: unsigned"));

  // The listing for `eventq verify` names the same rows, whatever the options say.
  auto off = with_secret("c");
  off.verify = verify_mode::off;
  queue c("sqlite:" + db, off);
  auto rejected = c.find_rejected_rows();
  REQUIRE(rejected.size() == 4);
  CHECK(rejected[0].row.id == g1 + 1);
  CHECK(rejected[0].verdict == "unauthentic");
  CHECK(rejected[3].row.id == g1 + 4);
  CHECK(c.find_rejected_rows(2).size() == 2);

  // Verification off (explicit) delivers them all.
  collector all;
  auto sub_c = c.subscribe_all(all.handler());
  auto g3 = a.raise_raw("t", {{"n", 3}}, raise_mode::globally);
  (void)g3;
  CHECK(c.poll_once() == 1);  // c started "now": only g3
  CHECK(c.stats().unauthentic == 0);
}

TEST_CASE("key rotation: the old key is accepted inside its window and refused after it") {
  temp_dir dir;
  auto db = dir.file("e.db");
  const signing_key old_key{"2024", "old secret, sixteen bytes or more"};
  auto now = std::chrono::system_clock::now();

  auto inside = with_secret("inside");
  inside.key_id = "2025";
  inside.accepted_keys.push_back(signing_key{old_key.id, old_key.secret, now + 1h});
  auto after = with_secret("after");
  after.key_id = "2025";
  after.accepted_keys.push_back(signing_key{old_key.id, old_key.secret, now - 1s});
  queue qi("sqlite:" + db, inside);
  queue qa("sqlite:" + db, after);
  collector got_i, got_a;
  auto si = qi.subscribe_all(got_i.handler());
  auto sa = qa.subscribe_all(got_a.handler());

  // An instance not yet redeployed still signs with the old key.
  auto old_signer = test_options("old");
  old_signer.key_id = old_key.id;
  old_signer.secret = old_key.secret;
  queue qo("sqlite:" + db, old_signer);
  auto by_old = qo.raise_raw("t", nlohmann::json::object(), raise_mode::globally);
  auto by_new = qi.raise_raw("t", nlohmann::json::object(), raise_mode::globally);
  qi.poll_once();
  qa.poll_once();
  CHECK(got_i.get() == std::vector<std::int64_t>{by_old});  // its own (globally) not for it
  CHECK(got_a.get() == std::vector<std::int64_t>{by_new});
  CHECK(qa.stats().unauthentic == 1);
  CHECK(qi.stats().unauthentic == 0);

  auto bad = test_options("bad");
  bad.secret = "short";
  CHECK_THROWS_AS(queue("sqlite:" + db, bad), error);
  bad = with_secret("bad");
  bad.accepted_keys.push_back(signing_key{"1", k_secret});  // same id as the signing key
  CHECK_THROWS_AS(queue("sqlite:" + db, bad), error);
  bad = with_secret("bad");
  bad.key_id = "has space";
  CHECK_THROWS_AS(queue("sqlite:" + db, bad), error);
}

TEST_CASE("without a given secret, one is created in the database once and shared") {
  temp_dir dir;
  auto url = "sqlite:" + dir.file("e.db");
  auto failures = open_and_raise_at_once(url, 8);
  CHECK_MESSAGE(failures.empty(), failures);
  auto secret =
      sqlite_text(dir.file("e.db"), "SELECT Value FROM Properties WHERE Key = 'EQSecret'");
  CHECK(secret.size() == 64);
  // Every instance signed with that one secret: a new one verifies all eight rows.
  queue check(url, test_options("check"));
  CHECK(check.find_rejected_rows().empty());
  // EVENTQ_SECRET, when set, replaces it: rows signed with the database secret are then refused.
  ::setenv("EVENTQ_SECRET", k_secret.c_str(), 1);
  queue env(url, test_options("env"));
  ::unsetenv("EVENTQ_SECRET");
  CHECK(env.find_rejected_rows().size() == 8);
}

TEST_CASE("hostile rows between genuine events: each counted, every genuine event delivered") {
  temp_dir dir;
  auto db = dir.file("e.db");
  log_capture logs;
  queue a("sqlite:" + db, with_secret("a"));
  queue b("sqlite:" + db, with_secret("b", &logs));
  queue c("sqlite:" + db, with_secret("c"));
  collector got_a, got_b, got_c;
  auto sa = a.subscribe_all(got_a.handler());
  auto sb = b.subscribe_all(got_b.handler());
  auto sc = c.subscribe_all(got_c.handler());
  b.start();  // b's poller thread must survive all of it

  const signing_key key{"1", k_secret};
  std::vector<std::int64_t> genuine;
  auto raise = [&] {
    genuine.push_back(a.raise_raw("t", {{"n", genuine.size()}}, raise_mode::both));
  };
  // Rows signed with the right key, so that they pass verification and reach the decoder (a
  // buggy writer that holds the key), and each also unsigned.
  std::vector<raw_row> hostile;
  auto add = [&](auto edit) {
    raw_row r;
    edit(r);
    hostile.push_back(r);
  };
  add([](raw_row& r) { r.data = "{broken"; });
  add([](raw_row& r) { r.data = "\"a string, not an object\""; });
  add([](raw_row& r) { r.data = "[1, 2, 3]"; });
  add([](raw_row& r) { r.data = "{\"x\":\"" + std::string(10 * 1024 * 1024, 'a') + "\"}"; });
  add([](raw_row& r) { r.data = "{\"n\":\"\xff\xfe\"}"; });                   // invalid UTF-8
  add([](raw_row& r) { r.data = std::string("{\"n\":1}\0{\"m\":2}", 15); });  // NUL byte
  add([](raw_row& r) { r.type = std::string("t\0x", 3); });
  add([](raw_row& r) { r.type = "t\xc0\xaf"; });  // overlong '/'
  add([](raw_row& r) { r.type = ""; });
  add([](raw_row& r) {
    r.instance = "'); DELETE FROM EventQueue; --";
    r.data = "{\"ok\":1}";
  });
  add([](raw_row& r) { r.type = "t'; DROP TABLE Properties; --"; });
  add([](raw_row& r) { r.data = std::string(100000, '[') + std::string(100000, ']'); });
  raise();
  std::uint64_t signed_bad = 0, signed_ok = 0, oversized = 0;
  for (auto& r : hostile) {
    insert(db, r);  // unsigned
    raise();
    r.sign_with = key;
    insert(db, r);
    auto verdict = detail::check_row(
        event_record{0, r.type, r.data, r.instance, r.mode, r.created, key.id,
                     sign({0, r.type, r.data, r.instance, r.mode, r.created, {}, {}}, key)},
        {nullptr, verify_mode::off, 256 * 1024, std::chrono::system_clock::now()});
    if (verdict.verdict == detail::row_verdict::ok) {
      ++signed_ok;
    } else if (verdict.verdict == detail::row_verdict::oversized) {
      ++oversized;
    } else {
      ++signed_bad;
    }
    raise();
  }
  // NOT NULL columns refuse NULLs outright; bad flags are refused by CHECK.
  CHECK_THROWS(sqlite_exec(db,
                           "INSERT INTO EventQueue (EventType, InstanceData, InstanceName, "
                           "RaiseLocally, RaiseGlobally) VALUES (NULL, '{}', 'x', 1, 1)"));
  CHECK_THROWS(sqlite_exec(db,
                           "INSERT INTO EventQueue (EventType, InstanceData, InstanceName, "
                           "RaiseLocally, RaiseGlobally) VALUES ('t', '{}', 'x', 7, 1)"));
  // Other storage classes in TEXT columns (SQLite keeps what it is given). A Created that is
  // no time is refused at INSERT since schema 4; a row stored before (trigger dropped here) is
  // refused by every instance as malformed, not as forged.
  const char* odd_row =
      "INSERT INTO EventQueue (EventType, InstanceData, InstanceName, RaiseLocally, "
      "RaiseGlobally, Created, KeyId, Signature) VALUES (42, X'00FF', 3.5, 1, 1, x'00', 1, 2)";
  CHECK_THROWS(sqlite_exec(db, odd_row));
  sqlite_exec(db, std::string("DROP TRIGGER EventQueue_Created; ") + odd_row);
  raise();

  CHECK(signed_ok == 2);  // the SQL-looking names are ordinary, genuine names
  CHECK(oversized == 1);
  c.poll_once();
  a.poll_once();
  REQUIRE(wait_until([&] { return got_b.get().size() >= genuine.size() + signed_ok; }));
  b.stop();
  for (auto* got : {&got_a, &got_b, &got_c}) {
    auto ids = got->get();
    std::vector<std::int64_t> genuine_seen;
    std::copy_if(ids.begin(), ids.end(), std::back_inserter(genuine_seen), [&](std::int64_t id) {
      return std::find(genuine.begin(), genuine.end(), id) != genuine.end();
    });
    CHECK(genuine_seen == genuine);
    CHECK(ids.size() == genuine.size() + signed_ok);
  }
  for (auto* q : {&a, &b, &c}) {
    auto s = q->stats();
    // Size is checked first: the unsigned 10 MB row counts as oversized too.
    CHECK(s.unauthentic == hostile.size() - oversized);
    CHECK(s.oversized == 2 * oversized);
    CHECK(s.undecodable == signed_bad + 1);
    CHECK(s.poll_errors == 0);
  }
  CHECK(logs.contains("skipped, oversized"));
  CHECK(logs.contains("skipped, malformed: payload contains a NUL byte"));
  CHECK(logs.contains("skipped, malformed: event type contains a control character"));
  CHECK(logs.contains("skipped, malformed: payload is JSON but not an object"));
  CHECK(sqlite_int(db, "SELECT count(*) FROM EventQueue") > 0);  // nothing was injected
  // The poller thread is alive and still delivers.
  b.start();
  raise();
  CHECK(wait_until([&] { return got_b.get().back() == genuine.back(); }));
  CHECK(b.running());
}

TEST_CASE("a backlog page is checked on two threads: same order, counts and refusals") {
  // Pages of at least 128 rows are checked half by a helper thread; delivery stays in order.
  temp_dir dir;
  auto db = dir.file("e.db");
  log_capture logs;
  queue a("sqlite:" + db, with_secret("a"));
  queue d("sqlite:" + db, with_secret("d", &logs));
  collector got;
  auto sub = d.subscribe_all(got.handler());
  std::vector<std::int64_t> genuine;
  std::size_t refused = 0;
  for (int i = 0; i < 450; ++i) {
    if (i % 7 == 3) {
      raw_row r;
      r.data = i % 2 ? "{broken" : "{\"unsigned\":1}";  // malformed-and-unsigned, or unsigned
      insert(db, r);
      ++refused;
    } else {
      genuine.push_back(a.raise_raw("t", {{"n", i}}, raise_mode::globally));
    }
  }
  CHECK(d.poll_once() == genuine.size());  // one page of 450 rows
  CHECK(got.get() == genuine);
  auto s = d.stats();
  CHECK(s.unauthentic == refused);
  CHECK(s.undecodable == 0);
  CHECK(s.poll_errors == 0);
  CHECK(logs.count("skipped, unauthentic") == refused);
}

TEST_CASE("a cursor holding garbage, a negative or a huge number: Missed, then events flow") {
  temp_dir dir;
  auto db = dir.file("e.db");
  queue a("sqlite:" + db, test_options("a"));
  const std::vector<std::string> cursors = {"-5",
                                            "99999999999999999999999",
                                            "garbage'; DROP TABLE EventQueue; --",
                                            std::string("12\0x", 4),
                                            "",
                                            " 7",
                                            "0x10",
                                            "1e3"};
  for (const auto& bad : cursors) {
    { queue b("sqlite:" + db, test_options("b")); }
    sqlite_exec(db, "UPDATE Properties SET Value = CAST(X'" + hex(bad) +
                        "' AS TEXT) WHERE Key = 'EQStamp_b'");
    queue b("sqlite:" + db, test_options("b"));
    int missed = 0;
    auto m = b.on_missed([&](const missed_info&) { ++missed; });
    collector got;
    auto sub = b.subscribe_all(got.handler());
    b.poll_once();
    auto id = a.raise_raw("t", nlohmann::json::object(), raise_mode::globally);
    b.poll_once();
    INFO("cursor '" << detail::printable(bad) << "'");
    CHECK(missed == 1);
    CHECK(got.get().back() == id);
  }
}

TEST_CASE("valid_utf8 and printable") {
  CHECK(detail::valid_utf8("plain"));
  CHECK(detail::valid_utf8("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"));
  CHECK_FALSE(detail::valid_utf8("\xc0\xaf"));          // overlong
  CHECK_FALSE(detail::valid_utf8("\xed\xa0\x80"));      // surrogate
  CHECK_FALSE(detail::valid_utf8("\xf4\x90\x80\x80"));  // > U+10FFFF
  CHECK_FALSE(detail::valid_utf8("\xe2\x82"));          // truncated
  CHECK(detail::printable(std::string("a\0\xff", 3)) == "a\\x00\\xff");
  CHECK(detail::printable(std::string(100, 'x'), 10) == "xxxxxxxxxx...");
}

TEST_CASE("the canonical form is length-prefixed: moving bytes between fields changes it") {
  event_record r1, r2;
  r1.type = "ab";
  r1.data = "{}";
  r2.type = "a";
  r2.data = "b{}";
  CHECK(canonical_form(r1, "1") != canonical_form(r2, "1"));
  signing_key k{"1", k_secret};
  CHECK(sign(r1, k) != sign(r2, k));
  CHECK(sign(r1, k).size() == 64);
  r2 = r1;
  r2.created += std::chrono::microseconds(999);  // below the stored precision
  CHECK(sign(r1, k) == sign(r2, k));
  r2.created += std::chrono::milliseconds(1);
  CHECK(sign(r1, k) != sign(r2, k));
  r2 = r1;
  r2.mode = raise_mode::locally;
  CHECK(sign(r1, k) != sign(r2, k));
}

TEST_CASE("HMAC-SHA256 matches RFC 4231, with keys alternating and from several threads") {
  auto hex = [](const std::array<unsigned char, 32>& mac) {
    std::string out;
    for (unsigned char b : mac) {
      out.push_back("0123456789abcdef"[b >> 4]);
      out.push_back("0123456789abcdef"[b & 15]);
    }
    return out;
  };
  struct vector_case {
    std::string key, data, mac;
  };
  const std::vector<vector_case> cases = {
      // Test case 1: a 20-byte key.
      {std::string(20, '\x0b'), "Hi There",
       "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
      // Test case 2: a short key.
      {"Jefe", "what do ya want for nothing?",
       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
      // Test case 6: a key longer than the block (hashed first).
      {std::string(131, '\xaa'), "Test Using Larger Than Block-Size Key - Hash Key First",
       "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
      // Test case 7: a long key and a long message.
      {std::string(131, '\xaa'),
       "This is a test using a larger than block-size key and a larger than block-size data. "
       "The key needs to be hashed before being used by the HMAC algorithm.",
       "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
  };
  // Alternating keys exercises the per-thread key cache; the threads each build their own.
  std::atomic<int> wrong{0};
  auto check_all = [&] {
    for (int round = 0; round < 3; ++round) {
      for (const auto& c : cases) {
        if (hex(detail::hmac_sha256(c.key, c.data)) != c.mac) ++wrong;
      }
    }
  };
  check_all();
  CHECK(wrong == 0);
  for (const auto& c : cases) CHECK(hex(detail::hmac_sha256(c.key, c.data)) == c.mac);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back(check_all);
  for (auto& t : threads) t.join();
  CHECK(wrong == 0);
  // More keys than the cache holds: still right after eviction.
  for (int k = 0; k < 20; ++k) {
    auto key = "key-" + std::to_string(k);
    CHECK(detail::hmac_sha256(key, "m") == detail::hmac_sha256(key, "m"));
    CHECK(detail::hmac_sha256(key, "m") != detail::hmac_sha256(key + "x", "m"));
  }
  CHECK(hex(detail::hmac_sha256(cases[1].key, cases[1].data)) == cases[1].mac);
}
