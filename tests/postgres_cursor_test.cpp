// The PostgreSQL cursor decisions (src/postgres/postgres_cursor.h), without a server: each case
// of issue 10, then a property test that drives them through random interleavings of raising
// transactions (committing, aborting, still running) and deletions against a model of the
// server, and finds no event skipped without Missed.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <limits>
#include <map>
#include <random>
#include <set>

#include "../src/postgres/postgres_config.h"
#include "../src/postgres/postgres_cursor.h"
#include "../src/postgres/postgres_statements.h"
#include "eventq/error.h"

using namespace eventq::postgres;

namespace {

snapshot snap(std::string_view text) {
  auto s = parse_snapshot(text);
  REQUIRE(s);
  return *s;
}

page_facts facts_at(std::string_view now, std::string incarnation = "7.1") {
  page_facts f;
  f.now = snap(now);
  f.incarnation = std::move(incarnation);
  return f;
}

}  // namespace

TEST_CASE("cursor text round-trips, options included, and garbage is refused") {
  for (const char* text : {"10:20:12,15", "10:20:12|10:30:|25:7", "10:20:;c=10:40:;db=7.1",
                           "10:20:|10:30:|25:7;c=10:40:35;db=7.1", "5:5:", "10:20:;n=18:4;db=7.1",
                           "10:20:;c=10:40:;n=18:4"}) {
    auto c = parse_cursor(text);
    REQUIRE_MESSAGE(c, text);
    CHECK(format_cursor(*c) == text);
  }
  for (const char* text : {"", "x", "0:5:", "10:5:", "10:20:25", "10:20:;db=", "10:20:;c=x",
                           "10:20:;zz=1", "10:20:;db=ABC", "10:20:|10:10:|1:1"}) {
    CHECK_MESSAGE(!parse_cursor(text), text);
  }
}

TEST_CASE("a garbage cursor gives Missed and a start from the current snapshot") {
  auto f = facts_at("50:60:55");
  auto d = decide_read("garbage", parse_cursor("garbage"), f, 10);
  CHECK(d.missed);
  CHECK(!d.deliver);
  CHECK(d.next_cursor == "50:60:55;db=7.1");
}

TEST_CASE("the oldest cursor is one the parser accepts, whatever the oldest Stamp") {
  // Stamp 0 made it "0:0:", which parse_cursor() refuses (Missed, and a start from the head).
  for (std::uint64_t stamp : {0ull, 1ull, 3ull, 45ull, 100ull}) {
    auto text = oldest_cursor_text(snap("50:60:55"), stamp, "7.1");
    auto c = parse_cursor(text);
    REQUIRE_MESSAGE(c, text);
    if (stamp >= 1) CHECK(!c->prev.sees(stamp));
  }
  CHECK(parse_cursor(oldest_cursor_text(snap("50:60:55"), std::nullopt, "")));
  // A row newer than the oldest running transaction: everything from it on is new, and so is
  // what is still running below it.
  auto c = parse_cursor(oldest_cursor_text(snap("50:60:52,55"), 54, ""));
  REQUIRE(c);
  CHECK(!c->prev.sees(52));
  CHECK(!c->prev.sees(54));
  CHECK(c->prev.sees(53));
}

TEST_CASE("another incarnation of the database: Missed once, then delivery") {
  auto f = facts_at("50:60:", "8.2");
  auto d = decide_read("40:45:;db=7.1", parse_cursor("40:45:;db=7.1"), f, 10);
  CHECK(d.missed);
  CHECK(d.missed->find("another incarnation") != std::string::npos);
  CHECK(!d.deliver);
  auto again = decide_read(d.next_cursor, parse_cursor(d.next_cursor), f, 10);
  CHECK(!again.missed);
  // A cursor from before incarnations were recorded is taken as this one's, and gets it.
  auto legacy = decide_read("40:45:", parse_cursor("40:45:"), f, 10);
  CHECK(!legacy.missed);
  CHECK(legacy.next_cursor == "50:60:;db=8.2");
}

