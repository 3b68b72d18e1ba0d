// The storage contract, run on SQLite.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "contract_suite.h"
#include "session_contract.h"

namespace {

struct sqlite_fixture : contract::backend_fixture {
  eventq::test::temp_dir dir;
  int n = 0;
  std::string fresh_url() override { return "sqlite:" + dir.file("db" + std::to_string(++n)); }
  void exec(const std::string& url, const std::string& sql) override {
    eventq::test::sqlite_exec(url.substr(7), sql);
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
