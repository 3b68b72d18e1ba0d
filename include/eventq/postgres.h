// eventq/postgres.h — raising an event inside the application's own PostgreSQL transaction
// (the outbox pattern): the event exists if and only if that transaction commits.
//
//   // once: prepare on the application's connection (libpq, libpqxx, any driver)
//   conn.prepare("eventq_raise", eventq::postgres::insert_statement("public"));
//   // in a transaction that also changes application data:
//   eventq::signing_key key{"1", secret};  // the instances' options::key_id and secret
//   auto p = eventq::postgres::insert_parameters(
//       {"page.changed", R"({"page":42})", eventq::raise_mode::globally}, "web-1", key);
//   tx.exec_prepared("eventq_raise", p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]);  // -> Id
//   tx.commit();  // rollback instead: no event, nobody ever sees it
//
// The statement queues a NOTIFY that PostgreSQL sends at commit, so instances wake at once; the
// queue must have been opened on the database once (which creates the schema) before use.
// Nothing here talks to a database: these functions only build text, and are thread-safe.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <string_view>

#include "eventq/event.h"
#include "eventq/signing.h"

namespace eventq::postgres {

/// Whether the INSERT statement also wakes listening instances with NOTIFY at commit.
enum class wake_up {
  notify,  ///< instances opened with notify on (the default) poll at once
  none,    ///< instances find the event at their next poll (options::poll_interval)
};

/// The SQL of one INSERT into `schema`.EventQueue with text parameters $1..$8 (see
/// insert_parameters), returning one row with the new event's Id. REQUIRES: `schema` is the
/// schema the queue URL names (`schema=` query parameter; default "public"), letters, digits
/// and '_' only. Throws eventq::error(invalid_argument) otherwise.
std::string insert_statement(std::string_view schema = "public", wake_up wake = wake_up::notify);

/// The parameter values of insert_statement() for `event`, raised by `instance_name` and signed
/// with `key`, in order: event type, JSON text, instance name, RaiseLocally, RaiseGlobally,
/// Created (now, UTC, milliseconds), KeyId, Signature. `key` must be one the instances accept:
/// their options::key_id and secret (or the database's 'EQSecret' with key id "1" when they
/// keep the secret there). Checks what queue::raise_raw() checks (non-empty names, a JSON
/// object no larger than `max_payload_bytes`) and throws eventq::error naming the problem.
std::array<std::string, 8> insert_parameters(const outgoing_event& event,
                                             std::string_view instance_name, const signing_key& key,
                                             std::size_t max_payload_bytes = 256 * 1024);

}  // namespace eventq::postgres
