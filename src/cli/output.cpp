#include "output.h"

#include <cstdio>
#include <iomanip>
#include <sstream>

namespace eventq::cli {

namespace {

using std::chrono::system_clock;

double epoch_seconds(system_clock::time_point t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}

double age_seconds(system_clock::time_point t) {
  return std::chrono::duration<double>(system_clock::now() - t).count();
}

template <class T>
nlohmann::json or_null(const std::optional<T>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

nlohmann::json time_or_null(std::optional<system_clock::time_point> t) {
  return t ? nlohmann::json(iso_time(t)) : nlohmann::json(nullptr);
}

// Prometheus label values escape backslash, double quote and newline.
std::string label(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

void gauge(std::ostream& out, const char* name, const char* help) {
  out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " gauge\n";
}

std::string number(double v) {
  std::ostringstream s;
  s << std::setprecision(15) << v;
  return s.str();
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

std::string event_line(const event_record& e) {
  return std::to_string(e.id) + ' ' + iso_time(e.created) + ' ' + e.type + " from " + e.instance +
         " (" + std::string(to_string(e.mode)) + ") " + e.data;
}

nlohmann::json event_json(const event_record& e) {
  nlohmann::json data = nlohmann::json::parse(e.data, nullptr, false);
  if (data.is_discarded()) data = e.data;  // not JSON: shown as the text it is
  return {{"id", e.id},
          {"type", e.type},
          {"instance", e.instance},
          {"mode", to_string(e.mode)},
          {"created", iso_time(e.created)},
          {"data", data}};
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

void print_prometheus(std::ostream& out, const queue_summary& s,
                      const std::vector<instance_info>& instances) {
  gauge(out, "eventq_build_info", "Always 1; the eventq library's version is a label.");
  out << "eventq_build_info{version=\"" << label(version()) << "\"} 1\n";
  gauge(out, "eventq_schema_version", "Schema version of the eventq database.");
  out << "eventq_schema_version " << s.schema_version << '\n';
  gauge(out, "eventq_rows", "Rows in the EventQueue table.");
  out << "eventq_rows " << s.rows << '\n';
  gauge(out, "eventq_rows_by_type", "Rows in the EventQueue table per event type.");
  for (const auto& t : s.types) {
    out << "eventq_rows_by_type{type=\"" << label(t.type) << "\"} " << t.rows << '\n';
  }
  if (s.oldest) {
    gauge(out, "eventq_oldest_row_age_seconds", "Age of the oldest row (cleanup lagging?).");
    out << "eventq_oldest_row_age_seconds " << number(age_seconds(*s.oldest)) << '\n';
    gauge(out, "eventq_newest_row_age_seconds", "Age of the newest row (anything arriving?).");
    out << "eventq_newest_row_age_seconds " << number(age_seconds(*s.newest)) << '\n';
  }
  if (s.last_cleanup) {
    gauge(out, "eventq_last_cleanup_timestamp_seconds", "When the last cleanup completed.");
    out << "eventq_last_cleanup_timestamp_seconds " << number(epoch_seconds(*s.last_cleanup))
        << '\n';
  }
  gauge(out, "eventq_instance_live", "1 while the instance holds its lease.");
  for (const auto& i : instances) {
    out << "eventq_instance_live{instance=\"" << label(i.name) << "\"} " << (i.live ? 1 : 0)
        << '\n';
  }
  gauge(out, "eventq_instance_behind", "Rows after the instance's cursor.");
  for (const auto& i : instances) {
    if (i.behind) {
      out << "eventq_instance_behind{instance=\"" << label(i.name) << "\"} " << *i.behind << '\n';
    }
  }
  gauge(out, "eventq_instance_heartbeat_age_seconds", "Seconds since the latest lease renewal.");
  for (const auto& i : instances) {
    if (i.heartbeat_age_seconds) {
      out << "eventq_instance_heartbeat_age_seconds{instance=\"" << label(i.name) << "\"} "
          << number(*i.heartbeat_age_seconds) << '\n';
    }
  }
}

}  // namespace eventq::cli
