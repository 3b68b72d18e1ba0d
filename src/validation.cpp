#include "validation.h"

#include <cstdlib>
#include <iostream>

#include "eventq/error.h"

namespace eventq::detail {

namespace {

constexpr const char* k_secret_property = "EQSecret";

void check_key_id(std::string_view what, std::string_view id) {
  bool ok = !id.empty() && id.size() <= 64;
  for (unsigned char c : id) ok = ok && c > 0x20 && c < 0x7f;
  if (!ok) {
    throw error(errc::invalid_argument, std::string(what) +
                                            " must be 1 to 64 printable ASCII characters "
                                            "without spaces, such as \"2025-06\"");
  }
}

void check_secret(std::string_view what, std::string_view secret) {
  if (secret.size() < k_min_secret_bytes) {
    throw error(errc::invalid_argument,
                std::string(what) + " is " + std::to_string(secret.size()) +
                    " bytes long; use at least 16 (ideally 32 random bytes, e.g. "
                    "`openssl rand -hex 32`)");
  }
}

void validate_keys(const options& o) {
  check_key_id("options::key_id", o.key_id);
  if (!o.secret.empty()) check_secret("options::secret", o.secret);
  for (std::size_t i = 0; i < o.accepted_keys.size(); ++i) {
    const auto& k = o.accepted_keys[i];
    std::string what = "options::accepted_keys[" + std::to_string(i) + "]";
    check_key_id(what + ".id", k.id);
    check_secret(what + ".secret", k.secret);
    if (k.id == o.key_id) {
      throw error(errc::invalid_argument,
                  what + ".id is '" + k.id + "', the id of the signing key (options::key_id)");
    }
    for (std::size_t j = 0; j < i; ++j) {
      if (o.accepted_keys[j].id == k.id) {
        throw error(errc::invalid_argument, what + ".id '" + k.id + "' is listed twice");
      }
    }
  }
}

}  // namespace

std::string name_problem(std::string_view what, std::string_view name) {
  if (name.empty()) return std::string(what) + " is empty";
  if (name.size() > k_max_name_bytes) return std::string(what) + " is longer than 200 bytes";
  if (!valid_utf8(name)) return std::string(what) + " is not valid UTF-8";
  for (unsigned char c : name) {
    if (c < 0x20 || c == 0x7f) return std::string(what) + " contains a control character";
  }
  return {};
}

void check_name(std::string_view what, std::string_view name) {
  if (name.empty()) {
    throw error(errc::invalid_argument, std::string(what) +
                                            " is empty: give every instance a "
                                            "stable, unique name such as "
                                            "\"web-01\"");
  }
  if (name.size() > k_max_name_bytes) {
    throw error(errc::invalid_argument, std::string(what) + " is " + std::to_string(name.size()) +
                                            " bytes long; the limit is 200");
  }
  for (unsigned char c : name) {
    if (c < 0x20 || c == 0x7f) {
      throw error(errc::invalid_argument,
                  std::string(what) + " contains a control character; use printable text");
    }
  }
}

keyring make_keyring(const options& o, storage& store) {
  keyring keys;
  keys.signer.id = o.key_id;
  keys.accepted = o.accepted_keys;
  if (!o.secret.empty()) {
    keys.signer.secret = o.secret;
    return keys;
  }
  const char* env = std::getenv("EVENTQ_SECRET");
  if (env && *env) {
    check_secret("EVENTQ_SECRET", env);
    keys.signer.secret = env;
    return keys;
  }
  keys.signer.secret = store.get_or_insert_property(k_secret_property, random_secret());
  if (keys.signer.secret.size() < k_min_secret_bytes) {
    throw error(errc::schema_invalid, "the database secret (Properties 'EQSecret') is only " +
                                          std::to_string(keys.signer.secret.size()) +
                                          " bytes long; delete the row to have a new one made");
  }
  return keys;
}

void validate(const options& o) {
  check_name("options::instance_name", o.instance_name);
  validate_keys(o);
  auto positive = [](auto d, const char* name) {
    if (d.count() <= 0) {
      throw error(errc::invalid_argument, std::string("options::") + name + " must be positive");
    }
  };
  positive(o.poll_interval, "poll_interval");
  positive(o.change_check_interval, "change_check_interval");
  positive(o.min_retry_backoff, "min_retry_backoff");
  positive(o.max_retry_backoff, "max_retry_backoff");
  positive(o.retention, "retention");
  positive(o.lease, "lease");
  positive(o.cleanup_max_age, "cleanup_max_age");
  if (o.lease < std::chrono::milliseconds(300)) {
    throw error(errc::invalid_argument,
                "options::lease must be at least 300 ms (it is renewed every third of it)");
  }
  if (o.cleanup_interval.count() < 0 || o.cleanup_pause.count() < 0) {
    throw error(errc::invalid_argument,
                "options::cleanup_interval and options::cleanup_pause must not be negative");
  }
  if (o.busy_timeout.count() < 0) {
    throw error(errc::invalid_argument, "options::busy_timeout must not be negative");
  }
  if (o.page_size < 1 || o.page_size > 100000) {
    throw error(errc::invalid_argument, "options::page_size must be between 1 and 100000");
  }
  if (o.cleanup_batch_size < 1) {
    throw error(errc::invalid_argument, "options::cleanup_batch_size must be at least 1");
  }
  if (o.max_payload_bytes < 2) {
    throw error(errc::invalid_argument, "options::max_payload_bytes must be at least 2 ({})");
  }
  if (o.min_retry_backoff > o.max_retry_backoff) {
    throw error(errc::invalid_argument,
                "options::min_retry_backoff must not exceed options::max_retry_backoff");
  }
}

options with_logger(options o) {
  if (!o.logger) {
    o.logger = [name = o.instance_name](log_level level, std::string_view msg) {
      if (level < log_level::warning) return;
      std::cerr << "eventq[" << name << "] " << (level == log_level::error ? "error" : "warning")
                << ": " << msg << '\n';
    };
  }
  return o;
}

void check_payload(const outgoing_event& e, std::size_t max_payload_bytes) {
  if (e.data.size() > max_payload_bytes) {
    throw error(errc::payload_too_large,
                "event of type '" + e.type + "' has a " + std::to_string(e.data.size()) +
                    "-byte payload; the limit is " + std::to_string(max_payload_bytes) +
                    " bytes (options::max_payload_bytes): send an identifier of what "
                    "changed, not the data itself");
  }
}

}  // namespace eventq::detail
