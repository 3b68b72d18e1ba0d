// The farm at a glance (eventq/status.h): one read of the registry, the lag, the rows per type
// and per minute, the refused rows and the handler failures, for `eventq serve`.
#include "eventq/status.h"

#include <mutex>

#include "eventq/operations.h"
#include "util.h"

namespace eventq {

std::vector<std::int64_t> storage::events_per_minute(std::chrono::system_clock::time_point, int) {
  return {};
}

bool storage::renew_instance(std::string_view name, std::string_view token,
                             std::chrono::milliseconds lease, const metrics&) {
  return renew_instance(name, token, lease);
}

std::int64_t storage::add_control_request(const control_request&) {
  throw error(errc::invalid_argument, "the '" + std::string(backend_name()) +
                                          "' storage backend does not take operator requests");
}

std::vector<control_request> storage::take_control_requests(std::string_view, std::string_view) {
  return {};
}

void storage::complete_control_request(std::int64_t, std::string_view) {}

std::vector<control_request> storage::control_requests(std::size_t) { return {}; }

std::string storage::cursor_before(std::chrono::system_clock::time_point) {
  throw error(errc::invalid_argument,
              "the '" + std::string(backend_name()) + "' storage backend cannot position a replay");
}

std::string_view to_string(control_action a) noexcept {
  return a == control_action::replay ? "replay" : "resync";
}

namespace detail {

namespace {

// The fields of metrics by name, for the Counters column.
template <class F>
void each_counter(F&& f, auto& m) {
  f("raised", m.raised);
  f("delivered", m.delivered);
  f("handler_errors", m.handler_errors);
  f("undecodable", m.undecodable);
  f("unauthentic", m.unauthentic);
  f("oversized", m.oversized);
  f("unknown_types", m.unknown_types);
  f("missed", m.missed);
  f("polls", m.polls);
  f("poll_errors", m.poll_errors);
  f("cleanup_deleted", m.cleanup_deleted);
  f("cleanup_runs", m.cleanup_runs);
  f("cleanup_errors", m.cleanup_errors);
  f("lease_renewals", m.lease_renewals);
  f("lease_renewal_failures", m.lease_renewal_failures);
  f("cursor_writes_refused", m.cursor_writes_refused);
}

}  // namespace

std::string not_live_message(std::string_view instance) {
  return "instance '" + std::string(instance) +
         "' is not live (no running process holds its lease; see 'eventq instances'): "
         "nothing was requested";
}

std::string metrics_to_text(const metrics& m) {
  nlohmann::json j = nlohmann::json::object();
  each_counter([&](const char* k, const std::uint64_t& v) { j[k] = v; }, m);
  j["last_poll_us"] = m.last_poll_duration.count();
  return j.dump();
}

std::optional<metrics> metrics_from_text(std::string_view text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object()) return std::nullopt;
  metrics m;
  bool ok = true;
  each_counter(
      [&](const char* k, std::uint64_t& v) {
        auto it = j.find(k);
        if (it != j.end() && it->is_number_unsigned()) {
          v = it->get<std::uint64_t>();
        } else if (it != j.end()) {
          ok = false;
        }
      },
      m);
  auto p = j.find("last_poll_us");
  if (p != j.end() && p->is_number_integer()) {
    m.last_poll_duration = std::chrono::microseconds(p->get<std::int64_t>());
  }
  if (!ok) return std::nullopt;
  return m;
}

}  // namespace detail