TEST_CASE("a failover is a later timeline of the same cluster") {
  CHECK(failed_over("7.1", "7.2"));
  CHECK(failed_over("7.1", "7.12"));
  CHECK(!failed_over("7.2", "7.1"));  // an older timeline: a restore, not a promotion
  CHECK(!failed_over("7.1", "8.2"));  // another cluster
  CHECK(!failed_over("7.1", "7.1"));
  CHECK(!failed_over("", "7.2"));
  CHECK(!failed_over("7.1", ""));
  CHECK(!parse_cursor("10:20:;n=x:4"));
  CHECK(!parse_cursor("10:20:;n=0:4"));
  CHECK(!parse_cursor("10:20:;n=18"));
}

TEST_CASE("failed over with the cursor's newest row there: no Missed, the snapshot cut there") {
  // The old primary had handed out ids up to 59 (the cursor's xmax 60); 44 was running. Its
  // newest row was raised by 50. The new primary may hand out 51..59 again: they must not
  // count as seen.
  const std::string cursor = "40:60:44;n=50:9;db=7.1";
  auto f = facts_at("52:53:", "7.2");
  f.newest_found = true;
  auto d = decide_read(cursor, parse_cursor(cursor), f, 10);
  CHECK(!d.missed);
  CHECK(!d.deliver);  // the page was read with the uncut cursor
  CHECK(d.more);
  REQUIRE(d.notice);
  CHECK(d.notice->find("failed over") != std::string::npos);
  auto next = parse_cursor(d.next_cursor);
  REQUIRE(next);
  CHECK(next->incarnation == "7.2");
  CHECK(next->prev.sees(50));
  CHECK(next->prev.sees(43));
  CHECK(!next->prev.sees(44));  // still running then: its rows, if it committed, come
  for (std::uint64_t reused = 51; reused < 60; ++reused) CHECK(!next->prev.sees(reused));
  // The next read from the cut cursor is an ordinary one.
  auto again = facts_at("52:53:", "7.2");
  again.rows = 1;
  again.last_stamp = 52;
  again.last_id = 11;
  auto d2 = decide_read(d.next_cursor, next, again, 10);
  CHECK(!d2.missed);
  CHECK(d2.deliver);
}

TEST_CASE("failed over without the cursor's newest row: Missed, start from now") {
  const std::string cursor = "40:60:;n=58:9;db=7.1";
  auto f = facts_at("52:53:", "7.2");
  f.newest_found = false;
  auto d = decide_read(cursor, parse_cursor(cursor), f, 10);
  REQUIRE(d.missed);
  CHECK(d.missed->find("not on the new primary") != std::string::npos);
  CHECK(d.missed->find("asynchronous") != std::string::npos);
  CHECK(d.next_cursor == "52:53:;db=7.2");
  // A cursor that never saw a row is cut to nothing seen: every row there comes.
  const std::string empty = "40:60:;db=7.1";
  f.newest_found = true;
  auto d2 = decide_read(empty, parse_cursor(empty), f, 10);
  CHECK(!d2.missed);
  auto next = parse_cursor(d2.next_cursor);
  REQUIRE(next);
  CHECK(!next->prev.sees(1));
}

TEST_CASE("the newest row is carried forward and grows") {
  auto f = facts_at("50:60:");
  f.newest_stamp = 55;
  f.newest_id = 3;
  f.rows = 1;
  f.last_stamp = 55;
  f.last_id = 3;
  auto d = decide_read("40:45:;n=42:2;db=7.1", parse_cursor("40:45:;n=42:2;db=7.1"), f, 10);
  CHECK(d.next_cursor == "50:60:;n=55:3;db=7.1");
  // A page of a backlog does not say: the cursor keeps what it had.
  auto page = facts_at("50:60:");
  page.rows = 1;
  page.last_stamp = 46;
  page.last_id = 5;
  auto d2 = decide_read("40:45:;n=42:2;db=7.1", parse_cursor("40:45:;n=42:2;db=7.1"), page, 1);
  CHECK(d2.next_cursor.find(";n=42:2;") != std::string::npos);
}

TEST_CASE("a cursor ahead of the server: Missed, start from now") {
  auto d = decide_read("40:90:", parse_cursor("40:90:"), facts_at("50:60:"), 10);
  CHECK(d.missed);
  CHECK(d.missed->find("ahead") != std::string::npos);
}

