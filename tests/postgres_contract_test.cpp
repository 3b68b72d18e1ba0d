// The storage contract, run on PostgreSQL (each subcase in a fresh schema).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "contract_suite.h"
#include "pg_support.h"
#include "postgres/postgres_cursor.h"
#include "postgres/postgres_statements.h"
#include "session_contract.h"
#include "type_filter_contract.h"

namespace {

struct postgres_fixture : contract::type_filter_fixture {
  std::string fresh_url() override {
    return eventq::test::pg::url_with_schema(eventq::test::pg::fresh_schema());
  }
  void exec(const std::string& url, const std::string& sql) override {
    eventq::test::pg::exec(eventq::test::pg::schema_of(url), sql);
  }
  // The library's own statement, run as the library runs it (unnamed, so planned for these
  // arguments, on a connection set up like the library's), explained.
  std::string filtered_read_plan(const std::string& url, const std::string& cursor) override {
    const auto schema = eventq::test::pg::schema_of(url);
    auto c = eventq::test::pg::connect(schema);
    c->set_variable("enable_bitmapscan", "off");
    std::string sql;
    for (const auto& st : eventq::postgres::statements_for(schema)) {
      if (std::string(st.name) == "eventq_read_types") sql = st.sql;
    }
    REQUIRE(!sql.empty());
    auto cur = eventq::postgres::parse_cursor(cursor);
    REQUIRE(cur);
    auto plan = eventq::postgres::plan_read(*cur);
    pqxx::nontransaction tx(*c);
    std::string out;
    for (const auto& row : tx.exec_params(
             "EXPLAIN " + sql, plan.prev, plan.target, std::to_string(plan.from_stamp),
             static_cast<long long>(plan.from_id), 500LL, plan.checked,
             std::to_string(plan.range_from_stamp), static_cast<long long>(plan.range_from_id),
             std::string("{page.changed}"), std::string("{media.}"), std::string("{media/}"))) {
      out += row[0].as<std::string>() + "\n";
    }
    return out;
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

TEST_CASE("type filter contract: postgresql") {
  postgres_fixture f;
  contract::run_type_filter_contract(f);
}
