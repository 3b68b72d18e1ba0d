// The PostgreSQL statements: what every connection prepares, and the conversions between
// event_record and their parameters and result rows.
#pragma once

#include <chrono>
#include <optional>
#include <pqxx/connection>
#include <pqxx/row>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "eventq/storage.h"

namespace eventq::postgres {

/// `sql` with each name of an eventq table or view, and each call of an eventq_ function,
/// qualified with `schema` (unless already qualified, or inside a literal or a quoted name):
/// statements never depend on a connection's search_path, so that the queues of every schema
/// can share a connection, and a pooler's server connection cannot carry one client's
/// search_path to another.
std::string qualify(std::string_view sql, std::string_view schema);

/// One of eventq's statements: its name, and its text for one schema.
struct statement {
  const char* name;
  std::string sql;
};

/// eventq's statements for the tables in `schema`, qualified.
std::vector<statement> statements_for(const std::string& schema);

/// The name `statement` of `schema` is prepared under: every schema's statements can be
/// prepared on one connection.
std::string prepared_name(std::string_view statement, std::string_view schema);

/// Prepares (registers, for libpqxx to prepare at first use) every statement of `schema` on `c`.
void prepare_statements(pqxx::connection& c, const std::string& schema);

/// A time as timestamptz text (UTC).
std::string created_text(std::chrono::system_clock::time_point t);

/// Empty means unsigned: stored as NULL, as a row written by other means would be.
inline const char* nullable(const std::string& s) { return s.empty() ? nullptr : s.c_str(); }

/// A PostgreSQL array literal of text elements: {"a","b\"c"}.
/// With `empty_is_null`, an empty field becomes a NULL element (unsigned rows).
template <class F>
std::string text_array(std::span<const event_record> rows, F field, bool empty_is_null = false) {
  std::string out = "{";
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (i) out += ',';
    if (empty_is_null && std::string_view(field(rows[i])).empty()) {
      out += "NULL";
      continue;
    }
    out += '"';
    for (char ch : field(rows[i])) {
      if (ch == '"' || ch == '\\') out += '\\';
      out += ch;
    }
    out += '"';
  }
  out += '}';
  return out;
}

// The fields of all rows joined by the unit separator (U+001F), which eventq's fields never
// hold: payloads are JSON written by nlohmann::json (control characters escaped), names and key
// ids are checked for control characters, the rest is digits and hex. The server splits it with
// string_to_array, much cheaper than parsing an array literal of escaped JSON. nullopt when a
// field holds the separator after all (the caller then sends array literals).
constexpr char k_unit_separator = '\x1f';
template <class F>
std::optional<std::string> joined(std::span<const event_record> rows, F field) {
  std::string out;
  out.reserve(rows.size() * 24);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    std::string_view v = field(rows[i]);
    if (v.find(k_unit_separator) != std::string_view::npos) return std::nullopt;
    if (i) out += k_unit_separator;
    out.append(v);
  }
  return out;
}

/// A row of eventq_read or eventq_page: the event's columns start at index 3 (after the
/// snapshot, the deletions and the incarnation). Never throws for a row's content.
event_record to_record(const pqxx::row& row);

}  // namespace eventq::postgres
