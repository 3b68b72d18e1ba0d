#include "dispatcher.h"

#include <algorithm>

namespace eventq::detail {

std::uint64_t dispatcher::add(std::string type, raw_handler handler) {
  if (!handler) throw error(errc::invalid_argument, "subscribe: the handler is empty");
  std::lock_guard lk(m_table_mutex);
  auto e = std::make_shared<entry>();
  e->id = m_next_id++;
  e->raw = std::move(handler);
  auto t = std::make_shared<table>(*m_table);
  if (type.empty()) {
    t->all.push_back(e);
  } else {
    t->by_type[type].push_back(e);
  }
  m_table = std::move(t);
  return e->id;
}

std::uint64_t dispatcher::add_missed(missed_handler handler) {
  if (!handler) throw error(errc::invalid_argument, "on_missed: the handler is empty");
  std::lock_guard lk(m_table_mutex);
  auto e = std::make_shared<entry>();
  e->id = m_next_id++;
  e->missed = std::move(handler);
  auto t = std::make_shared<table>(*m_table);
  t->missed.push_back(e);
  m_table = std::move(t);
  return e->id;
}

void dispatcher::remove(std::uint64_t id) noexcept {
  {
    std::lock_guard lk(m_table_mutex);
    auto t = std::make_shared<table>(*m_table);
    auto drop = [this, id](std::vector<entry_ptr>& v) {
      auto it = std::find_if(v.begin(), v.end(), [id](const entry_ptr& e) { return e->id == id; });
      if (it == v.end()) return false;
      {
        std::lock_guard call(m_call_mutex);
        (*it)->active = false;
      }
      v.erase(it);
      return true;
    };
    bool found = drop(t->all) || drop(t->missed);
    for (auto it = t->by_type.begin(); !found && it != t->by_type.end(); ++it) {
      if (drop(it->second)) {
        found = true;
        if (it->second.empty()) t->by_type.erase(it);
        break;
      }
    }
    if (!found) return;
    m_table = std::move(t);
  }
  // A dispatch in progress on another thread may be inside this handler: wait for that call
  // (only that one), so the caller may destroy what the handler uses. From inside a handler,
  // waiting would deadlock.
  if (!in_dispatch()) {
    std::unique_lock call(m_call_mutex);
    m_call_cv.wait(call, [&] { return m_running_id != id; });
  }
}

bool dispatcher::contains(std::uint64_t id) const noexcept {
  auto t = snapshot();
  auto has = [id](const std::vector<entry_ptr>& v) {
    return std::any_of(v.begin(), v.end(), [id](const entry_ptr& e) { return e->id == id; });
  };
  if (has(t->all) || has(t->missed)) return true;
  return std::any_of(t->by_type.begin(), t->by_type.end(),
                     [&](const auto& kv) { return has(kv.second); });
}

bool dispatcher::handles(const std::string& type) const {
  auto t = snapshot();
  if (!t->all.empty()) return true;
  auto it = t->by_type.find(type);
  return it != t->by_type.end() && !it->second.empty();
}

std::optional<std::vector<std::string>> dispatcher::wanted_types() const {
  auto t = snapshot();
  if (!t->all.empty()) return std::nullopt;
  std::vector<std::string> out;
  for (const auto& [type, handlers] : t->by_type) {
    if (!handlers.empty()) out.push_back(type);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::shared_ptr<const dispatcher::table> dispatcher::snapshot() const {
  std::lock_guard lk(m_table_mutex);
  return m_table;
}

void dispatcher::log(log_level level, const std::string& msg) const {
  if (m_log) m_log(level, msg);
}

dispatcher::scope::scope(dispatcher& d) : m_d(d) {
  m_d.m_dispatch_thread = std::this_thread::get_id();
}

bool dispatcher::begin_call(const entry& e) {
  std::lock_guard call(m_call_mutex);
  if (!e.active) return false;
  m_running_id = e.id;
  return true;
}

void dispatcher::end_call() {
  {
    std::lock_guard call(m_call_mutex);
    m_running_id = 0;
  }
  m_call_cv.notify_all();
}

dispatcher::scope::~scope() { m_d.m_dispatch_thread = std::thread::id{}; }

bool dispatcher::invoke(const entry& e, const event_record& row, const nlohmann::json& data,
                        outcome& out) {
  if (!begin_call(e)) return false;
  struct ender {
    dispatcher& d;
    ~ender() { d.end_call(); }
  } end{*this};
  try {
    e.raw(row, data);
    return true;
  } catch (const error& ex) {
    if (ex.code() == errc::decode_failed) {
      out.undecodable = true;
      log(log_level::error,
          "event " + std::to_string(row.id) + " skipped for one handler: " + ex.what());
      return false;
    }
    ++out.handler_errors;
    log(log_level::error, "handler for event " + std::to_string(row.id) + " (type '" + row.type +
                              "') threw: " + ex.what());
  } catch (const std::exception& ex) {
    ++out.handler_errors;
    log(log_level::error, "handler for event " + std::to_string(row.id) + " (type '" + row.type +
                              "') threw: " + ex.what());
  } catch (...) {
    ++out.handler_errors;
    log(log_level::error, "handler for event " + std::to_string(row.id) + " (type '" + row.type +
                              "') threw an exception that is not a std::exception");
  }
  return false;
}

dispatcher::outcome dispatcher::dispatch(const event_record& row, const nlohmann::json& data) {
  outcome out;
  auto t = snapshot();
  auto typed = t->by_type.find(row.type);
  bool has_typed = typed != t->by_type.end() && !typed->second.empty();
  if (!has_typed && t->all.empty()) {
    out.unknown_type = true;
    // Normal in a broadcast queue shared by several applications: counted, said at debug.
    log(log_level::debug, "event " + std::to_string(row.id) + " has type '" + row.type +
                              "' that no handler subscribes to; skipped");
    return out;
  }
  auto run = [&](const std::vector<entry_ptr>& v) {
    for (const auto& e : v) {
      if (invoke(*e, row, data, out)) out.delivered = true;
    }
  };
  if (has_typed) run(typed->second);
  run(t->all);
  return out;
}

std::uint64_t dispatcher::dispatch_missed(const missed_info& info) {
  std::uint64_t errors = 0;
  auto t = snapshot();
  for (const auto& e : t->missed) {
    if (!begin_call(*e)) continue;
    struct ender {
      dispatcher& d;
      ~ender() { d.end_call(); }
    } end{*this};
    try {
      e->missed(info);
    } catch (const std::exception& ex) {
      ++errors;
      log(log_level::error, std::string("missed handler threw: ") + ex.what());
    } catch (...) {
      ++errors;
      log(log_level::error, "missed handler threw an exception that is not a std::exception");
    }
  }
  return errors;
}

}  // namespace eventq::detail
