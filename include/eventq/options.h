// eventq/options.h — how a queue behaves. Every field has a default that suits a typical
// web farm; the comment on each says what changing it trades.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "eventq/signing.h"

namespace eventq {

/// Where a new instance (one with no stored cursor yet) starts reading.
enum class start_position {
  now,     ///< only events raised after the instance first opened the queue (Sitecore's way)
  oldest,  ///< every event still retained in the table, then everything after
};

/// Severity of a log line handed to options::logger.
enum class log_level { debug, info, warning, error };

/// Receives the library's log lines. Called from whichever thread hit the condition (often the
/// poller thread), so it must be thread-safe. Must not throw.
using log_function = std::function<void(log_level, std::string_view message)>;

/// Whether received rows must carry a valid signature (see signing.h).
enum class verify_mode {
  required,  ///< rows with a missing or wrong signature or an unknown key are skipped (default)
  off,       ///< every row is delivered, signed or not: only where nobody untrusted can write
};

/// Options of one queue (one instance's view of one shared database).
struct options {
  /// REQUIRES: non-empty, at most 200 bytes. The name that identifies this application instance
  /// (Sitecore's InstanceName). Two processes must never share one: each would see only part
  /// of the events meant for that name. Usually "<host>-<app>" or similar, stable across
  /// restarts, because the instance's cursor is stored under it.
  std::string instance_name;

  /// How often the poller reads the table when nothing woke it earlier. Wake-ups (same-process
  /// raises, another process's commit on the same SQLite file, NOTIFY on PostgreSQL) usually
  /// deliver much sooner; this interval is the safety net. Shorter costs more idle queries.
  std::chrono::milliseconds poll_interval{2000};

  /// How often the poller asks the database whether anything changed (SQLite: one
  /// `PRAGMA data_version`, no disk I/O). Bounds cross-process latency on SQLite.
  std::chrono::milliseconds change_check_interval{25};

  /// Rows read per query. The cursor is stored after each page's handlers ran, so a crash
  /// redelivers at most one page. Larger pages drain backlogs faster and redeliver more.
  std::size_t page_size{500};

  /// Largest accepted JSON payload, in bytes, checked at raise time and again when reading (a
  /// larger row written by raw SQL is skipped and counted in metrics::oversized). 256 KiB is the
  /// limit EPiServer inherited from Azure Service Bus; events should name what changed, not carry
  /// it.
  std::size_t max_payload_bytes{256 * 1024};

  /// Where an instance that has never run against this database starts.
  start_position start{start_position::now};

  /// How long a writer waits for another process's write lock (SQLite busy timeout) before the
  /// call fails with errc::database_error. Raises normally wait microseconds to milliseconds.
  std::chrono::milliseconds busy_timeout{10000};

  /// Default retention used by queue::cleanup() when no age is given (Sitecore keeps 1 day).
  std::chrono::seconds retention{std::chrono::hours(24)};

  /// Rows deleted per transaction by cleanup. Smaller batches keep raisers waiting less.
  std::size_t cleanup_batch_size{2000};

  /// After a failed poll (database unreachable), the poller waits this long before retrying,
  /// doubling up to max_retry_backoff. Errors are logged and counted in metrics::poll_errors.
  std::chrono::milliseconds min_retry_backoff{100};
  std::chrono::milliseconds max_retry_backoff{5000};

  /// The secret that signs raised events and verifies received ones (HMAC-SHA256; at least 16
  /// bytes, ideally 32 random ones). Empty: the environment variable EVENTQ_SECRET; if that is
  /// unset or empty too, a random secret kept in the database (Properties 'EQSecret', created by
  /// the first instance that opens it, EPiServer's way). A secret in the database only keeps
  /// out writers who cannot read Properties; see docs/security.md.
  std::string secret;

  /// The id stored with every signature this instance makes (EventQueue.KeyId). Change it
  /// together with the secret when rotating keys.
  std::string key_id{"1"};

  /// Older keys still accepted when verifying, each until its accept_until (key rotation:
  /// a new key signs, the old one stays here for a stated window, then is dropped).
  std::vector<signing_key> accepted_keys;

  /// Verification of received rows. Turning it off is an explicit choice; it is on by default.
  verify_mode verify{verify_mode::required};

  /// Where log lines go. Empty: warnings and errors are written to stderr.
  log_function logger;
};

}  // namespace eventq