TEST_CASE("a deleted transaction in the cursor's in-progress list gives Missed") {
  // The cursor had not seen 42 (running when it was taken). Cleanup then deleted 42's rows and
  // those of 44, which the cursor had processed (below its xmax 45, not in progress): the
  // highest deleted Stamp (44) is visible to the cursor, so the old record said nothing.
  auto f = facts_at("50:60:");
  f.deletions.push_back({55, std::nullopt, {42, 44}});
  auto d = decide_read("40:45:42;db=7.1", parse_cursor("40:45:42;db=7.1"), f, 10);
  REQUIRE(d.missed);
  CHECK(d.missed->find("transaction 42)") != std::string::npos);  // 44 is no loss
  CHECK(d.deliver);
  // Read once: the next cursor has seen the entry, and the next read says nothing.
  auto again = decide_read(d.next_cursor, parse_cursor(d.next_cursor), f, 10);
  CHECK(!again.missed);
  // Deleting what the cursor had processed is no loss.
  auto seen = facts_at("50:60:");
  seen.deletions.push_back({55, std::nullopt, {41, 43}});
  CHECK(!decide_read("40:45:42", parse_cursor("40:45:42"), seen, 10).missed);
}

TEST_CASE("rows deleted in the middle of a paged backlog give Missed once") {
  // Paging from 40:45: towards 40:70:, the last row delivered was raised by 50.
  const std::string cursor = "40:45:|40:70:|50:9";
  auto f = facts_at("75:80:");
  f.deletions.push_back({72, std::nullopt, {48, 52}});  // 48 was delivered, 52 was not
  f.rows = 3;
  f.last_stamp = 53;
  f.last_id = 12;
  auto d = decide_read(cursor, parse_cursor(cursor), f, 3);
  REQUIRE(d.missed);
  CHECK(d.missed->find("52") != std::string::npos);
  CHECK(d.missed->find("48") == std::string::npos);
  CHECK(d.more);
  // The next page does not report the same entry again.
  auto next = parse_cursor(d.next_cursor);
  REQUIRE(next);
  CHECK(next->target);
  auto d2 = decide_read(d.next_cursor, next, f, 3);
  CHECK(!d2.missed);
  // Only rows already delivered deleted: no Missed.
  auto g = facts_at("75:80:");
  g.deletions.push_back({72, std::nullopt, {46, 48}});
  CHECK(!decide_read(cursor, parse_cursor(cursor), g, 3).missed);
}

TEST_CASE("a deletion record from another incarnation is ignored (restore: one Missed)") {
  // A dump restored into a cluster with a lower counter brings entries whose deleter (and
  // stamps) the new server never reached: not a reason for Missed on every poll.
  auto f = facts_at("50:60:");
  f.deletions.push_back({900000, std::nullopt, {899999}});
  auto d = decide_read("40:45:;db=7.1", parse_cursor("40:45:;db=7.1"), f, 10);
  CHECK(!d.missed);
}

TEST_CASE("TRUNCATE: Missed when the cursor had anything left below it") {
  auto f = facts_at("50:60:");
  f.deletions.push_back({49, 49, {}});
  CHECK(decide_read("40:45:", parse_cursor("40:45:"), f, 10).missed);
  CHECK(!decide_read("49:49:", parse_cursor("49:49:"), f, 10).missed);
}

// ---- the model --------------------------------------------------------------------------------

namespace {

// A PostgreSQL server as far as the cursor can tell: transactions with ids, rows with Stamps
// and Ids (drawn at INSERT, so not in commit order), deletions recorded as the trigger does.
struct server {
  enum class state { running, committed, aborted };
  struct row {
    std::int64_t id;
    std::uint64_t stamp;
    std::optional<std::uint64_t> deleter;  // a transaction that deleted it (maybe not committed)
  };
  struct entry {
    std::uint64_t deleter;
    std::optional<std::uint64_t> below;
    std::vector<std::uint64_t> stamps;
  };
  std::uint64_t next_xid = 3;
  std::map<std::uint64_t, state> xacts;
  std::vector<row> rows;
  std::vector<entry> entries;
  std::int64_t next_id = 1;

