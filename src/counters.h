// The counters of one queue object, shared by its components (read with queue::stats()).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "eventq/metrics.h"

namespace eventq::detail {

/// Thread-safe: every field is an atomic, incremented by whichever component counts it.
struct queue_counters {
  std::atomic<std::uint64_t> raised{0}, delivered{0}, handler_errors{0}, undecodable{0},
      unauthentic{0}, oversized{0}, unknown_types{0}, missed{0}, polls{0}, poll_errors{0},
      cleanup_deleted{0}, cleanup_runs{0}, cleanup_errors{0}, lease_renewals{0},
      lease_renewal_failures{0}, cursor_writes_refused{0};
  std::atomic<std::int64_t> last_poll_us{0};

  metrics snapshot() const {
    metrics m;
    m.raised = raised;
    m.delivered = delivered;
    m.handler_errors = handler_errors;
    m.undecodable = undecodable;
    m.unauthentic = unauthentic;
    m.oversized = oversized;
    m.unknown_types = unknown_types;
    m.missed = missed;
    m.polls = polls;
    m.poll_errors = poll_errors;
    m.cleanup_deleted = cleanup_deleted;
    m.cleanup_runs = cleanup_runs;
    m.cleanup_errors = cleanup_errors;
    m.lease_renewals = lease_renewals;
    m.lease_renewal_failures = lease_renewal_failures;
    m.cursor_writes_refused = cursor_writes_refused;
    m.last_poll_duration = std::chrono::microseconds(last_poll_us.load());
    return m;
  }
};

}  // namespace eventq::detail
