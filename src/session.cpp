// eventq::session, registration and event_filter: the public face of session_engine.
#include "eventq/session.h"

#include "eventq/error.h"
#include "eventq/storage.h"
#include "session_engine.h"

namespace eventq {

bool json_contains(const nlohmann::json& doc, const nlohmann::json& pattern) {
  if (pattern.is_object()) {
    if (!doc.is_object()) return false;
    for (auto it = pattern.begin(); it != pattern.end(); ++it) {
      auto found = doc.find(it.key());
      if (found == doc.end() || !json_contains(*found, it.value())) return false;
    }
    return true;
  }
  if (pattern.is_array()) {
    if (!doc.is_array()) return false;
    for (const auto& want : pattern) {
      bool any = false;
      for (const auto& have : doc) {
        if (json_contains(have, want)) {
          any = true;
          break;
        }
      }
      if (!any) return false;
    }
    return true;
  }
  if (pattern.is_number() && doc.is_number()) {  // 1 and 1.0 are one number, as in jsonb
    if (pattern.is_number_float() || doc.is_number_float()) {
      return pattern.get<double>() == doc.get<double>();
    }
  }
  return doc == pattern;
}

bool event_filter::matches_type(std::string_view type) const noexcept {
  if (types.empty()) return true;
  for (const auto& t : types) {
    if (t.size() >= 2 && t.ends_with(".*")) {
      std::string_view prefix(t.data(), t.size() - 1);  // keeps the dot
      if (type.size() > prefix.size() && type.starts_with(prefix)) return true;
    } else if (t == type) {
      return true;
    }
  }
  return false;
}

bool event_filter::matches(std::string_view type, const nlohmann::json& payload) const {
  return matches_type(type) && (match.empty() || json_contains(payload, match));
}

void registration::reset() noexcept {
  if (m_id == 0) return;
  if (auto e = m_owner.lock()) e->remove_listener(m_id);
  m_owner.reset();
  m_id = 0;
}

bool registration::active() const noexcept {
  if (m_id == 0) return false;
  auto e = m_owner.lock();
  return e && e->has_listener(m_id);
}

session& session::operator=(session&& other) noexcept {
  if (this != &other) {
    close();
    m_engine = std::move(other.m_engine);
  }
  return *this;
}

session::~session() { close(); }

registration session::add_listener(event_filter filter, batch_listener listener) {
  if (!listener) throw error(errc::invalid_argument, "add_listener: the listener is empty");
  return add(std::move(filter),
             [h = std::move(listener)](const detail::batch_input& in) { h(in.rows); });
}

registration session::add(event_filter filter, detail::batch_function fn) {
  if (!m_engine) throw error(errc::closed, "add_listener: this session handle is empty");
  auto id = m_engine->add_listener(std::move(filter), std::move(fn));
  return registration(m_engine, id);
}

bool session::drain(std::chrono::milliseconds timeout) {
  return !m_engine || m_engine->drain(timeout);
}

void session::close() noexcept {
  if (m_engine) m_engine->shut_down();
  m_engine.reset();
}

session_metrics session::stats() const { return m_engine ? m_engine->stats() : session_metrics{}; }

std::string session::name() const { return m_engine ? m_engine->name() : std::string(); }

void storage::record_failures(std::span<const failure_record>) {
  throw error(errc::invalid_argument, "the '" + std::string(backend_name()) +
                                          "' storage backend cannot keep failure records");
}

std::vector<failure_record> storage::failures(std::size_t, std::string_view) {
  throw error(errc::invalid_argument, "the '" + std::string(backend_name()) +
                                          "' storage backend cannot keep failure records");
}

std::size_t storage::delete_old_failures(const expiry&, bool) { return 0; }

std::int64_t storage::failure_count() {
  throw error(errc::invalid_argument, "the '" + std::string(backend_name()) +
                                          "' storage backend cannot keep failure records");
}

}  // namespace eventq
