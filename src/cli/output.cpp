#include "output.h"

#include <cstdio>
#include <iomanip>
#include <sstream>

namespace eventq::cli {

namespace {

using std::chrono::system_clock;

template <class T>
nlohmann::json or_null(const std::optional<T>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

nlohmann::json time_or_null(std::optional<system_clock::time_point> t) {
  return t ? nlohmann::json(iso_time(t)) : nlohmann::json(nullptr);
}

}  // namespace

std::string iso_time(std::optional<system_clock::time_point> t) {
  if (!t) return "-";
  using namespace std::chrono;
  auto ms = time_point_cast<milliseconds>(*t);
  auto days = floor<std::chrono::days>(ms);
  year_month_day ymd{days};
  hh_mm_ss hms{ms - days};
  char buf[40];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02d.%03dZ",
                static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()),
                static_cast<unsigned>(ymd.day()), static_cast<int>(hms.hours().count()),
                static_cast<int>(hms.minutes().count()), static_cast<int>(hms.seconds().count()),
                static_cast<int>(hms.subseconds().count()));
  return buf;
}

namespace {

// The length of the UTF-8 sequence at s[i] (0: not UTF-8), rejecting overlong forms,
// surrogates and code points past U+10FFFF.
std::size_t utf8_length(std::string_view s, std::size_t i) {
  auto c = static_cast<unsigned char>(s[i]);
  std::size_t len = c >= 0xc2 && c <= 0xdf   ? 2
                    : c >= 0xe0 && c <= 0xef ? 3
                    : c >= 0xf0 && c <= 0xf4 ? 4
                                             : 0;
  if (len == 0 || s.size() - i < len) return 0;
  std::uint32_t cp = c & (len == 2 ? 0x1f : len == 3 ? 0x0f : 0x07);
  for (std::size_t k = 1; k < len; ++k) {
    auto cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (cc & 0x3f);
  }
  if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
      (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp <= 0x9f)) {  // C1 controls too
    return 0;
  }
  return len;
}

}  // namespace

std::string escaped(std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      if (c == '\\') out += '\\';
      out += static_cast<char>(c);
      ++i;
      continue;
    }
    if (auto len = c >= 0x80 ? utf8_length(s, i) : 0; len > 0) {
      out.append(s.substr(i, len));
      i += len;
      continue;
    }
    out += "\\x";
    out += hex[c >> 4];
    out += hex[c & 15];
    ++i;
  }
  return out;
}

std::string event_line(const event_record& e, const std::optional<rejected_row>& refusal) {
  std::string line;
  if (refusal) line = "REFUSED (" + refusal->verdict + ": " + escaped(refusal->reason) + ") ";
  return line + std::to_string(e.id) + ' ' + iso_time(e.created) + ' ' + escaped(e.type) +
         " from " + escaped(e.instance) + " (" + std::string(to_string(e.mode)) + ") " +
         escaped(e.data);
}

nlohmann::json event_json(const event_record& e, const std::optional<rejected_row>& refusal) {
  nlohmann::json data = nlohmann::json::parse(e.data, nullptr, false);
  // Not JSON: shown as the text it is (dump with error_handler_t::replace: bytes that are not
  // UTF-8 become U+FFFD).
  if (data.is_discarded()) data = e.data;
  nlohmann::json out = {{"id", e.id},
                        {"type", e.type},
                        {"instance", e.instance},
                        {"mode", to_string(e.mode)},
                        {"created", iso_time(e.created)},
                        {"data", data},
                        {"verdict", refusal ? refusal->verdict : "ok"}};
  if (refusal) out["reason"] = refusal->reason;
  return out;
}

nlohmann::json instance_json(const instance_info& i) {
  return {{"name", i.name},
          {"live", i.live},
          {"host", i.host},
          {"pid", i.pid},
          {"version", i.version},
          {"started", time_or_null(i.started)},
          {"heartbeat", time_or_null(i.heartbeat)},
          {"heartbeat_age_seconds", or_null(i.heartbeat_age_seconds)},
          {"lease_until", time_or_null(i.lease_until)},
          {"cursor", or_null(i.cursor)},
          {"behind", or_null(i.behind)}};
}

nlohmann::json stats_json(std::string_view backend, const queue_summary& s,
                          const std::vector<instance_info>& instances) {
  nlohmann::json types = nlohmann::json::array();
  for (const auto& t : s.types) {
    types.push_back({{"type", t.type},
                     {"rows", t.rows},
                     {"oldest", iso_time(t.oldest)},
                     {"newest", iso_time(t.newest)}});
  }
  nlohmann::json list = nlohmann::json::array();
  for (const auto& i : instances) list.push_back(instance_json(i));
  return {{"eventq_version", std::string(version())},
          {"backend", backend},
          {"schema_version", s.schema_version},
          {"rows", s.rows},
          {"oldest", time_or_null(s.oldest)},
          {"newest", time_or_null(s.newest)},
          {"min_id", or_null(s.min_id)},
          {"max_id", or_null(s.max_id)},
          {"types", types},
          {"instances", list},
          {"last_cleanup", time_or_null(s.last_cleanup)},
          {"last_cleanup_result", s.last_cleanup_result}};
}

void print_instances_table(std::ostream& out, const std::vector<instance_info>& instances) {
  out << std::left << std::setw(24) << "INSTANCE" << std::setw(6) << "LIVE" << std::setw(10)
      << "BEHIND" << std::setw(15) << "HEARTBEAT AGE" << std::setw(20) << "HOST" << std::setw(9)
      << "PID" << std::setw(10) << "VERSION"
      << "CURSOR\n";
  for (const auto& i : instances) {
    char age[32] = "-";
    if (i.heartbeat_age_seconds) std::snprintf(age, sizeof age, "%.1f s", *i.heartbeat_age_seconds);
    out << std::setw(24) << i.name << std::setw(6) << (i.live ? "yes" : "no") << std::setw(10)
        << (i.behind ? std::to_string(*i.behind) : "-") << std::setw(15) << age << std::setw(20)
        << (i.host.empty() ? "-" : i.host) << std::setw(9) << i.pid << std::setw(10)
        << (i.version.empty() ? "-" : i.version) << i.cursor.value_or("-") << '\n';
  }
  if (instances.empty()) out << "(no instances registered)\n";
}

void print_stats_table(std::ostream& out, std::string_view backend, const queue_summary& s,
                       const std::vector<instance_info>& instances) {
  out << "eventq         " << version() << '\n'
      << "backend        " << backend << " (schema version " << s.schema_version << ")\n"
      << "rows           " << s.rows << '\n'
      << "oldest         " << iso_time(s.oldest) << '\n'
      << "newest         " << iso_time(s.newest) << '\n'
      << "ids            "
      << (s.min_id ? std::to_string(*s.min_id) + ".." + std::to_string(*s.max_id) : "-") << '\n'
      << "last cleanup   " << iso_time(s.last_cleanup)
      << (s.last_cleanup_result.empty() ? "" : "  " + s.last_cleanup_result) << "\n\n";
  out << std::left << std::setw(32) << "TYPE" << std::setw(10) << "ROWS" << std::setw(26)
      << "OLDEST"
      << "NEWEST\n";
  for (const auto& t : s.types) {
    out << std::setw(32) << t.type << std::setw(10) << t.rows << std::setw(26) << iso_time(t.oldest)
        << iso_time(t.newest) << '\n';
  }
  if (s.types.empty()) out << "(no events)\n";
  out << '\n';
  print_instances_table(out, instances);
}

}  // namespace eventq::cli
