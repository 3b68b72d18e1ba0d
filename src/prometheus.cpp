// The Prometheus text exposition format (0.0.4) for a queue's counters and for the farm's status.
#include <iomanip>
#include <ostream>
#include <sstream>

#include "eventq/error.h"
#include "eventq/metrics.h"
#include "eventq/operations.h"
#include "eventq/status.h"

namespace eventq {

namespace {

using std::chrono::system_clock;

// Label values escape backslash, double quote and newline.
std::string escape_label(std::string_view v) {
  std::string out;
  out.reserve(v.size());
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

bool valid_label_name(std::string_view n) {
  if (n.empty() || (n[0] >= '0' && n[0] <= '9')) return false;
  for (char c : n) {
    bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok) return false;
  }
  return n.rfind("__", 0) != 0;
}

std::string number(double v) {
  std::ostringstream s;
  s << std::setprecision(15) << v;
  return s.str();
}

double age_seconds(system_clock::time_point t, system_clock::time_point now) {
  return std::chrono::duration<double>(now - t).count();
}

void family(std::ostream& out, const char* name, const char* type, const char* help) {
  out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n';
}

// `{a="x",b="y"}` or nothing.
std::string label_set(const metric_labels& labels) {
  if (labels.empty()) return {};
  std::string s = "{";
  for (const auto& [k, v] : labels) {
    if (s.size() > 1) s += ',';
    s += k + "=\"" + escape_label(v) + '"';
  }
  return s + '}';
}

std::string instance_label(const std::string& name) {
  return "{instance=\"" + escape_label(name) + "\"}";
}

}  // namespace

void write_prometheus(std::ostream& out, const metrics& m, const metric_labels& labels) {
  for (const auto& l : labels) {
    if (!valid_label_name(l.first)) {
      throw error(errc::invalid_argument,
                  "'" + l.first + "' is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)");
    }
  }
  auto ls = label_set(labels);
  struct counter {
    const char* name;
    std::uint64_t value;
    const char* help;
  };
  const counter counters[] = {
      {"eventq_raised_total", m.raised, "Events written by this queue."},
      {"eventq_delivered_total", m.delivered, "Events handed to at least one handler."},
      {"eventq_handler_errors_total", m.handler_errors, "Handler calls that threw."},
      {"eventq_undecodable_total", m.undecodable, "Rows whose JSON did not parse or decode."},
      {"eventq_unauthentic_total", m.unauthentic,
       "Rows refused: signature missing or wrong, or key unknown."},
      {"eventq_oversized_total", m.oversized, "Rows refused: payload over the cap."},
      {"eventq_unknown_types_total", m.unknown_types,
       "Rows meant for this instance that no handler wanted."},
      {"eventq_missed_total", m.missed, "Missed notifications raised."},
      {"eventq_polls_total", m.polls, "Poll cycles run."},
      {"eventq_poll_errors_total", m.poll_errors, "Poll cycles that failed."},
      {"eventq_cleanup_deleted_total", m.cleanup_deleted, "Rows deleted by this queue's cleanups."},
      {"eventq_cleanup_runs_total", m.cleanup_runs, "Scheduled cleanups this queue ran."},
      {"eventq_cleanup_errors_total", m.cleanup_errors, "Scheduled cleanups that failed."},
      {"eventq_lease_renewals_total", m.lease_renewals, "Successful instance lease renewals."},
      {"eventq_lease_renewal_failures_total", m.lease_renewal_failures,
       "Failed instance lease renewals."},
      {"eventq_cursor_writes_refused_total", m.cursor_writes_refused,
       "Cursor writes refused: another process took the instance name over."},
  };
  for (const auto& c : counters) {
    family(out, c.name, "counter", c.help);
    out << c.name << ls << ' ' << c.value << '\n';
  }
  family(out, "eventq_last_poll_duration_seconds", "gauge", "Wall time of the latest poll cycle.");
  out << "eventq_last_poll_duration_seconds" << ls << ' '
      << number(static_cast<double>(m.last_poll_duration.count()) / 1e6) << '\n';
}

void write_prometheus(std::ostream& out, const queue_summary& s,
                      const std::vector<instance_info>& instances) {
  auto now = system_clock::now();
  family(out, "eventq_build_info", "gauge", "Always 1; the eventq library's version is a label.");
  out << "eventq_build_info{version=\"" << escape_label(version()) << "\"} 1\n";
  family(out, "eventq_schema_version", "gauge", "Schema version of the eventq database.");
  out << "eventq_schema_version " << s.schema_version << '\n';
  family(out, "eventq_rows", "gauge", "Rows in the EventQueue table.");
  out << "eventq_rows " << s.rows << '\n';
  family(out, "eventq_rows_by_type", "gauge", "Rows in the EventQueue table per event type.");
  for (const auto& t : s.types) {
    out << "eventq_rows_by_type{type=\"" << escape_label(t.type) << "\"} " << t.rows << '\n';
  }
  if (s.oldest) {
    family(out, "eventq_oldest_row_age_seconds", "gauge",
           "Age of the oldest row (cleanup lagging?).");
    out << "eventq_oldest_row_age_seconds " << number(age_seconds(*s.oldest, now)) << '\n';
    family(out, "eventq_newest_row_age_seconds", "gauge",
           "Age of the newest row (anything arriving?).");
    out << "eventq_newest_row_age_seconds " << number(age_seconds(*s.newest, now)) << '\n';
  }
  if (s.last_cleanup) {
    family(out, "eventq_last_cleanup_timestamp_seconds", "gauge",
           "When the last cleanup completed.");
    out << "eventq_last_cleanup_timestamp_seconds "
        << number(std::chrono::duration<double>(s.last_cleanup->time_since_epoch()).count())
        << '\n';
  }
  family(out, "eventq_instance_live", "gauge", "1 while the instance holds its lease.");
  for (const auto& i : instances) {
    out << "eventq_instance_live" << instance_label(i.name) << ' ' << (i.live ? 1 : 0) << '\n';
  }
  family(out, "eventq_instance_behind", "gauge", "Rows after the instance's cursor.");
  for (const auto& i : instances) {
    if (i.behind)
      out << "eventq_instance_behind" << instance_label(i.name) << ' ' << *i.behind << '\n';
  }
  family(out, "eventq_instance_heartbeat_age_seconds", "gauge",
         "Seconds since the latest lease renewal.");
  for (const auto& i : instances) {
    if (i.heartbeat_age_seconds) {
      out << "eventq_instance_heartbeat_age_seconds" << instance_label(i.name) << ' '
          << number(*i.heartbeat_age_seconds) << '\n';
    }
  }
}

void write_prometheus(std::ostream& out, const farm_status& status) {
  write_prometheus(out, status.summary, status.instances);
  // Each instance's own counters, as it reported them at its latest lease renewal.
  struct reported {
    const char* name;
    std::uint64_t metrics::*field;
    const char* help;
  };
  const reported per_instance[] = {
      {"eventq_instance_delivered_total", &metrics::delivered,
       "Events the instance handed to a handler (reported at its lease renewal)."},
      {"eventq_instance_handler_errors_total", &metrics::handler_errors,
       "Handler calls that threw in the instance."},
      {"eventq_instance_unauthentic_total", &metrics::unauthentic,
       "Rows the instance refused: signature missing or wrong, key unknown."},
      {"eventq_instance_undecodable_total", &metrics::undecodable,
       "Rows the instance could not parse or decode."},
      {"eventq_instance_missed_total", &metrics::missed, "Missed notifications in the instance."},
      {"eventq_instance_raised_total", &metrics::raised, "Events the instance raised."},
  };
  for (const auto& r : per_instance) {
    family(out, r.name, "counter", r.help);
    for (const auto& i : status.instances) {
      if (i.counters)
        out << r.name << instance_label(i.name) << ' ' << (*i.counters).*r.field << '\n';
    }
  }
  std::size_t pending = 0;
  for (const auto& c : status.control) pending += c.done ? 0 : 1;
  family(out, "eventq_control_requests_pending", "gauge",
         "Operator requests (resync, replay) not yet carried out.");
  out << "eventq_control_requests_pending " << pending << '\n';
  family(out, "eventq_rejected_rows", "gauge",
         "Retained rows that instances refuse (bad signature, malformed...), up to the listed "
         "maximum.");
  out << "eventq_rejected_rows " << status.rejected.size() << '\n';
  if (status.failures_total) {
    family(out, "eventq_failures", "gauge",
           "Rows in EventQueueFailures: events that sessions' listeners gave up on.");
    out << "eventq_failures " << *status.failures_total << '\n';
  }
  if (!status.events_per_minute.empty()) {
    std::int64_t hour = 0;
    for (auto n : status.events_per_minute) hour += n;
    family(out, "eventq_events_last_hour", "gauge", "Rows created in the chart's window.");
    out << "eventq_events_last_hour " << hour << '\n';
  }
}

}  // namespace eventq
