// eventq/signing.h — how events are signed, for tools and applications that write rows themselves.
//
// Every row carries KeyId and Signature: HMAC-SHA256, keyed by a shared secret, over the
// canonical form below. Receivers recompute it and drop rows that do not match (see
// options::verify). Nothing here touches a database; all functions are thread-safe.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "eventq/event.h"

namespace eventq {

/// One HMAC key: the id stored in EventQueue.KeyId and the secret bytes. A key may be accepted
/// only for a while (rotation): see options::accepted_keys.
struct signing_key {
  std::string id;      ///< REQUIRES: 1 to 64 printable ASCII characters
  std::string secret;  ///< REQUIRES: at least 16 bytes; use random bytes, not a password
  /// Verifiers accept rows signed with this key while their clock is before this time.
  /// Meaningless for the key that signs (it is always accepted).
  std::chrono::system_clock::time_point accept_until = std::chrono::system_clock::time_point::max();
};

/// The bytes that are signed: the ASCII tag "eventq-hmac-v1", then six fields, each as its
/// length (8 bytes, big-endian) followed by its bytes:
///   key id, event type, payload (the JSON text exactly as stored), raising instance name,
///   flags (one ASCII digit: RaiseLocally + 2 * RaiseGlobally, so "1", "2" or "3"),
///   created (decimal milliseconds since 1970-01-01 UTC, rounded down: Created as stored).
/// `row.id`, `row.key_id` and `row.signature` are not part of it.
std::string canonical_form(const event_record& row, std::string_view key_id);

/// HMAC-SHA256 of canonical_form(row, key.id) under key.secret: 64 lowercase hex digits, the
/// form stored in EventQueue.Signature.
std::string sign(const event_record& row, const signing_key& key);

}  // namespace eventq
