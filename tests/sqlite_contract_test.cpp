// The storage contract, run on SQLite.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "contract_suite.h"
#include "session_contract.h"
#include "sqlite/sqlite_storage.h"
#include "type_filter_contract.h"

namespace {

struct sqlite_fixture : contract::type_filter_fixture {
  eventq::test::temp_dir dir;
  int n = 0;
  std::string fresh_url() override { return "sqlite:" + dir.file("db" + std::to_string(++n)); }
  void exec(const std::string& url, const std::string& sql) override {
    eventq::test::sqlite_exec(url.substr(7), sql);
  }
  std::string filtered_read_plan(const std::string& url, const std::string&) override {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open_v2(url.substr(7).c_str(), &db, SQLITE_OPEN_READONLY, nullptr) ==
            SQLITE_OK);
    const auto sql =
        "EXPLAIN QUERY PLAN " + eventq::sqlite::sqlite_storage::filtered_page_sql(1, 1);
    sqlite3_stmt* st = nullptr;
    std::string plan;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK) {
      while (sqlite3_step(st) == SQLITE_ROW) {
        plan += reinterpret_cast<const char*>(sqlite3_column_text(st, 3));
        plan += '\n';
      }
    } else {
      plan = sqlite3_errmsg(db);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return plan;
  }
};

}  // namespace

TEST_CASE("storage contract: sqlite") {
  sqlite_fixture f;
  contract::run_contract_suite(f);
}

TEST_CASE("session contract: sqlite") {
  sqlite_fixture f;
  contract::run_session_contract(f);
}

TEST_CASE("type filter contract: sqlite") {
  sqlite_fixture f;
  contract::run_type_filter_contract(f);
}
