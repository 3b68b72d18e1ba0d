#include "session_engine.h"

#include <algorithm>
#include <limits>
#include <unordered_set>

#include "eventq/error.h"

namespace eventq::detail {

namespace {
// The engine whose listener this thread is running now (remove_listener() and shut_down()
// from inside a handler must not wait for themselves).
thread_local const session_engine* t_running = nullptr;

std::string id_range(const std::vector<event_record>& rows) {
  if (rows.size() == 1) return "event " + std::to_string(rows.front().id);
  return "events " + std::to_string(rows.front().id) + ".." + std::to_string(rows.back().id);
}
}  // namespace

void validate_session_config(const session_config& cfg) {
  auto bad = [](const std::string& what) {
    throw error(errc::invalid_argument, "session_config::" + what);
  };
  if (cfg.threads > 256) bad("threads must be at most 256");
  if (cfg.batch_size < 1) bad("batch_size must be at least 1");
  if (cfg.max_pending < 1) bad("max_pending must be at least 1");
  if (cfg.batch_time.count() < 0) bad("batch_time must not be negative");
  if (cfg.retry_backoff.count() < 0) bad("retry_backoff must not be negative");
  if (cfg.max_retry_backoff < cfg.retry_backoff) {
    bad("max_retry_backoff must not be shorter than retry_backoff");
  }
  if (cfg.lag_alarm.count() < 0) bad("lag_alarm must not be negative");
  if (cfg.name.size() > 200) bad("name must be at most 200 bytes");
}

session_engine::session_engine(session_config cfg, log_function log, failure_sink failures)
    : m_cfg(std::move(cfg)), m_log(std::move(log)), m_sink(std::move(failures)) {}

session_engine::~session_engine() { shut_down(); }

void session_engine::start_threads() {
  std::lock_guard lk(m_mutex);
  for (unsigned i = 0; i < m_cfg.threads; ++i) m_threads.emplace_back([this] { worker(); });
}

void session_engine::set_progress_callback(std::function<void()> f) {
  std::lock_guard lk(m_mutex);
  m_on_progress = std::move(f);
}

void session_engine::progress() {
  std::function<void()> f;
  {
    std::lock_guard lk(m_mutex);
    if (m_closed) return;
    f = m_on_progress;
  }
  if (f) f();
}

void session_engine::log(log_level level, const std::string& msg) const {
  if (m_log) m_log(level, "session '" + m_cfg.name + "': " + msg);
}

std::uint64_t session_engine::add_listener(event_filter filter, batch_function fn) {
  if (!fn) throw error(errc::invalid_argument, "add_listener: the listener is empty");
  for (const auto& t : filter.types) {
    auto star = t.find('*');
    bool prefix = t.size() > 2 && t.ends_with(".*") && star == t.size() - 1;
    if (t.empty() || (star != std::string::npos && !prefix)) {
      throw error(errc::invalid_argument,
                  "add_listener: event_filter::types holds '" + t +
                      "'; give type names, or prefixes ending in \".*\" such as \"media.*\"");
    }
  }
  if (!filter.match.is_object()) {
    throw error(errc::invalid_argument,
                "add_listener: event_filter::match must be a JSON object (payloads are objects)");
  }
  std::lock_guard lk(m_mutex);
  if (m_closed) throw error(errc::closed, "add_listener: the session is closed");
  auto l = std::make_shared<listener>();
  l->id = m_next_id++;
  l->filter = std::move(filter);
  l->fn = std::move(fn);
  m_listeners.push_back(l);
  return l->id;
}

void session_engine::remove_listener(std::uint64_t id) noexcept {
  {
    std::unique_lock lk(m_mutex);
    auto it = std::find_if(m_listeners.begin(), m_listeners.end(),
                           [id](const listener_ptr& l) { return l->id == id; });
    if (it == m_listeners.end()) return;
    listener_ptr l = *it;
    m_listeners.erase(it);
    l->removed = true;
    m_pending -= l->pending.size();
    l->pending.clear();
    m_space_cv.notify_all();
    m_idle_cv.notify_all();
    if (t_running != this || l->runner != std::this_thread::get_id()) {
      m_idle_cv.wait(lk, [&] { return l->running.empty(); });
    }
  }
  progress();
}

bool session_engine::has_listener(std::uint64_t id) const noexcept {
  std::lock_guard lk(m_mutex);
  return !m_closed && std::any_of(m_listeners.begin(), m_listeners.end(),
                                  [id](const listener_ptr& l) { return l->id == id; });
}

bool session_engine::drain(std::chrono::milliseconds timeout) {
  std::unique_lock lk(m_mutex);
  return m_idle_cv.wait_for(lk, timeout, [this] { return m_pending == 0 || m_closed; });
}

void session_engine::attach_at(std::uint64_t position) {
  std::lock_guard lk(m_mutex);
  m_accepted = std::max(m_accepted, position);
}

bool session_engine::consume(std::span<const delivered_ptr> rows, std::uint64_t page_end,
                             const std::function<bool()>& stopping, std::vector<char>& taken) {
  std::optional<lag_info> lag;
  {
    std::unique_lock lk(m_mutex);
    const auto now = clock::now();
    bool waited = false;
    for (std::size_t i = 0; i < rows.size() && !m_closed; ++i) {
      const auto& ev = rows[i];
      auto listeners = m_listeners;  // may change while this waits for room
      for (const auto& l : listeners) {
        if (l->removed || !l->filter.matches(ev->row.type, ev->data)) continue;
        while (m_pending >= m_cfg.max_pending && !m_closed) {
          if (stopping()) return false;
          if (!waited) ++m_backpressure;
          waited = true;
          if (m_cfg.threads == 0) {  // nobody else runs the listeners: make room here
            if (auto d = due_listener(clock::now(), true)) {
              run_one(lk, d);
              continue;
            }
          }
          m_work_cv.notify_all();
          m_space_cv.wait_for(lk, std::chrono::milliseconds(50));
        }
        if (m_closed || l->removed) continue;
        l->pending.push_back(item{ev, now});
        ++m_pending;
        taken[i] = 1;
      }
    }
    m_accepted = std::max(m_accepted, page_end);
    m_work_cv.notify_all();
    check_lag(lag);
  }
  report_lag(lag);
  return true;
}

std::uint64_t session_engine::finished() const {
  std::lock_guard lk(m_mutex);
  return finished_locked();
}

std::uint64_t session_engine::finished_locked() const {
  if (m_closed) return std::numeric_limits<std::uint64_t>::max();
  std::uint64_t low = m_accepted;
  for (const auto& l : m_listeners) {
    if (!l->running.empty()) {
      low = std::min(low, l->running.front().event->position - 1);
    } else if (!l->pending.empty()) {
      low = std::min(low, l->pending.front().event->position - 1);
    }
  }
  return low;
}

std::optional<std::chrono::steady_clock::time_point> session_engine::run_due() {
  std::optional<lag_info> lag;
  std::optional<clock::time_point> due;
  {
    std::unique_lock lk(m_mutex);
    if (m_closed) return std::nullopt;
    if (m_cfg.threads == 0) {
      while (auto l = due_listener(clock::now(), false)) run_one(lk, l);
      due = next_due();
    }
    check_lag(lag);
  }
  report_lag(lag);
  return due;
}

std::optional<std::vector<std::string>> session_engine::wanted_types() const {
  std::lock_guard lk(m_mutex);
  std::vector<std::string> out;
  for (const auto& l : m_listeners) {
    if (l->filter.types.empty()) return std::nullopt;
    out.insert(out.end(), l->filter.types.begin(), l->filter.types.end());
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

bool session_engine::closed() const {
  std::lock_guard lk(m_mutex);
  return m_closed;
}

void session_engine::shut_down() noexcept {
  std::vector<std::thread> threads;
  {
    std::unique_lock lk(m_mutex);
    m_closed = true;
    m_on_progress = nullptr;
    for (auto& l : m_listeners) {
      l->removed = true;
      m_pending -= l->pending.size();
      l->pending.clear();
    }
    m_listeners.clear();
    threads.swap(m_threads);
  }
  m_work_cv.notify_all();
  m_space_cv.notify_all();
  m_idle_cv.notify_all();
  for (auto& t : threads) {
    if (t.get_id() == std::this_thread::get_id()) {
      t.detach();  // the last owner let go on a handler thread: it ends by itself
    } else if (t.joinable()) {
      t.join();
    }
  }
  // A batch may still run on the poller thread (threads == 0) or a detached handler thread.
  if (t_running != this) {
    std::unique_lock lk(m_mutex);
    m_idle_cv.wait(lk, [this] { return m_pending == 0; });
  }
}

session_engine::listener_ptr session_engine::due_listener(clock::time_point now, bool force) {
  const std::size_t n = m_listeners.size();
  for (std::size_t k = 0; k < n; ++k) {
    std::size_t i = (m_rr + k) % n;
    const auto& l = m_listeners[i];
    if (!l->running.empty() || l->pending.empty()) continue;
    if (force || l->pending.size() >= m_cfg.batch_size || m_cfg.batch_time.count() == 0 ||
        now - l->pending.front().enqueued >= m_cfg.batch_time) {
      m_rr = i + 1;
      return l;
    }
  }
  return nullptr;
}

std::optional<std::chrono::steady_clock::time_point> session_engine::next_due() const {
  std::optional<clock::time_point> due;
  for (const auto& l : m_listeners) {
    if (!l->running.empty() || l->pending.empty()) continue;
    auto t = l->pending.size() >= m_cfg.batch_size ? clock::time_point::min()
                                                   : l->pending.front().enqueued + m_cfg.batch_time;
    if (!due || t < *due) due = t;
  }
  return due;
}

void session_engine::worker() {
  std::unique_lock lk(m_mutex);
  while (!m_closed) {
    if (auto l = due_listener(clock::now(), false)) {
      run_one(lk, l);
      continue;
    }
    std::optional<lag_info> lag;
    if (check_lag(lag)) {
      lk.unlock();
      report_lag(lag);
      lk.lock();
      continue;
    }
    auto due = next_due();
    if (m_pending > 0 && m_cfg.lag_alarm.count() > 0) {  // look at the lag now and then
      auto look = clock::now() +
                  std::clamp<std::chrono::milliseconds>(
                      m_cfg.lag_alarm / 4, std::chrono::milliseconds(10), std::chrono::seconds(1));
      due = due ? std::min(*due, look) : look;
    }
    if (due) {
      m_work_cv.wait_until(lk, *due);
    } else {
      m_work_cv.wait(lk);
    }
  }
}

void session_engine::run_one(std::unique_lock<std::mutex>& lk, const listener_ptr& l) {
  const std::size_t n = std::min(m_cfg.batch_size, l->pending.size());
  l->running.assign(std::make_move_iterator(l->pending.begin()),
                    std::make_move_iterator(l->pending.begin() + static_cast<std::ptrdiff_t>(n)));
  l->pending.erase(l->pending.begin(), l->pending.begin() + static_cast<std::ptrdiff_t>(n));
  l->runner = std::this_thread::get_id();
  lk.unlock();
  // Only this thread touches l->running until it is cleared below (others read it locked).
  auto prev = std::exchange(t_running, this);
  auto failures = call(*l, l->running);
  t_running = prev;
  if (!failures.empty() && m_failures) m_sink(std::move(failures));
  lk.lock();
  m_pending -= l->running.size();
  l->running.clear();
  l->runner = {};
  m_idle_cv.notify_all();
  m_space_cv.notify_all();
  m_work_cv.notify_all();  // this listener may have another batch due for another thread
  lk.unlock();
  progress();
  lk.lock();
}

// Coalescing: of equal (type, payload) events, the latest is kept, in row order.
std::vector<const delivered_event*> session_engine::pick(const std::vector<item>& batch) {
  std::vector<const delivered_event*> picks;
  picks.reserve(batch.size());
  if (!m_cfg.coalesce || batch.size() < 2) {
    for (const auto& it : batch) picks.push_back(it.event.get());
    return picks;
  }
  std::unordered_set<std::string> seen;
  for (auto it = batch.rbegin(); it != batch.rend(); ++it) {
    const auto& r = it->event->row;
    if (seen.insert(r.type + '\0' + it->event->data.dump()).second) {
      picks.push_back(it->event.get());
    } else {
      ++m_coalesced;
    }
  }
  std::reverse(picks.begin(), picks.end());
  return picks;
}

std::vector<failure_record> session_engine::call(const listener& l,
                                                 const std::vector<item>& batch) {
  std::vector<event_record> rows;
  std::vector<nlohmann::json> payloads;
  for (const auto* e : pick(batch)) {
    rows.push_back(e->row);
    payloads.push_back(e->data);
  }
  std::vector<std::pair<std::size_t, std::string>> undecodable;
  batch_input in{rows, payloads, &undecodable};
  std::string err;
  int attempts = 0;
  auto backoff = m_cfg.retry_backoff;
  for (;;) {
    ++attempts;
    undecodable.clear();
    try {
      l.fn(in);
      err.clear();
      break;
    } catch (const std::exception& e) {
      err = *e.what() ? e.what() : "(an exception with an empty message)";
    } catch (...) {
      err = "an exception that is not a std::exception";
    }
    if (attempts > static_cast<int>(m_cfg.retries)) break;
    std::unique_lock lk(m_mutex);
    if (m_work_cv.wait_for(lk, backoff, [&] { return m_closed || l.removed; })) {
      return {};  // nobody wants these events any more: not failures
    }
    ++m_retries;
    backoff = std::min(backoff * 2, m_cfg.max_retry_backoff);
  }
  return outcome(rows, undecodable, err, attempts);
}

// Counts a batch's outcome and returns what to record in EventQueueFailures: the events a
// typed listener could not decode, and, if the listener gave up (`err`), all the others.
std::vector<failure_record> session_engine::outcome(
    const std::vector<event_record>& rows,
    const std::vector<std::pair<std::size_t, std::string>>& undecodable, const std::string& err,
    int attempts) {
  std::vector<failure_record> out;
  auto record = [&](std::size_t i, const std::string& why, int tries) {
    failure_record f;
    f.session = m_cfg.name;
    f.event_id = rows[i].id;
    f.event_type = rows[i].type;
    f.error = why;
    f.attempts = tries;
    f.failed_at = std::chrono::system_clock::now();
    out.push_back(std::move(f));
  };
  std::vector<char> bad(rows.size(), 0);
  for (const auto& [i, why] : undecodable) {
    if (i >= rows.size() || bad[i]) continue;
    bad[i] = 1;
    record(i, "cannot decode: " + why, 1);
  }
  if (!out.empty()) {
    m_undecodable += out.size();
    log(log_level::error, std::to_string(out.size()) +
                              " event(s) could not be decoded for a typed listener and were "
                              "recorded as failed; the first, " +
                              std::to_string(out.front().event_id) + ": " + out.front().error);
  }
  if (err.empty()) {
    ++m_batches;
    m_delivered += rows.size() - out.size();
  } else {
    for (std::size_t i = 0; i < rows.size(); ++i) {
      if (!bad[i]) record(i, err, attempts);
    }
    log(log_level::error, "a listener failed on " + id_range(rows) + " after " +
                              std::to_string(attempts) +
                              " attempt(s), recorded in EventQueueFailures: " + err);
  }
  m_failures += out.size();
  return out;
}

bool session_engine::check_lag(std::optional<lag_info>& out) {
  if (m_cfg.lag_alarm.count() <= 0) return false;
  const delivered_event* oldest = nullptr;
  for (const auto& l : m_listeners) {
    const delivered_event* e = !l->running.empty()   ? l->running.front().event.get()
                               : !l->pending.empty() ? l->pending.front().event.get()
                                                     : nullptr;
    if (e && (!oldest || e->position < oldest->position)) oldest = e;
  }
  if (!oldest) {
    m_lagging = false;
    return false;
  }
  auto age = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::system_clock::now() - oldest->row.created);
  if (age <= m_cfg.lag_alarm) {
    m_lagging = false;
    return false;
  }
  if (m_lagging) return false;
  m_lagging = true;
  ++m_lag_alarms;
  out = lag_info{m_cfg.name, m_pending, oldest->row.id, age};
  return true;
}

void session_engine::report_lag(const std::optional<lag_info>& info) {
  if (!info) return;
  log(log_level::warning, "lagging: " + std::to_string(info->pending) +
                              " event(s) pending, the oldest (" + std::to_string(info->oldest_id) +
                              ") raised " + std::to_string(info->oldest_age.count()) +
                              " ms ago (session_config::lag_alarm)");
  if (!m_cfg.on_lagging) return;
  try {
    m_cfg.on_lagging(*info);
  } catch (const std::exception& e) {
    log(log_level::error, std::string("on_lagging threw: ") + e.what());
  } catch (...) {
    log(log_level::error, "on_lagging threw an exception that is not a std::exception");
  }
}

session_metrics session_engine::stats() const {
  session_metrics m;
  {
    std::lock_guard lk(m_mutex);
    m.pending = m_pending;
    std::optional<std::chrono::system_clock::time_point> oldest;
    for (const auto& l : m_listeners) {
      const item* it = !l->running.empty()   ? &l->running.front()
                       : !l->pending.empty() ? &l->pending.front()
                                             : nullptr;
      if (it && (!oldest || it->event->row.created < *oldest)) oldest = it->event->row.created;
    }
    if (oldest) {
      m.oldest_pending_age = std::max(std::chrono::milliseconds(0),
                                      std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::system_clock::now() - *oldest));
    }
  }
  m.delivered = m_delivered;
  m.batches = m_batches;
  m.coalesced = m_coalesced;
  m.retries = m_retries;
  m.failures = m_failures;
  m.undecodable = m_undecodable;
  m.lag_alarms = m_lag_alarms;
  m.backpressure_waits = m_backpressure;
  return m;
}

}  // namespace eventq::detail
