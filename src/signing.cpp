// HMAC-SHA256 signatures of rows (OpenSSL stays in this file and row_check.cpp).
#include "eventq/signing.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <memory>
#include <vector>

#include "eventq/error.h"
#include "row_check.h"

namespace eventq {

namespace {

void append_field(std::string& out, std::string_view field) {
  std::uint64_t n = field.size();
  char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<char>((n >> (56 - 8 * i)) & 0xff);
  out.append(length, sizeof length);
  out.append(field);
}

char flags_digit(raise_mode mode) {
  switch (mode) {
    case raise_mode::locally:
      return '1';
    case raise_mode::globally:
      return '2';
    case raise_mode::both:
      return '3';
    case raise_mode::none:
      return '0';
  }
  return '0';
}

constexpr std::string_view k_hex = "0123456789abcdef";

std::string to_hex(const unsigned char* p, std::size_t n) {
  std::string out(2 * n, '0');
  for (std::size_t i = 0; i < n; ++i) {
    out[2 * i] = k_hex[p[i] >> 4];
    out[2 * i + 1] = k_hex[p[i] & 15];
  }
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string canonical_form(const event_record& row, std::string_view key_id) {
  auto ms = std::chrono::floor<std::chrono::milliseconds>(row.created.time_since_epoch()).count();
  std::string out = "eventq-hmac-v1";
  out.reserve(out.size() + 6 * 8 + key_id.size() + row.type.size() + row.data.size() +
              row.instance.size() + 1 + 20);
  append_field(out, key_id);
  append_field(out, row.type);
  append_field(out, row.data);
  append_field(out, row.instance);
  const char flags = flags_digit(row.mode);
  append_field(out, std::string_view(&flags, 1));
  char digits[24];
  auto end = std::to_chars(digits, digits + sizeof digits, ms).ptr;
  append_field(out, std::string_view(digits, static_cast<std::size_t>(end - digits)));
  return out;
}

std::string sign(const event_record& row, const signing_key& key) {
  auto mac = detail::hmac_sha256(key.secret, canonical_form(row, key.id));
  return to_hex(mac.data(), mac.size());
}

namespace detail {

namespace {

struct md_ctx_free {
  void operator()(EVP_MD_CTX* c) const noexcept { EVP_MD_CTX_free(c); }
};
using md_ctx = std::unique_ptr<EVP_MD_CTX, md_ctx_free>;

[[noreturn]] void openssl_failed() {
  throw error(errc::invalid_argument, "HMAC-SHA256 failed (OpenSSL)");
}

md_ctx new_ctx() {
  md_ctx c(EVP_MD_CTX_new());
  if (!c) openssl_failed();
  return c;
}

// SHA-256 fetched once: OpenSSL 3's one-shot HMAC() fetches the algorithm, allocates and frees
// contexts on every call, which cost more than hashing a 300-byte row.
const EVP_MD* sha256() {
  static const EVP_MD* md = EVP_sha256();
  return md;
}

// HMAC (RFC 2104) with the key's padded blocks already absorbed: each message then costs a
// context copy and two short hashes. One per secret, cached per thread (a queue uses few keys).
struct hmac_key {
  std::string secret;
  md_ctx inner, outer;

  explicit hmac_key(std::string_view s) : secret(s), inner(new_ctx()), outer(new_ctx()) {
    constexpr std::size_t block = 64;
    std::array<unsigned char, block> key{};
    if (secret.size() > block) {
      unsigned int n = 0;
      if (EVP_Digest(secret.data(), secret.size(), key.data(), &n, sha256(), nullptr) != 1) {
        openssl_failed();
      }
    } else {
      std::copy(secret.begin(), secret.end(), key.begin());
    }
    std::array<unsigned char, block> ipad{}, opad{};
    for (std::size_t i = 0; i < block; ++i) {
      ipad[i] = static_cast<unsigned char>(key[i] ^ 0x36);
      opad[i] = static_cast<unsigned char>(key[i] ^ 0x5c);
    }
    if (EVP_DigestInit_ex(inner.get(), sha256(), nullptr) != 1 ||
        EVP_DigestUpdate(inner.get(), ipad.data(), block) != 1 ||
        EVP_DigestInit_ex(outer.get(), sha256(), nullptr) != 1 ||
        EVP_DigestUpdate(outer.get(), opad.data(), block) != 1) {
      openssl_failed();
    }
    OPENSSL_cleanse(key.data(), key.size());
    OPENSSL_cleanse(ipad.data(), ipad.size());
    OPENSSL_cleanse(opad.data(), opad.size());
  }
};

const hmac_key& cached_key(std::string_view secret) {
  thread_local std::vector<std::unique_ptr<hmac_key>> cache;
  for (auto& k : cache) {
    if (k->secret == secret) return *k;
  }
  if (cache.size() >= 8) cache.erase(cache.begin());  // oldest out
  cache.push_back(std::make_unique<hmac_key>(secret));
  return *cache.back();
}

}  // namespace

std::array<unsigned char, 32> hmac_sha256(std::string_view secret, std::string_view message) {
  thread_local md_ctx work = new_ctx();
  const hmac_key& key = cached_key(secret);
  std::array<unsigned char, 32> inner_hash{}, out{};
  unsigned int len = 0;
  if (EVP_MD_CTX_copy_ex(work.get(), key.inner.get()) != 1 ||
      EVP_DigestUpdate(work.get(), message.data(), message.size()) != 1 ||
      EVP_DigestFinal_ex(work.get(), inner_hash.data(), &len) != 1 || len != inner_hash.size() ||
      EVP_MD_CTX_copy_ex(work.get(), key.outer.get()) != 1 ||
      EVP_DigestUpdate(work.get(), inner_hash.data(), inner_hash.size()) != 1 ||
      EVP_DigestFinal_ex(work.get(), out.data(), &len) != 1 || len != out.size()) {
    openssl_failed();
  }
  return out;
}

bool signature_matches(std::string_view stored_hex, const std::array<unsigned char, 32>& mac) {
  if (stored_hex.size() != 2 * mac.size()) return false;
  std::array<unsigned char, 32> stored{};
  for (std::size_t i = 0; i < stored.size(); ++i) {
    int hi = hex_value(stored_hex[2 * i]);
    int lo = hex_value(stored_hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    stored[i] = static_cast<unsigned char>(hi * 16 + lo);
  }
  return CRYPTO_memcmp(stored.data(), mac.data(), mac.size()) == 0;
}

std::string random_secret() {
  std::array<unsigned char, 32> bytes{};
  if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
    throw error(errc::database_error, "cannot create a secret: OpenSSL's RAND_bytes failed");
  }
  return to_hex(bytes.data(), bytes.size());
}

}  // namespace detail

}  // namespace eventq
