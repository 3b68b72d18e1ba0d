#include "util.h"

#include <charconv>
#include <cstdio>
#include <ctime>

namespace eventq::detail {

std::string format_utc(std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  auto ms = time_point_cast<milliseconds>(t);
  auto days = floor<std::chrono::days>(ms);
  year_month_day ymd{days};
  hh_mm_ss hms{ms - days};
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02u %02d:%02d:%02d.%03d", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<int>(hms.hours().count()), static_cast<int>(hms.minutes().count()),
                static_cast<int>(hms.seconds().count()),
                static_cast<int>(hms.subseconds().count()));
  return buf;
}

namespace {
bool read_digits(std::string_view s, std::size_t pos, std::size_t n, int& out) {
  if (pos + n > s.size()) return false;
  out = 0;
  for (std::size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    out = out * 10 + (s[i] - '0');
  }
  return true;
}
}  // namespace

std::optional<std::chrono::system_clock::time_point> parse_utc(std::string_view s) {
  using namespace std::chrono;
  int y, mo, d, h, mi, sec;
  if (s.size() < 19 || s[4] != '-' || s[7] != '-' || (s[10] != ' ' && s[10] != 'T') ||
      s[13] != ':' || s[16] != ':')
    return std::nullopt;
  if (!read_digits(s, 0, 4, y) || !read_digits(s, 5, 2, mo) || !read_digits(s, 8, 2, d) ||
      !read_digits(s, 11, 2, h) || !read_digits(s, 14, 2, mi) || !read_digits(s, 17, 2, sec))
    return std::nullopt;
  year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)}, day{static_cast<unsigned>(d)}};
  if (!ymd.ok() || h > 23 || mi > 59 || sec > 60) return std::nullopt;
  // system_clock counts nanoseconds in 64 bits: years outside about 1678..2262 overflow it.
  if (y < 1678 || y > 2261) return std::nullopt;
  microseconds frac{0};
  std::size_t pos = 19;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    std::int64_t scale = 100000;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      frac += microseconds((s[pos] - '0') * scale);
      scale /= 10;
      ++pos;
    }
  }
  if (pos < s.size() && s[pos] == 'Z') ++pos;
  if (pos != s.size()) return std::nullopt;
  return system_clock::time_point{sys_days{ymd}.time_since_epoch() + hours{h} + minutes{mi} +
                                  seconds{sec} + frac};
}

std::string prefix_end(std::string_view prefix) {
  if (prefix.empty() || static_cast<unsigned char>(prefix.back()) >= 0x7f) return {};
  std::string end(prefix);
  end.back() = static_cast<char>(end.back() + 1);
  return end;
}

std::optional<std::int64_t> parse_int64(std::string_view text) {
  std::int64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc{} || p != text.data() + text.size() || text.empty()) return std::nullopt;
  return v;
}

std::string cursor_key(std::string_view instance) { return "EQStamp_" + std::string(instance); }

std::string name_in_use_message(std::string_view name, std::string_view host, std::int64_t pid,
                                std::string_view heartbeat, std::string_view lease_until,
                                double expires_in_s) {
  char wait[32];
  std::snprintf(wait, sizeof wait, "%.1f", expires_in_s < 0 ? 0.0 : expires_in_s);
  return "instance name '" + std::string(name) + "' is held by a live instance (host '" +
         std::string(host) + "', pid " + std::to_string(pid) + ", last heartbeat " +
         std::string(heartbeat) + " UTC, lease until " + std::string(lease_until) +
         " UTC, which expires in " + wait +
         " s): two processes under one name would each see only part of the events. Give "
         "every running instance its own options::instance_name; if that process is gone, open "
         "again in " +
         wait +
         " s, when its lease expires (a process of this host that no longer exists is taken "
         "over at once; see `eventq instances`)";
}

}  // namespace eventq::detail
