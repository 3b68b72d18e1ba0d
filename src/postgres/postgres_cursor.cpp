// The PostgreSQL cursor's pure parts (see postgres_cursor.h).
#include "postgres/postgres_cursor.h"

#include <algorithm>
#include <charconv>

#include "util.h"

namespace eventq::postgres {

bool snapshot::sees(std::uint64_t xid) const {
  if (xid < xmin) return true;
  if (xid >= xmax) return false;
  return !std::binary_search(xip.begin(), xip.end(), xid);
}

std::string snapshot::text() const {
  std::string s = std::to_string(xmin) + ":" + std::to_string(xmax) + ":";
  for (std::size_t i = 0; i < xip.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(xip[i]);
  }
  return s;
}

std::optional<std::uint64_t> parse_u64(std::string_view s) {
  std::uint64_t v = 0;
  if (s.empty() || s.size() > 20) return std::nullopt;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<snapshot> parse_snapshot(std::string_view s) {
  auto c1 = s.find(':');
  if (c1 == std::string_view::npos) return std::nullopt;
  auto c2 = s.find(':', c1 + 1);
  if (c2 == std::string_view::npos) return std::nullopt;
  snapshot snap;
  auto xmin = parse_u64(s.substr(0, c1));
  auto xmax = parse_u64(s.substr(c1 + 1, c2 - c1 - 1));
  if (!xmin || !xmax || *xmin == 0 || *xmin > *xmax) return std::nullopt;
  snap.xmin = *xmin;
  snap.xmax = *xmax;
  std::string_view rest = s.substr(c2 + 1);
  while (!rest.empty()) {
    auto comma = rest.find(',');
    auto x = parse_u64(rest.substr(0, comma));
    if (!x || *x < snap.xmin || *x >= snap.xmax || (!snap.xip.empty() && *x <= snap.xip.back())) {
      return std::nullopt;
    }
    snap.xip.push_back(*x);
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 1);
    if (rest.empty()) return std::nullopt;
  }
  return snap;
}

std::optional<parsed_cursor> parse_cursor(std::string_view s) {
  parsed_cursor c;
  auto bar = s.find('|');
  if (bar == std::string_view::npos) {
    auto snap = parse_snapshot(s);
    if (!snap) return std::nullopt;
    c.prev = std::move(*snap);
    return c;
  }
  auto bar2 = s.find('|', bar + 1);
  if (bar2 == std::string_view::npos) return std::nullopt;
  auto prev = parse_snapshot(s.substr(0, bar));
  auto target = parse_snapshot(s.substr(bar + 1, bar2 - bar - 1));
  std::string_view last = s.substr(bar2 + 1);
  auto colon = last.find(':');
  if (!prev || !target || colon == std::string_view::npos) return std::nullopt;
  auto stamp = parse_u64(last.substr(0, colon));
  auto id = detail::parse_int64(last.substr(colon + 1));
  if (!stamp || !id || target->xmax < prev->xmax) return std::nullopt;
  c.prev = std::move(*prev);
  c.target = std::move(*target);
  c.last_stamp = *stamp;
  c.last_id = *id;
  return c;
}

}  // namespace eventq::postgres