  std::uint64_t begin() {
    xacts[next_xid] = state::running;
    return next_xid++;
  }
  snapshot now() const {
    snapshot s;
    s.xmax = next_xid;
    for (auto& [x, st] : xacts) {
      if (st == state::running) s.xip.push_back(x);
    }
    s.xmin = s.xip.empty() ? s.xmax : s.xip.front();
    return s;
  }
  bool committed_in(std::uint64_t x, const snapshot& n) const {
    auto it = xacts.find(x);
    return it != xacts.end() && it->second == state::committed && n.sees(x);
  }
  bool exists_in(const row& r, const snapshot& n) const {
    return committed_in(r.stamp, n) && !(r.deleter && committed_in(*r.deleter, n));
  }
  std::vector<std::uint64_t> running() const {
    std::vector<std::uint64_t> out;
    for (auto& [x, st] : xacts) {
      if (st == state::running) out.push_back(x);
    }
    return out;
  }

  // The statements of postgres_statements.cpp, evaluated on the model.
  page_facts read(const std::optional<parsed_cursor>& cur, std::size_t limit,
                  std::vector<std::int64_t>& ids) const {
    page_facts f;
    f.now = now();
    f.incarnation = "7.1";
    ids.clear();
    if (!cur) return f;
    auto plan = plan_read(*cur);
    auto prev = *parse_snapshot(plan.prev);
    auto checked = *parse_snapshot(plan.checked);
    for (const auto& e : entries) {
      if (!committed_in(e.deleter, f.now)) continue;
      if (e.deleter < checked.xmin || checked.sees(e.deleter)) continue;
      deletion_record d{e.deleter, e.below, {}};
      for (auto s : e.stamps) {
        if (!prev.sees(s)) d.stamps.push_back(s);
      }
      f.deletions.push_back(std::move(d));
    }
    auto page = [&](const snapshot& target) {
      std::vector<const row*> out;
      for (const auto& r : rows) {
        if (!exists_in(r, f.now)) continue;
        if (r.stamp >= target.xmax || prev.sees(r.stamp) || !target.sees(r.stamp)) continue;
        // PgQ's two ranges: prev's in-progress ids, then the Stamps from its xmax on.
        bool in_progress = std::find(prev.xip.begin(), prev.xip.end(), r.stamp) != prev.xip.end();
        bool from_xmax =
            r.stamp >= plan.range_from_stamp &&
            std::pair(r.stamp, r.id) > std::pair(plan.range_from_stamp, plan.range_from_id);
        bool after_last = std::pair(r.stamp, r.id) > std::pair(plan.from_stamp, plan.from_id);
        if (!(in_progress && after_last) && !from_xmax) continue;  // as the two parts ask
        out.push_back(&r);
      }
      std::sort(out.begin(), out.end(), [](auto* a, auto* b) {
        return std::pair(a->stamp, a->id) < std::pair(b->stamp, b->id);
      });
      if (out.size() > limit) out.resize(limit);
      return out;
    };
    auto got = page(plan.paging ? *parse_snapshot(plan.target) : f.now);
    f.rows = got.size();
    for (auto* r : got) ids.push_back(r->id);
    if (!got.empty()) {
      f.last_stamp = got.back()->stamp;
      f.last_id = got.back()->id;
    }
    return f;
  }
};

}  // namespace

