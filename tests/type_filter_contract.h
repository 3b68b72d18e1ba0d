// The database-side type filter (issue 13, Deliver 3), run on every backend: when every
// listener of an instance names its types, the poll asks the storage for those types only; the
// cursor still passes the rest, and rows deleted among them still give one Missed.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cctype>

#include "contract_suite.h"

namespace contract {

/// What a backend's type-filter test supplies beyond backend_fixture.
struct type_filter_fixture : backend_fixture {
  /// The query plan of the library's filtered read of one exact type and one prefix from
  /// `cursor` (EXPLAIN QUERY PLAN on SQLite, EXPLAIN on PostgreSQL), as text.
  virtual std::string filtered_read_plan(const std::string& url, const std::string& cursor) = 0;
};

inline std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

inline void run_type_filter_contract(type_filter_fixture& f) {
  using namespace eventq;
  using eventq::test::test_options;
  using eventq::test::wait_until;
  const std::string url = f.fresh_url();
  const bool sqlite = url.rfind("sqlite:", 0) == 0;
  const std::vector<std::string> wanted_types = {"page.changed", "media.*"};

  // Raises n rows of a type nobody here wants, in one batch.
  auto raise_other = [](queue& q, int n) {
    batch b;
    for (int i = 0; i < n; ++i) b.add_raw("other.type", {{"i", i}}, raise_mode::globally);
    return q.raise(b);
  };

  SUBCASE("the storage returns only the types asked for and its cursor passes the rest") {
    queue a(url, test_options("a"));
    auto st = open_storage(url, test_options("tools"));
    const auto from = st->head_cursor();
    raise_other(a, 500);
    auto page = a.raise_raw("page.changed", {{"page", 1}, {"by", "a"}}, raise_mode::globally);
    raise_other(a, 250);
    auto media = a.raise_raw("media.x", nlohmann::json::object(), raise_mode::globally);
    a.raise_raw("mediax", nlohmann::json::object(), raise_mode::globally);  // no prefix match
    a.raise_raw("media", nlohmann::json::object(), raise_mode::globally);
    raise_other(a, 250);
    auto r = st->read(from, 500, type_filter::of(wanted_types, "b"));
    std::vector<std::int64_t> ids;
    for (const auto& e : r.events) ids.push_back(e.id);
    CHECK(ids == std::vector<std::int64_t>{page, media});  // not the 1,002 others
    CHECK(!r.missed);
    CHECK(!r.more);
    // The cursor passed the 1,000 unwanted rows after the last wanted one too.
    auto rest = st->read(r.next_cursor, 500);
    CHECK(rest.events.empty());
    CHECK(!rest.missed);
    // SQLite counts the rows it left out that are addressed to the reader ("b": every row,
    // raised globally by "a"); PostgreSQL neither reads nor counts them.
    CHECK(r.skipped == (sqlite ? 1002u : 0u));
    // The reader "a" raised them all globally: none of them is addressed to it.
    CHECK(st->read(from, 500, type_filter::of(wanted_types, "a")).skipped == 0);
  }

  SUBCASE("a filtered storage pages by the wanted rows, in order, and skips nothing") {
    queue a(url, test_options("a"));
    auto st = open_storage(url, test_options("tools"));
    std::string at = st->head_cursor();
    std::vector<std::int64_t> expected;
    for (int i = 0; i < 25; ++i) {
      raise_other(a, 40);
      expected.push_back(a.raise_raw(i % 2 ? "media.y" : "page.changed", {{"page", i}, {"by", "a"}},
                                     raise_mode::globally));
    }
    raise_other(a, 40);
    std::vector<std::int64_t> got;
    int pages = 0;
    read_result r;
    do {
      r = st->read(at, 10, type_filter::of(wanted_types, "b"));
      CHECK(!r.missed);
      for (const auto& e : r.events) got.push_back(e.id);
      at = r.next_cursor;
    } while (r.more && ++pages < 100);
    CHECK(got == expected);
    CHECK(pages <= 4);  // 25 wanted rows in pages of 10, not 1,025 rows
    CHECK(st->read(at, 500).events.empty());
  }

  SUBCASE("with only typed listeners the poll does not read other types; the cursor passes them") {
    queue a(url, test_options("a"));
    queue b(url, test_options("b"));
    std::vector<int> pages;
    auto sub = b.subscribe<page_changed>([&](const page_changed& e) { pages.push_back(e.page); });
    session_config cfg;
    cfg.threads = 0;  // listeners run in poll_once()
    auto s = b.create_session(cfg);
    std::vector<std::string> media;
    event_filter mf;
    mf.types = {"media.*"};
    auto reg = s.add_listener(mf, [&](std::span<const event_record> batch) {
      for (const auto& e : batch) media.push_back(e.type);
    });
    b.poll_once();
    raise_other(a, 1000);
    // An unsigned row of another type (a hand-written INSERT): an unfiltered poll reads it and
    // refuses it (unauthentic); a filtered one never reads it.
    f.exec(url,
           "INSERT INTO EventQueue (EventType, InstanceData, InstanceName, RaiseLocally, "
           "RaiseGlobally) VALUES ('other.type', '{}', 'x', " +
               std::string(sqlite ? "1, 1" : "true, true") + ")");
    a.raise(page_changed{7, "a"}, raise_mode::globally);
    a.raise_raw("media.x", nlohmann::json::object(), raise_mode::globally);
    a.raise_raw("mediax", nlohmann::json::object(), raise_mode::globally);
    raise_other(a, 10);
    b.poll_once();
    CHECK(pages == std::vector<int>{7});
    CHECK(wait_until([&] {
      b.poll_once();
      return media.size() >= 1;
    }));
    CHECK(media == std::vector<std::string>{"media.x"});
    CHECK(b.stats().unauthentic == 0);  // the unsigned row was not read
    CHECK(b.stats().missed == 0);
    // The cursor is past everything: an unfiltered read from it finds nothing.
    auto st = open_storage(url, test_options("tools"));
    CHECK(wait_until([&] { return st->read(b.cursor(), 500).events.empty(); }));
    // A listener that wants every type turns the filter off: the next rows are all read.
    auto all = b.subscribe_all([](const event_record&, const nlohmann::json&) {});
    f.exec(url,
           "INSERT INTO EventQueue (EventType, InstanceData, InstanceName, RaiseLocally, "
           "RaiseGlobally) VALUES ('other.type', '{}', 'x', " +
               std::string(sqlite ? "1, 1" : "true, true") + ")");
    b.poll_once();
    CHECK(b.stats().unauthentic == 1);
  }

  SUBCASE("rows deleted between the cursor and the head give one Missed, wanted or not") {
    for (bool wanted : {false, true}) {
      CAPTURE(wanted);
      queue a(url, test_options("a"));
      queue b(url, test_options("b" + std::to_string(wanted)));
      std::vector<int> pages;
      auto sub = b.subscribe<page_changed>([&](const page_changed& e) { pages.push_back(e.page); });
      int missed = 0;
      auto m = b.on_missed([&](const missed_info&) { ++missed; });
      b.poll_once();
      auto others = raise_other(a, 100);
      auto doomed = a.raise(page_changed{1, "a"}, raise_mode::globally);
      raise_other(a, 100);
      a.raise(page_changed{2, "a"}, raise_mode::globally);
      f.exec(url, "DELETE FROM EventQueue WHERE Id = " +
                      std::to_string(wanted ? doomed : others.at(50)));
      b.poll_once();
      b.poll_once();
      CHECK(missed == 1);
      CHECK(pages == (wanted ? std::vector<int>{2} : std::vector<int>{1, 2}));
    }
  }

  SUBCASE("the filtered read is served by the index EventQueue_Type") {
    queue a(url, test_options("a"));
    auto st = open_storage(url, test_options("tools"));
    const auto from = st->head_cursor();
    for (int i = 0; i < 5; ++i) raise_other(a, 1000);
    a.raise_raw("page.changed", {{"page", 1}, {"by", "a"}}, raise_mode::globally);
    if (!sqlite) f.exec(url, "ANALYZE EventQueue");
    auto plan = lower(f.filtered_read_plan(url, from));
    MESSAGE(plan);
    // One index range for the exact type, one for the prefix.
    std::size_t uses = 0;
    for (auto at = plan.find("eventqueue_type"); at != std::string::npos;
         at = plan.find("eventqueue_type", at + 1)) {
      ++uses;
    }
    CHECK(uses >= 2);
  }
}

}  // namespace contract
