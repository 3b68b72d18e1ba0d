#include "event_handlers.h"

#include <algorithm>

namespace eventq::detail {

namespace {

// The handler entries whose calls are in progress on this thread (nested when a handler
// raises): remove() from inside a handler must not wait for that very call.
thread_local std::vector<const void*> t_running;

std::size_t running_here(const void* e) {
  return static_cast<std::size_t>(std::count(t_running.begin(), t_running.end(), e));
}

}  // namespace

std::uint64_t event_handlers::add_raised(notification_handler handler) {
  if (!handler) throw error(errc::invalid_argument, "on_raised: the handler is empty");
  auto e = std::make_shared<entry>();
  e->raised = std::move(handler);
  std::lock_guard lk(m_mutex);
  e->id = m_next_id++;
  auto t = std::make_shared<table>(*m_table);
  t->raised.push_back(e);
  m_table = std::move(t);
  return e->id;
}

std::uint64_t event_handlers::add_missed(missed_handler handler) {
  if (!handler) throw error(errc::invalid_argument, "on_missed: the handler is empty");
  auto e = std::make_shared<entry>();
  e->missed = std::move(handler);
  std::lock_guard lk(m_mutex);
  e->id = m_next_id++;
  auto t = std::make_shared<table>(*m_table);
  t->missed.push_back(e);
  m_table = std::move(t);
  return e->id;
}

void event_handlers::remove(std::uint64_t id) noexcept {
  std::unique_lock lk(m_mutex);
  auto t = std::make_shared<table>(*m_table);
  entry_ptr gone;
  for (auto* v : {&t->raised, &t->missed}) {
    auto it = std::find_if(v->begin(), v->end(), [id](const entry_ptr& e) { return e->id == id; });
    if (it != v->end()) {
      gone = *it;
      v->erase(it);
      break;
    }
  }
  if (!gone) return;
  gone->active = false;
  m_table = std::move(t);
  // Calls on other threads finish before the caller may destroy what the handler uses.
  auto mine = running_here(gone.get());
  m_cv.wait(lk, [&] { return static_cast<std::size_t>(gone->running) <= mine; });
}

bool event_handlers::contains(std::uint64_t id) const noexcept {
  auto t = snapshot();
  auto has = [id](const std::vector<entry_ptr>& v) {
    return std::any_of(v.begin(), v.end(), [id](const entry_ptr& e) { return e->id == id; });
  };
  return has(t->raised) || has(t->missed);
}

std::shared_ptr<const event_handlers::table> event_handlers::snapshot() const {
  std::lock_guard lk(m_mutex);
  return m_table;
}

bool event_handlers::enter(entry& e) {
  t_running.push_back(&e);  // first: should it throw bad_alloc, nothing has changed
  std::lock_guard lk(m_mutex);
  if (!e.active) {
    t_running.pop_back();
    return false;
  }
  ++e.running;
  return true;
}

void event_handlers::leave(entry& e) {
  {
    std::lock_guard lk(m_mutex);
    --e.running;
  }
  t_running.pop_back();  // calls nest, so this call is the last one entered on this thread
  m_cv.notify_all();
}

void event_handlers::log(log_level level, const std::string& msg) const {
  if (m_log) m_log(level, msg);
}

event_handlers::outcome event_handlers::notify(const event_notification& n) {
  outcome out;
  auto t = snapshot();
  auto what = [&] {
    return "event " + n.event_id.to_string() +
           (n.row_id ? " (row " + std::to_string(n.row_id) + ")" : std::string(" (local)"));
  };
  for (const auto& e : t->raised) {
    if (!enter(*e)) continue;
    try {
      e->raised(n);
    } catch (const error& ex) {
      if (ex.code() == errc::decode_failed) {
        ++out.undecodable;
        log(log_level::error, "Raised handler skipped: " + std::string(ex.what()));
      } else {
        ++out.handler_errors;
        log(log_level::error, "Raised handler of " + what() + " threw: " + ex.what());
      }
    } catch (const std::exception& ex) {
      ++out.handler_errors;
      log(log_level::error, "Raised handler of " + what() + " threw: " + ex.what());
    } catch (...) {
      ++out.handler_errors;
      log(log_level::error,
          "Raised handler of " + what() + " threw an exception that is not a std::exception");
    }
    leave(*e);
  }
  return out;
}

std::uint64_t event_handlers::notify_missed(const missed_info& info) {
  std::uint64_t errors = 0;
  auto t = snapshot();
  for (const auto& e : t->missed) {
    if (!enter(*e)) continue;
    try {
      e->missed(info);
    } catch (const std::exception& ex) {
      ++errors;
      log(log_level::error, std::string("Missed handler threw: ") + ex.what());
    } catch (...) {
      ++errors;
      log(log_level::error, "Missed handler threw an exception that is not a std::exception");
    }
    leave(*e);
  }
  return errors;
}

}  // namespace eventq::detail
