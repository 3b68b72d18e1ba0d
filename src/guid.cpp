#include "eventq/guid.h"

#include <openssl/rand.h>

#include "eventq/error.h"
#include "row_check.h"

namespace eventq {

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

guid guid::parse(std::string_view text) {
  std::string_view body = text;
  if (body.size() == 38 && body.front() == '{' && body.back() == '}') {
    body = body.substr(1, 36);
  }
  bytes_type bytes{};
  bool ok = body.size() == 36;
  std::size_t n = 0;
  for (std::size_t i = 0; ok && i < body.size(); ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      ok = body[i] == '-';
      continue;
    }
    int v = hex_value(body[i]);
    ok = v >= 0;
    if (ok) {
      bytes[n / 2] = static_cast<std::uint8_t>(n % 2 == 0 ? v << 4 : bytes[n / 2] | v);
      ++n;
    }
  }
  if (!ok) {
    throw error(errc::invalid_argument,
                "not a GUID: '" + detail::printable(text, 60) + "'" +
                    "; expected 32 hex digits as 8-4-4-4-12 with hyphens, optionally in braces, "
                    "e.g. 888b5c89-9b0f-4e67-a3b0-6e660ab9a60f");
  }
  return guid(bytes);
}

guid guid::random() {
  bytes_type bytes{};
  if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
    throw error(errc::database_error, "cannot make a random GUID: OpenSSL's RAND_bytes failed");
  }
  bytes[6] = static_cast<std::uint8_t>((bytes[6] & 0x0f) | 0x40);  // version 4
  bytes[8] = static_cast<std::uint8_t>((bytes[8] & 0x3f) | 0x80);  // RFC 4122 variant
  return guid(bytes);
}

std::string guid::to_string() const {
  static const char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(36);
  for (std::size_t i = 0; i < m_bytes.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    out += hex[m_bytes[i] >> 4];
    out += hex[m_bytes[i] & 15];
  }
  return out;
}

void to_json(nlohmann::json& j, const guid& g) { j = g.to_string(); }

void from_json(const nlohmann::json& j, guid& g) { g = guid::parse(j.get<std::string>()); }

}  // namespace eventq
