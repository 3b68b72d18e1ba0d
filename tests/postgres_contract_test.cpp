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
  // The library's own statement, prepared on a connection of the test, run once (pqxx
  // prepares on first use), then explained with the same arguments.
  std::string filtered_read_plan(const std::string& url, const std::string& cursor) override {
    const auto schema = eventq::test::pg::schema_of(url);
    auto c = eventq::test::pg::connect(schema);
    eventq::postgres::prepare_statements(*c, schema);
    auto cur = eventq::postgres::parse_cursor(cursor);
    REQUIRE(cur);
    auto plan = eventq::postgres::plan_read(*cur);
    pqxx::nontransaction tx(*c);
    const std::vector<std::string> args = {plan.prev,
                                           plan.target,
                                           std::to_string(plan.from_stamp),
                                           std::to_string(plan.from_id),
                                           "500",
                                           plan.checked,
                                           std::to_string(plan.range_from_stamp),
                                           std::to_string(plan.range_from_id),
                                           "{page.changed}",
                                           "{media.}",
                                           "{media/}"};
    tx.exec_prepared("eventq_read_types", args[0], args[1], args[2],
                     static_cast<long long>(plan.from_id), 500LL, args[5], args[6],
                     static_cast<long long>(plan.range_from_id), args[8], args[9], args[10]);
    std::string call = "EXPLAIN EXECUTE eventq_read_types(";
    for (std::size_t i = 0; i < args.size(); ++i) call += (i ? ", " : "") + tx.quote(args[i]);
    std::string out;
    for (const auto& row : tx.exec(call + ")")) out += row[0].as<std::string>() + "\n";
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