namespace {

using std::chrono::system_clock;

// "2026-01-31T12:00:00.123Z"
std::string iso(system_clock::time_point t) {
  auto s = detail::format_utc(t);
  if (s.size() > 10) s[10] = 'T';
  return s + 'Z';
}

nlohmann::json iso_or_null(const std::optional<system_clock::time_point>& t) {
  return t ? nlohmann::json(iso(*t)) : nlohmann::json(nullptr);
}

template <class T>
nlohmann::json or_null(const std::optional<T>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

}  // namespace

struct status_reader::impl {
  std::unique_ptr<storage> store;
  options opts;
  status_settings settings;
  std::mutex mutex;  // one read at a time; guards the cached refused rows
  std::vector<rejected_row> rejected;
  std::optional<std::chrono::steady_clock::time_point> rejected_at;
  system_clock::time_point rejected_checked;
};

status_reader::status_reader(std::string_view url, const options& opts,
                             const status_settings& settings)
    : m_impl(std::make_unique<impl>()) {
  if (settings.chart_minutes < 0) {
    throw error(errc::invalid_argument, "status_settings::chart_minutes must not be negative");
  }
  m_impl->store = open_storage(url, opts);
  m_impl->opts = opts;
  m_impl->settings = settings;
}

status_reader::~status_reader() = default;

farm_status status_reader::read() {
  std::lock_guard lk(m_impl->mutex);
  auto& s = *m_impl->store;
  farm_status out;
  out.backend = std::string(s.backend_name());
  out.eventq_version = std::string(version());
  out.taken = system_clock::now();
  out.summary = s.summary();
  out.instances = s.instances();
  auto minutes = m_impl->settings.chart_minutes;
  out.chart_from = std::chrono::floor<std::chrono::minutes>(out.taken) + std::chrono::minutes(1) -
                   std::chrono::minutes(minutes);
  out.events_per_minute = s.events_per_minute(out.chart_from, minutes);
  out.control = s.control_requests(m_impl->settings.recent_requests);
  try {
    out.failures = s.failures(m_impl->settings.max_failures, "");
    out.failures_total = s.failure_count();
  } catch (const error& e) {
    // The storage defaults: a backend that keeps no failure records has none to show.
    if (e.code() != errc::invalid_argument) throw;
  }
  auto now = std::chrono::steady_clock::now();
  if (!m_impl->rejected_at || now - *m_impl->rejected_at >= m_impl->settings.rejected_refresh) {
    m_impl->rejected = find_rejected_rows(s, m_impl->opts, m_impl->settings.max_rejected);
    m_impl->rejected_at = now;
    m_impl->rejected_checked = out.taken;
  }
  out.rejected = m_impl->rejected;
  out.rejected_checked = m_impl->rejected_checked;
  return out;
}

nlohmann::json status_json(const farm_status& st) {
  const auto& s = st.summary;
  nlohmann::json types = nlohmann::json::array();
  for (const auto& t : s.types) {
    types.push_back(
        {{"type", t.type}, {"rows", t.rows}, {"oldest", iso(t.oldest)}, {"newest", iso(t.newest)}});
  }
  nlohmann::json instances = nlohmann::json::array();
  for (const auto& i : st.instances) {
    instances.push_back(
        {{"name", i.name},
         {"live", i.live},
         {"behind", or_null(i.behind)},
         {"heartbeat_age_seconds", or_null(i.heartbeat_age_seconds)},
         {"host", i.host},
         {"pid", i.pid},
         {"version", i.version},
         {"started", iso_or_null(i.started)},
         {"heartbeat", iso_or_null(i.heartbeat)},
         {"lease_until", iso_or_null(i.lease_until)},
         {"cursor", or_null(i.cursor)},
         {"counters", i.counters ? nlohmann::json::parse(detail::metrics_to_text(*i.counters))
                                 : nlohmann::json(nullptr)}});
  }
  nlohmann::json control = nlohmann::json::array();
  for (const auto& c : st.control) {
    control.push_back({{"id", c.id},
                       {"instance", c.instance},
                       {"action", to_string(c.action)},
                       {"since", iso_or_null(c.since)},
                       {"requested_by", c.requested_by},
                       {"requested", iso(c.requested)},
                       {"picked_up", iso_or_null(c.picked_up)},
                       {"done", iso_or_null(c.done)},
                       {"result", c.result}});
  }
  nlohmann::json failures = nlohmann::json::array();
  for (const auto& f : st.failures) {
    failures.push_back({{"id", f.id},
                        {"failed_at", iso(f.failed_at)},
                        {"instance", f.instance},
                        {"session", f.session},
                        {"event_id", f.event_id},
                        {"type", f.event_type},
                        {"attempts", f.attempts},
                        {"error", f.error}});
  }
  nlohmann::json rejected = nlohmann::json::array();
  for (const auto& r : st.rejected) {
    rejected.push_back({{"id", r.row.id},
                        {"type", r.row.type},
                        {"instance", r.row.instance},
                        {"created", iso(r.row.created)},
                        {"verdict", r.verdict},
                        {"reason", r.reason}});
  }
  return {{"eventq_version", st.eventq_version},
          {"backend", st.backend},
          {"taken", iso(st.taken)},
          {"schema_version", s.schema_version},
          {"rows", s.rows},
          {"oldest", iso_or_null(s.oldest)},
          {"newest", iso_or_null(s.newest)},
          {"min_id", or_null(s.min_id)},
          {"max_id", or_null(s.max_id)},
          {"types", types},
          {"last_cleanup", iso_or_null(s.last_cleanup)},
          {"last_cleanup_result", s.last_cleanup_result},
          {"instances", instances},
          {"events_per_minute", {{"from", iso(st.chart_from)}, {"counts", st.events_per_minute}}},
          {"rejected", rejected},
          {"rejected_checked", iso(st.rejected_checked)},
          {"control_requests", control},
          {"failures", failures},
          {"failures_total", or_null(st.failures_total)}};
}

}  // namespace eventq
