// eventq/event.h — what an event is on the wire (a row of the EventQueue table) and how a C++
// type is tied to an event type name.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

namespace eventq {

/// Who receives a raised event. Maps onto the RaiseLocally / RaiseGlobally columns.
enum class raise_mode {
  locally,   ///< only the raising instance (RaiseLocally=1, RaiseGlobally=0)
  globally,  ///< every instance except the raiser (RaiseLocally=0, RaiseGlobally=1)
  both,      ///< every instance, the raiser included (both flags 1)
  /// Neither flag: addressed to nobody. Never raised (raise calls refuse it with
  /// errc::invalid_argument); only read back from rows written by other means, which every
  /// instance refuses as malformed, counts and lists (queue::find_rejected_rows).
  none,
};

/// "locally", "globally", "both" or "none".
std::string_view to_string(raise_mode mode) noexcept;

/// One event as stored and as read back: a row of EventQueue. Plain data; copy freely.
struct event_record {
  std::int64_t id = 0;   ///< EventQueue.Id: unique, never reused, increasing in raise order
  std::string type;      ///< EventQueue.EventType
  std::string data;      ///< EventQueue.InstanceData: the JSON text exactly as stored
  std::string instance;  ///< EventQueue.InstanceName: the raising instance
  raise_mode mode = raise_mode::globally;
  /// EventQueue.Created (UTC). time_point::min() when the stored value is not a time this
  /// library can hold (PostgreSQL 'infinity', a year past 2261, SQLite text that is no time):
  /// instances refuse such a row as malformed.
  std::chrono::system_clock::time_point created;
  std::string key_id;     ///< EventQueue.KeyId: the key that signed it ("" if NULL: unsigned)
  std::string signature;  ///< EventQueue.Signature: 64 hex digits ("" if NULL; see signing.h)
};

/// An event about to be raised: what raise_raw() and batch::add_raw() take.
struct outgoing_event {
  std::string type;  ///< REQUIRES: non-empty, at most 200 bytes
  std::string data;  ///< REQUIRES: a JSON object, at most options::max_payload_bytes bytes
  raise_mode mode = raise_mode::globally;
};

/// Ties a C++ type to its event type name. Either give the type a member
///     static constexpr std::string_view event_type = "page.changed";
/// or specialise this template in namespace eventq:
///     template <> struct event_traits<my::PageChanged> {
///       static constexpr std::string_view type_name = "page.changed"; };
/// The name is what is stored in EventQueue.EventType, so keep it stable across releases.
template <class T>
struct event_traits {
  static_assert(sizeof(T) > 0, "incomplete event type");
  static constexpr std::string_view type_name = T::event_type;
};

/// The event type name of T (see event_traits).
template <class T>
constexpr std::string_view event_type_name() {
  return event_traits<std::remove_cv_t<std::remove_reference_t<T>>>::type_name;
}

}  // namespace eventq
