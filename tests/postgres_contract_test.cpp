// The storage contract, run on PostgreSQL (each subcase in a fresh schema).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "contract_suite.h"
#include "pg_support.h"
#include "session_contract.h"

namespace {

struct postgres_fixture : contract::backend_fixture {
  std::string fresh_url() override {
    return eventq::test::pg::url_with_schema(eventq::test::pg::fresh_schema());
  }
  void exec(const std::string& url, const std::string& sql) override {
    eventq::test::pg::exec(eventq::test::pg::schema_of(url), sql);
  }
};

}  // namespace

TEST_CASE("storage contract: postgresql") {
  postgres_fixture f;
  contract::run_contract_suite(f);
}

TEST_CASE("session contract: postgresql") {
  postgres_fixture f;
  contract::run_session_contract(f);
}
