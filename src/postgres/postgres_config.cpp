#include "postgres/postgres_config.h"

#include <algorithm>
#include <cctype>
#include <utility>
#include <vector>

#include "backends.h"
#include "eventq/error.h"
#include "eventq/postgres.h"
#include "eventq/signing.h"
#include "row_check.h"
#include "util.h"
#include "validation.h"

namespace eventq::postgres {

namespace {

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool parse_switch(std::string_view value, const std::string& display, std::string_view key) {
  auto v = lower(value);
  if (v == "on" || v == "true" || v == "1") return true;
  if (v == "off" || v == "false" || v == "0") return false;
  throw error(errc::invalid_url, "database URL '" + display + "': " + std::string(key) +
                                     " must be 'on' or 'off', not '" + std::string(value) + "'");
}

std::chrono::milliseconds parse_ms(std::string_view value, const std::string& display,
                                   std::string_view key) {
  auto n = detail::parse_int64(value);
  if (!n || *n < 0 || *n > 86400000) {
    throw error(errc::invalid_url, "database URL '" + display + "': " + std::string(key) +
                                       " must be a number of milliseconds (0 to 86400000), not '" +
                                       std::string(value) + "'");
  }
  return std::chrono::milliseconds(*n);
}

int parse_pool_size(std::string_view value, const std::string& display, std::string_view key) {
  auto n = detail::parse_int64(value);
  if (!n || *n < 1 || *n > 64) {
    throw error(errc::invalid_url, "database URL '" + display + "': " + std::string(key) +
                                       " must be a number of connections from 1 to 64, not '" +
                                       std::string(value) + "'");
  }
  return static_cast<int>(*n);
}

bool parse_pool_mode(std::string_view value, const std::string& display, std::string_view key) {
  auto v = lower(value);
  if (v == "session") return false;
  if (v == "transaction") return true;
  throw error(errc::invalid_url,
              "database URL '" + display + "': " + std::string(key) + " must be 'session' (a " +
                  "direct connection, or PgBouncer's pool_mode=session) or 'transaction' " +
                  "(PgBouncer's pool_mode=transaction), not '" + std::string(value) + "'");
}

// eventq's own parameters, in either form ("eventq_" + key in libpq's keyword form). False
// for a key that is libpq's.
bool take_parameter(std::string_view key, std::string_view value, config& c) {
  if (key == "schema") {
    c.schema = std::string(value);
  } else if (key == "notify") {
    c.notify = parse_switch(value, c.display, key);
    c.notify_given = true;
  } else if (key == "statement_timeout") {
    c.statement_timeout = parse_ms(value, c.display, key);
  } else if (key == "lock_timeout") {
    c.lock_timeout = parse_ms(value, c.display, key);
  } else if (key == "pool_size") {
    c.pool_size = parse_pool_size(value, c.display, key);
  } else if (key == "pool_mode") {
    c.transaction_pooling = parse_pool_mode(value, c.display, key);
  } else {
    return false;
  }
  return true;
}

// libpq parameters that bound a connection's waits, added unless the URL sets them: a network
// black hole then fails a call in seconds, not after the kernel's two hours.
constexpr std::pair<const char*, const char*> k_libpq_defaults[] = {
    {"connect_timeout", "10"},    {"keepalives", "1"},       {"keepalives_idle", "10"},
    {"keepalives_interval", "5"}, {"keepalives_count", "3"}, {"tcp_user_timeout", "10000"}};

bool is_libpq_default(std::string_view key) {
  for (const auto& [k, v] : k_libpq_defaults) {
    if (key == k) return true;
  }
  return false;
}

// postgresql://...?a=b&schema=x: takes eventq's parameters out of the query string.
void parse_uri(std::string_view url, config& c) {
  auto q = url.find('?');
  std::string base(url.substr(0, q));
  std::vector<std::string> kept;
  std::vector<std::string> present;
  if (q != std::string_view::npos) {
    std::string_view query = url.substr(q + 1);
    while (!query.empty()) {
      auto amp = query.find('&');
      std::string_view item = query.substr(0, amp);
      query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
      if (item.empty()) continue;
      auto eq = item.find('=');
      std::string_view key = item.substr(0, eq);
      std::string_view value = eq == std::string_view::npos ? "" : item.substr(eq + 1);
      if (!take_parameter(key, value, c)) {
        if (is_libpq_default(key)) present.emplace_back(key);
        kept.emplace_back(item);
      }
    }
  }
  for (const auto& [k, v] : k_libpq_defaults) {
    if (std::find(present.begin(), present.end(), k) == present.end()) {
      kept.push_back(std::string(k) + "=" + v);
    }
  }
  c.conninfo = base;
  for (std::size_t i = 0; i < kept.size(); ++i) c.conninfo += (i == 0 ? "?" : "&") + kept[i];
}

// host=... dbname=... eventq_schema=x: libpq's keyword form, values optionally single-quoted.
void parse_keywords(std::string_view s, config& c) {
  std::size_t i = 0;
  std::vector<std::string> present;
  std::string out;
  auto bad = [&](const std::string& why) {
    throw error(errc::invalid_url, "database URL '" + c.display + "': " + why +
                                       "; expected libpq's \"host=... dbname=...\" form");
  };
  while (i < s.size()) {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    if (i >= s.size()) break;
    std::size_t start = i;
    while (i < s.size() && s[i] != '=' && !std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    std::string key(s.substr(start, i - start));
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    if (i >= s.size() || s[i] != '=') bad("'" + key + "' has no '=value'");
    ++i;
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    std::string value;
    if (i < s.size() && s[i] == '\'') {
      ++i;
      bool closed = false;
      while (i < s.size()) {
        if (s[i] == '\\' && i + 1 < s.size()) {
          value += s[i + 1];
          i += 2;
        } else if (s[i] == '\'') {
          closed = true;
          ++i;
          break;
        } else {
          value += s[i++];
        }
      }
      if (!closed) bad("the value of '" + key + "' has no closing quote");
    } else {
      while (i < s.size() && !std::isspace(static_cast<unsigned char>(s[i]))) {
        if (s[i] == '\\' && i + 1 < s.size()) ++i;
        value += s[i++];
      }
    }
    std::string raw(s.substr(start, i - start));
    if (!starts_with(key, "eventq_") ||
        !take_parameter(std::string_view(key).substr(7), value, c)) {
      if (is_libpq_default(key)) present.push_back(key);
      if (!out.empty()) out += ' ';
      out += raw;
    }
  }
  for (const auto& [k, v] : k_libpq_defaults) {
    if (std::find(present.begin(), present.end(), k) != present.end()) continue;
    if (!out.empty()) out += ' ';
    out += std::string(k) + "=" + v;
  }
  c.conninfo = out;
}

}  // namespace

void check_schema_name(std::string_view schema, bool in_url) {
  auto code = in_url ? errc::invalid_url : errc::invalid_argument;
  bool ok = !schema.empty() && schema.size() <= 63 &&
            !std::isdigit(static_cast<unsigned char>(schema[0]));
  for (unsigned char ch : schema) ok = ok && (std::isalnum(ch) || ch == '_');
  if (!ok) {
    throw error(code, "PostgreSQL schema name '" + std::string(schema.substr(0, 80)) +
                          "' is not a plain identifier: use letters, digits and '_' (not "
                          "starting with a digit, at most 63 characters)");
  }
}

std::string channel_of(std::string_view schema) { return "eventq_" + lower(schema); }

config parse_url(std::string_view url) {
  config c;
  c.display = detail::redact_url(url);
  c.schema = "public";
  if (starts_with(url, "postgresql://") || starts_with(url, "postgres://")) {
    parse_uri(url, c);
  } else {
    parse_keywords(url, c);
  }
  check_schema_name(c.schema, true);
  if (c.transaction_pooling) {
    // Through transaction pooling, LISTEN would hold on to whichever server connection the
    // pooler lent for that one statement: notifications never arrive.
    if (c.notify && c.notify_given) {
      throw error(errc::invalid_url,
                  "database URL '" + c.display +
                      "': notify=on does not work with pool_mode=transaction (a LISTEN through "
                      "a transaction pooler listens on a server connection other clients then "
                      "borrow); use notify=off, or PgBouncer's session mode for wake-ups");
    }
    c.notify = false;
  }
  return c;
}

std::string config::pool_key() const {
  return conninfo + '\n' + std::to_string(statement_timeout.count()) + '/' +
         std::to_string(lock_timeout.count()) + '/' + std::to_string(pool_size) + '/' +
         (transaction_pooling ? "transaction" : "session");
}

std::string insert_statement(std::string_view schema, wake_up wake) {
  check_schema_name(schema, false);
  std::string s(schema);
  std::string insert =
      "INSERT INTO " + s +
      ".EventQueue (EventType, InstanceData, InstanceName, RaiseLocally, RaiseGlobally, "
      "Created, KeyId, Signature) VALUES ($1, $2::json, $3, $4::boolean, $5::boolean, "
      "$6::timestamptz, $7, $8) RETURNING Id";
  if (wake == wake_up::none) return insert;
  return "WITH eventq_row AS (" + insert + "), eventq_wake AS (SELECT pg_notify('" +
         channel_of(schema) + "', '')) SELECT Id FROM eventq_row, eventq_wake";
}

std::array<std::string, 8> insert_parameters(const outgoing_event& event,
                                             std::string_view instance_name, const signing_key& key,
                                             std::size_t max_payload_bytes) {
  // What queue::raise_raw() checks, with the readers' own rules (detail::name_problem...):
  // nothing this returns is refused by every instance.
  for (auto problem : {detail::name_problem("event type", event.type),
                       detail::name_problem("instance name", instance_name)}) {
    if (!problem.empty()) throw error(errc::invalid_argument, "insert_parameters: " + problem);
  }
  if (event.mode == raise_mode::none) {
    throw error(errc::invalid_argument,
                "insert_parameters: raise_mode::none addresses the event to nobody");
  }
  if (key.id.empty() || key.secret.size() < 16) {
    throw error(errc::invalid_argument,
                "insert_parameters: the signing key needs an id and a secret of at least 16 "
                "bytes (the same as the instances' options::key_id and secret)");
  }
  if (event.data.size() > max_payload_bytes) {
    throw error(errc::payload_too_large,
                "event of type '" + event.type + "' has a " + std::to_string(event.data.size()) +
                    "-byte payload; the limit is " + std::to_string(max_payload_bytes) +
                    " bytes: send an identifier of what changed, not the data itself");
  }
  if (auto problem = detail::payload_problem(event.data); !problem.empty()) {
    throw error(errc::invalid_argument,
                "insert_parameters: event of type '" + event.type + "': " + problem);
  }
  bool local = event.mode != raise_mode::globally;
  bool global = event.mode != raise_mode::locally;
  // Created goes in as text at millisecond precision, so what is stored is exactly what was
  // signed.
  event_record row;
  row.type = event.type;
  row.data = event.data;
  row.instance = std::string(instance_name);
  row.mode = event.mode;
  row.created = std::chrono::system_clock::now();
  std::string created = detail::format_utc(row.created);
  row.created = detail::parse_utc(created).value_or(row.created);
  return {event.type,
          event.data,
          std::string(instance_name),
          local ? "true" : "false",
          global ? "true" : "false",
          created + "+00",
          key.id,
          sign(row, key)};
}

}  // namespace eventq::postgres