TEST_CASE(
    "property: random commits, aborts, running transactions and deletions; no skip "
    "without Missed, no Missed twice for one deletion") {
  for (unsigned seed = 1; seed <= 300; ++seed) {
    CAPTURE(seed);
    std::mt19937 rng(seed);
    auto pick = [&](std::size_t n) {
      return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng);
    };
    server db;
    std::string cursor = head_cursor_text(db.now(), "7.1");
    std::set<std::int64_t> delivered;
    std::size_t duplicates = 0, missed = 0;
    // For each Missed: the snapshot of the read that reported it.
    std::vector<snapshot> missed_at;
    const std::size_t limit = 1 + pick(3);
    std::vector<std::int64_t> ids;
    auto read = [&] {
      auto cur = parse_cursor(cursor);
      REQUIRE_MESSAGE(cur, cursor);
      auto f = db.read(cur, limit, ids);
      auto d = decide_read(cursor, cur, f, limit);
      if (d.missed) {
        ++missed;
        missed_at.push_back(f.now);
      }
      if (d.deliver) {
        for (auto id : ids) duplicates += !delivered.insert(id).second;
      }
      cursor = d.next_cursor;
      return d.more;
    };
    for (int step = 0; step < 120; ++step) {
      auto running = db.running();
      switch (pick(8)) {
        case 0:
        case 1: {  // a raising transaction starts and inserts a row or two
          auto x = db.begin();
          for (std::size_t i = 0, n = 1 + pick(2); i < n; ++i) {
            db.rows.push_back({db.next_id++, x, std::nullopt});
          }
          break;
        }
        case 2:  // one ends
        case 6:
          if (!running.empty()) {
            auto x = running[pick(running.size())];
            bool abort = pick(4) == 0;
            db.xacts[x] = abort ? server::state::aborted : server::state::committed;
            if (abort) {
              std::erase_if(db.entries, [&](auto& e) { return e.deleter == x; });
              for (auto& r : db.rows) {
                if (r.deleter == x) r.deleter.reset();
              }
            }
          }
          break;
        case 3: {  // a transaction deletes some committed rows (cleanup, or by hand)
          auto n = db.now();
          auto x = db.begin();
          server::entry e{x, std::nullopt, {}};
          for (auto& r : db.rows) {
            if (db.exists_in(r, n) && !r.deleter && pick(3) == 0) {
              r.deleter = x;
              e.stamps.push_back(r.stamp);
            }
          }
          std::sort(e.stamps.begin(), e.stamps.end());
          e.stamps.erase(std::unique(e.stamps.begin(), e.stamps.end()), e.stamps.end());
          if (!e.stamps.empty()) db.entries.push_back(e);
          if (pick(2) == 0) db.xacts[x] = server::state::committed;
          break;
        }
        case 4:
          if (pick(8) == 0) {  // TRUNCATE, committed at once
            auto n = db.now();
            auto x = db.begin();
            for (auto& r : db.rows) {
              if (db.exists_in(r, n) && !r.deleter) r.deleter = x;
            }
            db.entries.push_back({x, x, {}});
            db.xacts[x] = server::state::committed;
          }
          break;
        default:  // the instance polls a page or a few (stopped mid-backlog, or not)
          for (std::size_t pages = 0, n = 1 + pick(3); pages < n && read(); ++pages) {
          }
          break;
      }
    }
    // Everything ends; the instance catches up.
    for (auto x : db.running()) db.xacts[x] = server::state::committed;
    // (A drained backlog ends at its target; what committed later takes another read.)
    for (int round = 0; round < 3; ++round) {
      for (int pages = 0; pages < 1000 && read(); ++pages) {
      }
    }
    CHECK(duplicates == 0);
    auto final_now = db.now();
    std::set<std::uint64_t> deleters;
    for (const auto& r : db.rows) {
      if (!db.committed_in(r.stamp, final_now)) continue;  // aborted: never an event
      if (delivered.count(r.id)) continue;
      // Not delivered: it must have been deleted, and a Missed reported by a read that saw
      // the deletion.
      REQUIRE_MESSAGE(r.deleter, "row " << r.id << " skipped silently (never deleted)");
      REQUIRE(db.committed_in(*r.deleter, final_now));
      bool told = std::any_of(missed_at.begin(), missed_at.end(),
                              [&](const snapshot& s) { return s.sees(*r.deleter); });
      CHECK_MESSAGE(told, "row " << r.id << " deleted by " << *r.deleter << " without Missed");
    }
    for (const auto& e : db.entries) {
      if (db.committed_in(e.deleter, final_now)) deleters.insert(e.deleter);
    }
    // Each deletion is reported at most once.
    CHECK(missed <= deleters.size());
  }
}

TEST_CASE("plan_read: the Stamps range starts at prev's xmax, or after the last row if later") {
  auto idle = *parse_cursor("100:150:120,130");
  auto p = plan_read(idle);
  CHECK(p.from_stamp == 99);         // prev's in-progress ids are read from xmin on...
  CHECK(p.range_from_stamp == 149);  // ...and the rest from xmax on, not from xmin
  CHECK(p.range_from_id == std::numeric_limits<std::int64_t>::max());
  auto paging = *parse_cursor("100:150:120|100:400:|300:7");
  auto q = plan_read(paging);
  CHECK(q.paging);
  CHECK(q.from_stamp == 300);
  CHECK(q.from_id == 7);
  CHECK(q.range_from_stamp == 300);  // past xmax already: from the last row delivered
  CHECK(q.range_from_id == 7);
}

