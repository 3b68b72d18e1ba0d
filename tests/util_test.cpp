#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "../src/backends.h"
#include "../src/util.h"

using namespace eventq::detail;

TEST_CASE("format_utc and parse_utc round-trip at millisecond precision") {
  using namespace std::chrono;
  auto t = sys_days{2026y / 11 / 21} + hours{18} + minutes{5} + seconds{9} + milliseconds{42};
  CHECK(format_utc(t) == "2026-11-21 18:05:09.042");
  CHECK(parse_utc("2026-11-21 18:05:09.042") == t);
  CHECK(parse_utc("2026-11-21T18:05:09.042Z") == t);
  CHECK(parse_utc("2026-11-21 18:05:09") == t - milliseconds{42});
  CHECK_FALSE(parse_utc("2026-13-21 18:05:09"));
  CHECK_FALSE(parse_utc("yesterday"));
  CHECK_FALSE(parse_utc("2026-11-21 18:05:09.042 trailing"));
}

TEST_CASE("parse_int64 accepts whole decimal numbers only") {
  CHECK(parse_int64("0") == 0);
  CHECK(parse_int64("9223372036854775807") == INT64_MAX);
  CHECK_FALSE(parse_int64("9223372036854775808"));
  CHECK_FALSE(parse_int64(""));
  CHECK_FALSE(parse_int64("12a"));
  CHECK_FALSE(parse_int64(" 1"));
}

TEST_CASE("cursor keys follow Sitecore's layout") {
  CHECK(cursor_key("web-01") == "EQStamp_web-01");
}

TEST_CASE("passwords never appear in messages") {
  CHECK(redact_url("postgresql://app:s3cret@db:5432/x") == "postgresql://app:***@db:5432/x");
  CHECK(redact_url("host=db password=s3cret dbname=x") == "host=db password=*** dbname=x");
  CHECK(redact_url("sqlite:/tmp/a.db") == "sqlite:/tmp/a.db");
}
