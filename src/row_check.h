// What the poller does with a row before any handler sees it: size check, signature check,
// sanity of names and payload. A pure function, so the fuzzer (fuzz/row_check_fuzz.cpp)
// exercises exactly the code the poller runs.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "eventq/event.h"
#include "eventq/options.h"
#include "eventq/signing.h"

namespace eventq::detail {

/// The keys an instance signs with and accepts. Immutable once built; safe to share.
struct keyring {
  signing_key signer;                 ///< signs raised rows; always accepted
  std::vector<signing_key> accepted;  ///< older keys, each until its accept_until

  /// The key with this id (signer first), or nullptr.
  const signing_key* find(std::string_view id) const;
};

enum class row_verdict {
  ok,           ///< deliver `data`
  oversized,    ///< payload larger than the cap
  unauthentic,  ///< signature missing or wrong, key unknown or expired
  malformed,    ///< names or payload not what eventq writes (bad UTF-8, not a JSON object...)
};
std::string_view to_string(row_verdict v) noexcept;

struct row_check_policy {
  const keyring* keys = nullptr;  ///< REQUIRES: non-null when verify is required
  verify_mode verify = verify_mode::required;
  std::size_t max_payload_bytes = 256 * 1024;
  std::chrono::system_clock::time_point now;  ///< for accept_until
};

struct checked_row {
  row_verdict verdict = row_verdict::ok;
  std::string reason;   ///< why it was refused, printable, for logs ("" when ok)
  nlohmann::json data;  ///< the parsed payload (an object) when ok
};

/// Checks one row, in this order: payload size, signature, names, payload JSON. Never throws
/// except std::bad_alloc.
checked_row check_row(const event_record& row, const row_check_policy& policy);

// The one validator of what eventq writes, shared by the writers (queue::raise, batch, the
// outbox helper in eventq/postgres.h) and the reader (check_row), so that nothing is written
// that every reader refuses. Each returns "" when the value is acceptable, else what is wrong.

// Names (event type, instance name): name_problem() in validation.h.
/// A payload: JSON text without NUL bytes whose value is an object (stored in `parsed` if given).
std::string payload_problem(std::string_view data, nlohmann::json* parsed = nullptr);
/// Created: a time eventq can hold (see event_record::created).
std::string created_problem(std::chrono::system_clock::time_point created);

/// True if `s` is well-formed UTF-8 (no overlong forms, surrogates or code points > U+10FFFF).
bool valid_utf8(std::string_view s) noexcept;

/// At most `max` bytes of `s` with control and non-ASCII bytes written as \xNN: safe to log.
std::string printable(std::string_view s, std::size_t max = 80);

// In signing.cpp (OpenSSL).
std::array<unsigned char, 32> hmac_sha256(std::string_view secret, std::string_view message);
/// Constant-time comparison of a stored hex signature with a computed MAC.
bool signature_matches(std::string_view stored_hex, const std::array<unsigned char, 32>& mac);
/// 32 random bytes as 64 hex digits.
std::string random_secret();

}  // namespace eventq::detail
