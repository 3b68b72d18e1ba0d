// eventq/guid.h — a 128-bit GUID, as EPiServer names its events and raisers.
#pragma once

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace eventq {

/// A GUID (UUID): 16 bytes, written "888b5c89-9b0f-4e67-a3b0-6e660ab9a60f". Plain value type:
/// copy, compare, hash (std::hash) and use as a map key freely; thread-safe like an int.
/// Bytes are kept in the order of the text form (RFC 4122), not .NET's mixed-endian layout, so
/// the same text names the same GUID here and in .NET.
class guid {
 public:
  using bytes_type = std::array<std::uint8_t, 16>;

  /// The nil GUID, 00000000-0000-0000-0000-000000000000.
  constexpr guid() noexcept = default;
  constexpr explicit guid(const bytes_type& bytes) noexcept : m_bytes(bytes) {}

  /// Parses "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (.NET's "D" form) or the same in braces
  /// ("B" form), hex digits in any case. Throws eventq::error(errc::invalid_argument) naming
  /// the text on anything else: no spaces, no missing or extra hyphens, no other forms.
  static guid parse(std::string_view text);

  /// A new random (version 4) GUID from OpenSSL's secure generator. Thread-safe. Throws
  /// eventq::error only if that generator fails (errc::database_error, as for the secret).
  static guid random();

  /// The canonical text: 36 characters, lower case, hyphens, no braces.
  std::string to_string() const;

  constexpr const bytes_type& bytes() const noexcept { return m_bytes; }
  constexpr bool is_nil() const noexcept { return *this == guid(); }

  /// Byte-wise order, which is also the order of the canonical texts.
  constexpr auto operator<=>(const guid&) const noexcept = default;

 private:
  bytes_type m_bytes{};
};

/// nlohmann::json conversions: a GUID is stored as its canonical text; from_json accepts what
/// guid::parse accepts and throws nlohmann::json::type_error or eventq::error otherwise.
void to_json(nlohmann::json& j, const guid& g);
void from_json(const nlohmann::json& j, guid& g);

}  // namespace eventq

template <>
struct std::hash<eventq::guid> {
  std::size_t operator()(const eventq::guid& g) const noexcept {
    // FNV-1a over the bytes: random GUIDs are already uniform, named ones need mixing too.
    std::uint64_t h = 1469598103934665603ULL;
    for (auto b : g.bytes()) h = (h ^ b) * 1099511628211ULL;
    return static_cast<std::size_t>(h);
  }
};