// Issue 12: statements name their schema, so that queues of every schema share connections and
// nothing depends on a (pooled) connection's search_path.
TEST_CASE("qualify() names the schema of every eventq table, view and function, nothing else") {
  using eventq::postgres::qualify;
  CHECK(qualify("SELECT Value FROM Properties WHERE Key = $1", "s1") ==
        "SELECT Value FROM s1.Properties WHERE Key = $1");
  CHECK(qualify("SELECT eventq_renew_instance($1), x FROM EventQueueInstances i JOIN "
                "EventQueue e ON true",
                "web") ==
        "SELECT web.eventq_renew_instance($1), x FROM web.EventQueueInstances i JOIN "
        "web.EventQueue e ON true");
  // Already qualified, a column reference through the table's name, literals (channel names,
  // property keys) and quoted names are left alone; so are columns and unknown functions.
  CHECK(qualify("SELECT EventQueue.Stamp FROM other.EventQueue WHERE k = 'EventQueue' AND "
                "n = 'eventq_x(' AND \"Properties\" IS NULL AND EventType = 'it''s Properties'",
                "s") ==
        "SELECT EventQueue.Stamp FROM other.EventQueue WHERE k = 'EventQueue' AND "
        "n = 'eventq_x(' AND \"Properties\" IS NULL AND EventType = 'it''s Properties'");
  CHECK(qualify("SELECT pg_notify('eventq_s', ''), EventQueueLagging FROM eventqueuestats", "s") ==
        "SELECT pg_notify('eventq_s', ''), EventQueueLagging FROM s.eventqueuestats");
  // Every statement the backend prepares names its schema wherever it names a table.
  for (const auto& st : eventq::postgres::statements_for("farm_a")) {
    INFO(st.name << ": " << st.sql);
    if (std::string(st.name) == "eventq_wake") continue;  // names no table
    CHECK(st.sql.find(" EventQueue ") == std::string::npos);
    CHECK(st.sql.find(" Properties ") == std::string::npos);
    CHECK(st.sql.find("farm_a.") != std::string::npos);
  }
}

TEST_CASE("pool_size and pool_mode: defaults, and a clear error for what cannot work") {
  using eventq::postgres::parse_url;
  auto plain = parse_url("postgresql://u@h/db?schema=s");
  CHECK(plain.pool_size == 1);
  CHECK_FALSE(plain.transaction_pooling);
  CHECK(plain.notify);
  auto pooled = parse_url("postgresql://u@h/db?pool_mode=transaction&pool_size=4");
  CHECK(pooled.transaction_pooling);
  CHECK(pooled.pool_size == 4);
  CHECK_FALSE(pooled.notify);  // LISTEN cannot work through transaction pooling
  CHECK(pooled.conninfo.find("pool_") == std::string::npos);  // not given to libpq
  auto keywords = parse_url("host=h dbname=db eventq_pool_mode=transaction eventq_pool_size=2");
  CHECK(keywords.transaction_pooling);
  CHECK(keywords.pool_size == 2);
  CHECK(keywords.conninfo.find("eventq_") == std::string::npos);
  auto code_of = [](const char* url) {
    try {
      parse_url(url);
    } catch (const eventq::error& e) {
      return e.code();
    }
    return eventq::errc{};
  };
  CHECK(code_of("postgresql://h/db?pool_mode=transaction&notify=on") == eventq::errc::invalid_url);
  CHECK(code_of("postgresql://h/db?pool_size=0") == eventq::errc::invalid_url);
  CHECK(code_of("postgresql://h/db?pool_size=65") == eventq::errc::invalid_url);
  CHECK(code_of("postgresql://h/db?pool_mode=statement") == eventq::errc::invalid_url);
  // Queues that differ in what their connections are set up with do not share them.
  CHECK(parse_url("postgresql://h/db?schema=a").pool_key() ==
        parse_url("postgresql://h/db?schema=b").pool_key());
  CHECK(parse_url("postgresql://h/db?statement_timeout=5").pool_key() !=
        parse_url("postgresql://h/db").pool_key());
}
