// Checks shared by the writer (raise, options) and the reader (row_check): what eventq writes is
// exactly what its poller accepts.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "eventq/event.h"
#include "eventq/options.h"
#include "eventq/storage.h"
#include "row_check.h"

namespace eventq::detail {

/// Longest instance name or event type eventq writes, in bytes.
inline constexpr std::size_t k_max_name_bytes = 200;
/// Shortest signing secret accepted, in bytes.
inline constexpr std::size_t k_min_secret_bytes = 16;

/// Empty when `name` could have been written by eventq; otherwise what is wrong with it
/// ("<what> is empty", ...). Never throws except std::bad_alloc.
std::string name_problem(std::string_view what, std::string_view name);

/// Throws errc::invalid_argument unless `name` is a name eventq may write (see name_problem).
void check_name(std::string_view what, std::string_view name);

/// Throws errc::invalid_argument unless every option is in range (keys included).
void validate(const options& o);

/// `o` with a logger that writes warnings and errors to stderr if it has none.
options with_logger(options o);

/// Throws errc::payload_too_large if `e`'s payload exceeds `max_payload_bytes`.
void check_payload(const outgoing_event& e, std::size_t max_payload_bytes);

/// The signing key: options::secret, else $EVENTQ_SECRET, else the database's own secret
/// (created by whichever instance gets there first; all agree on the first one stored).
/// Throws errc::invalid_argument or errc::schema_invalid for a secret too short.
keyring make_keyring(const options& o, storage& store);

}  // namespace eventq::detail
