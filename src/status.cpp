// The farm at a glance (eventq/status.h): one read of the registry, the lag, the rows per type
// and per minute, and the refused rows, for `eventq serve`.
#include "eventq/status.h"

#include <mutex>

#include "eventq/operations.h"
#include "util.h"

namespace eventq {

std::vector<std::int64_t> storage::events_per_minute(std::chrono::system_clock::time_point, int) {
  return {};
}

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
    instances.push_back({{"name", i.name},
                         {"live", i.live},
                         {"behind", or_null(i.behind)},
                         {"heartbeat_age_seconds", or_null(i.heartbeat_age_seconds)},
                         {"host", i.host},
                         {"pid", i.pid},
                         {"version", i.version},
                         {"started", iso_or_null(i.started)},
                         {"heartbeat", iso_or_null(i.heartbeat)},
                         {"lease_until", iso_or_null(i.lease_until)},
                         {"cursor", or_null(i.cursor)}});
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
          {"rejected_checked", iso(st.rejected_checked)}};
}

}  // namespace eventq
