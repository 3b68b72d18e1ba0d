#include "status_page.h"

#include <algorithm>
#include <cstdio>

#include "output.h"

namespace eventq::cli {

namespace {

constexpr const char* k_style = R"(
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}
.meta{color:#666}table{border-collapse:collapse;background:#fff}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.n{text-align:right;font-variant-numeric:tabular-nums}
.live{color:#070;font-weight:600}.dead{color:#999}.warn{background:#fff3cd}
.bad{background:#f8d7da}.empty{color:#888;font-style:italic}
svg{background:#fff;border:1px solid #ddd}
)";

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// 1234567 -> "1,234,567" (built forwards: GCC 12 warns -Wrestrict on inserts at -O2)
std::string grouped(std::int64_t n) {
  auto digits = std::to_string(n < 0 ? -n : n);
  std::string out;
  if (n < 0) out.push_back('-');
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

void instances_table(std::string& h, const farm_status& st) {
  h += "<h2>Instances</h2>\n";
  if (st.instances.empty()) {
    h += "<p class=\"empty\">No instance has registered.</p>\n";
    return;
  }
  h += "<table id=\"instances\"><tr><th>instance</th><th>live</th><th>events behind</th>"
       "<th>heartbeat age</th><th>host</th><th>pid</th><th>version</th><th>started</th>"
       "<th>delivered</th><th>handler errors</th><th>refused</th><th>missed</th></tr>\n";
  for (const auto& i : st.instances) {
    bool behind = i.live && i.behind && *i.behind > 0;
    h += "<tr class=\"";
    h += !i.live ? "dead" : behind ? "warn" : "";
    h += "\" data-instance=\"" + html_escape(i.name) + "\"><td>" + html_escape(i.name) + "</td>";
    h += i.live ? "<td class=\"live\">live</td>" : "<td>not live</td>";
    h += "<td class=\"n behind\">" + (i.behind ? grouped(*i.behind) : std::string("-")) + "</td>";
    h += "<td class=\"n\">" +
         (i.heartbeat_age_seconds ? fixed(*i.heartbeat_age_seconds, 1) + " s" : std::string("-")) +
         "</td>";
    h += "<td>" + html_escape(i.host.empty() ? "-" : i.host) + "</td><td class=\"n\">" +
         std::to_string(i.pid) + "</td><td>" + html_escape(i.version.empty() ? "-" : i.version) +
         "</td><td>" + iso_time(i.started) + "</td>";
    if (i.counters) {
      const auto& c = *i.counters;
      h += "<td class=\"n delivered\">" + grouped(static_cast<std::int64_t>(c.delivered)) +
           "</td><td class=\"n\">" + grouped(static_cast<std::int64_t>(c.handler_errors)) +
           "</td><td class=\"n\">" +
           grouped(static_cast<std::int64_t>(c.unauthentic + c.oversized + c.undecodable)) +
           "</td><td class=\"n\">" + grouped(static_cast<std::int64_t>(c.missed)) + "</td>";
    } else {
      h += "<td colspan=\"4\" class=\"empty\">not reported</td>";
    }
    h += "</tr>\n";
  }
  h += "</table>\n";
}

// Bars of events per minute, oldest on the left; an inline SVG, no script.
void chart(std::string& h, const farm_status& st) {
  const auto& c = st.events_per_minute;
  h += "<h2>Events per minute, last " + std::to_string(c.size()) + " minutes</h2>\n";
  if (c.empty()) {
    h += "<p class=\"empty\">This backend does not count events per minute.</p>\n";
    return;
  }
  const int width = 720, height = 140, top = 14, bottom = 18;
  std::int64_t max = std::max<std::int64_t>(1, *std::max_element(c.begin(), c.end()));
  std::int64_t total = 0;
  for (auto n : c) total += n;
  double bar = static_cast<double>(width) / static_cast<double>(c.size());
  h += "<svg id=\"chart\" role=\"img\" width=\"" + std::to_string(width) + "\" height=\"" +
       std::to_string(height) + "\" viewBox=\"0 0 " + std::to_string(width) + ' ' +
       std::to_string(height) + "\" xmlns=\"http://www.w3.org/2000/svg\"><title>" + grouped(total) +
       " events in the last " + std::to_string(c.size()) + " minutes</title>\n";
  const int plot = height - top - bottom;
  for (std::size_t i = 0; i < c.size(); ++i) {
    double hgt = static_cast<double>(c[i]) * plot / static_cast<double>(max);
    auto minute = st.chart_from + std::chrono::minutes(static_cast<long>(i));
    h += "<rect x=\"" + fixed(static_cast<double>(i) * bar + 1, 1) + "\" y=\"" +
         fixed(top + plot - hgt, 1) + "\" width=\"" + fixed(bar - 2, 1) + "\" height=\"" +
         fixed(hgt, 1) + "\" fill=\"#4a7bd0\"><title>" + iso_time(minute).substr(11, 5) + ": " +
         grouped(c[i]) + "</title></rect>\n";
  }
  h += "<line x1=\"0\" y1=\"" + std::to_string(top + plot) + "\" x2=\"" + std::to_string(width) +
       "\" y2=\"" + std::to_string(top + plot) + "\" stroke=\"#999\"/>\n";
  h += "<text x=\"4\" y=\"11\" font-size=\"11\" fill=\"#555\">max " + grouped(max) +
       "/min</text>\n<text x=\"4\" y=\"" + std::to_string(height - 4) +
       "\" font-size=\"11\" fill=\"#555\">" + std::to_string(c.size()) +
       " min ago</text>\n<text x=\"" + std::to_string(width - 4) + "\" y=\"" +
       std::to_string(height - 4) +
       "\" font-size=\"11\" fill=\"#555\" text-anchor=\"end\">now</text>\n</svg>\n";
}

void types_table(std::string& h, const farm_status& st) {
  h += "<h2>Rows per event type</h2>\n";
  if (st.summary.types.empty()) {
    h += "<p class=\"empty\">The table is empty.</p>\n";
    return;
  }
  h += "<table id=\"types\"><tr><th>event type</th><th>rows</th><th>oldest</th><th>newest</th>"
       "</tr>\n";
  for (const auto& t : st.summary.types) {
    h += "<tr><td>" + html_escape(t.type) + "</td><td class=\"n\">" + grouped(t.rows) +
         "</td><td>" + iso_time(t.oldest) + "</td><td>" + iso_time(t.newest) + "</td></tr>\n";
  }
  h += "</table>\n";
}

void control_table(std::string& h, const farm_status& st) {
  h += "<h2>Operator requests</h2>\n";
  if (st.control.empty()) {
    h += "<p class=\"empty\">None (eventq resync --instance NAME, eventq replay --instance NAME "
         "--since 30m).</p>\n";
    return;
  }
  h += "<table id=\"control\"><tr><th>id</th><th>instance</th><th>action</th><th>requested</th>"
       "<th>by</th><th>state</th><th>result</th></tr>\n";
  for (const auto& c : st.control) {
    std::string action(to_string(c.action));
    if (c.since) action += " since " + iso_time(c.since);
    std::string state = c.done        ? "done " + iso_time(c.done)
                        : c.picked_up ? "taken " + iso_time(c.picked_up)
                                      : std::string("pending");
    h += std::string("<tr") + (c.done ? "" : " class=\"warn\"") + "><td class=\"n\">" +
         std::to_string(c.id) + "</td><td>" + html_escape(c.instance) + "</td><td>" +
         html_escape(action) + "</td><td>" + iso_time(c.requested) + "</td><td>" +
         html_escape(c.requested_by) + "</td><td>" + state + "</td><td>" + html_escape(c.result) +
         "</td></tr>\n";
  }
  h += "</table>\n";
}

void failures_table(std::string& h, const farm_status& st) {
  h += "<h2>Handler failures</h2>\n";
  if (st.failures.empty()) {
    h += st.failures_total ? "<p class=\"empty\" id=\"failures-none\">None: no session's listener "
                             "gave up on an event.</p>\n"
                           : "<p class=\"empty\">This backend keeps no failure records.</p>\n";
    return;
  }
  if (st.failures_total) {
    h += "<p class=\"meta\" id=\"failures-total\">" + grouped(*st.failures_total) +
         " in EventQueueFailures, the latest " + std::to_string(st.failures.size()) +
         " below (eventq failures lists more)</p>\n";
  }
  h += "<table id=\"failures\"><tr><th>failed</th><th>instance</th><th>session</th>"
       "<th>event id</th><th>event type</th><th>attempts</th><th>error</th></tr>\n";
  for (const auto& f : st.failures) {
    h += "<tr class=\"bad\"><td>" + iso_time(f.failed_at) + "</td><td>" + html_escape(f.instance) +
         "</td><td>" + html_escape(f.session) + "</td><td class=\"n\">" +
         std::to_string(f.event_id) + "</td><td>" + html_escape(f.event_type) +
         "</td><td class=\"n\">" + std::to_string(f.attempts) + "</td><td>" + html_escape(f.error) +
         "</td></tr>\n";
  }
  h += "</table>\n";
}

void rejected_table(std::string& h, const farm_status& st) {
  h += "<h2>Rows that instances refuse</h2>\n<p class=\"meta\">checked " +
       iso_time(st.rejected_checked) + "</p>\n";
  if (st.rejected.empty()) {
    h += "<p class=\"empty\" id=\"rejected-none\">None: every retained row is accepted.</p>\n";
    return;
  }
  h += "<table id=\"rejected\"><tr><th>id</th><th>verdict</th><th>event type</th>"
       "<th>raised by</th><th>created</th><th>reason</th></tr>\n";
  for (const auto& r : st.rejected) {
    h += "<tr class=\"bad\"><td class=\"n\">" + std::to_string(r.row.id) + "</td><td>" +
         html_escape(r.verdict) + "</td><td>" + html_escape(r.row.type) + "</td><td>" +
         html_escape(r.row.instance) + "</td><td>" + iso_time(r.row.created) + "</td><td>" +
         html_escape(r.reason) + "</td></tr>\n";
  }
  h += "</table>\n";
}

}  // namespace

std::string html_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string render_status_page(const farm_status& st, int refresh_seconds) {
  const auto& s = st.summary;
  std::string h;
  h.reserve(16384 + st.instances.size() * 400);
  h += "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n";
  if (refresh_seconds > 0) {
    h += "<meta http-equiv=\"refresh\" content=\"" + std::to_string(refresh_seconds) + "\">\n";
  }
  h += "<title>eventq status</title><style>";
  h += k_style;
  h += "</style></head><body>\n<h1>eventq status</h1>\n<p class=\"meta\">" +
       html_escape(st.backend) + ", schema version " + std::to_string(s.schema_version) +
       ", eventq " + html_escape(st.eventq_version) + " &middot; read " + iso_time(st.taken) +
       (refresh_seconds > 0 ? " &middot; refreshes every " + std::to_string(refresh_seconds) + " s"
                            : std::string()) +
       "</p>\n";
  std::size_t live = 0;
  for (const auto& i : st.instances) live += i.live ? 1 : 0;
  h += "<p id=\"summary\"><b>" + grouped(s.rows) + "</b> rows (oldest " + iso_time(s.oldest) +
       ", newest " + iso_time(s.newest) + ") &middot; <b>" + std::to_string(live) + "</b> of " +
       std::to_string(st.instances.size()) + " instances live &middot; last cleanup " +
       iso_time(s.last_cleanup) +
       (s.last_cleanup_result.empty() ? std::string() : ": " + html_escape(s.last_cleanup_result)) +
       "</p>\n";
  instances_table(h, st);
  chart(h, st);
  types_table(h, st);
  control_table(h, st);
  failures_table(h, st);
  rejected_table(h, st);
  h += "</body></html>\n";
  return h;
}

}  // namespace eventq::cli
