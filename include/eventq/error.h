// eventq/error.h — the one exception type the library throws.
//
// Every failure that reaches a caller is an eventq::error whose code() says what kind of
// problem it is and whose what() names the problem and, where there is one, what to do about it.
// Backend exceptions (SQLite result codes, libpqxx exceptions) are converted at the storage
// boundary; nothing else escapes the public API except std::bad_alloc.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace eventq {

/// What went wrong, for callers that branch on the kind of failure.
enum class errc {
  invalid_argument,      ///< a bad value passed to a call (empty instance name, bad option...)
  invalid_url,           ///< the database URL is not one eventq understands
  payload_too_large,     ///< an event's JSON is larger than options::max_payload_bytes
  encode_failed,         ///< a typed event could not be converted to JSON
  decode_failed,         ///< a stored payload could not be converted to the subscribed type
  database_unavailable,  ///< cannot open or reach the database (path, permissions, server down)
  database_error,        ///< the database refused a statement (constraint, I/O, corruption...)
  schema_too_new,        ///< the database was migrated by a newer eventq than this one
  schema_invalid,        ///< the database has eventq tables that do not look like eventq's
  instance_name_in_use,  ///< another live instance holds this instance name
  closed,                ///< the queue is shutting down or was closed
  instance_not_live,     ///< a request was addressed to an instance that is not running
};

/// Human-readable name of an error code ("payload_too_large").
std::string_view to_string(errc code) noexcept;

/// The exception type of the library. Thread-safe to copy and read, like std::runtime_error.
class error : public std::runtime_error {
 public:
  error(errc code, const std::string& message) : std::runtime_error(message), m_code(code) {}

  /// The kind of failure; what() carries the details.
  errc code() const noexcept { return m_code; }

 private:
  errc m_code;
};

}  // namespace eventq
