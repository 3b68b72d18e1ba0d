#include "backends.h"

#include <regex>

#include "eventq/error.h"
#include "sqlite/sqlite_storage.h"

namespace eventq::detail {

namespace {
bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}
}  // namespace

std::string redact_url(std::string_view url) {
  static const std::regex userinfo(R"(://([^:/@]*):[^@/]*@)");
  static const std::regex keyword(R"((password\s*=\s*)('[^']*'|\S+))", std::regex::icase);
  std::string s = std::regex_replace(std::string(url), userinfo, "://$1:***@");
  return std::regex_replace(s, keyword, "$1***");
}

std::unique_ptr<storage> open_storage(std::string_view url, const options& opts) {
  if (starts_with(url, "sqlite:")) {
    std::string_view path = url.substr(7);
    if (starts_with(path, "//")) path.remove_prefix(2);
    // Parameters after '?': watch=on|off (off: no wake-ups from other processes or queue
    // objects, polling every poll_interval only).
    bool watch = true;
    if (auto q = path.find('?'); q != std::string_view::npos) {
      std::string_view params = path.substr(q + 1);
      path = path.substr(0, q);
      while (!params.empty()) {
        auto amp = params.find('&');
        std::string_view p = params.substr(0, amp);
        params = amp == std::string_view::npos ? std::string_view{} : params.substr(amp + 1);
        if (p == "watch=on" || p == "watch=true" || p == "watch=1") {
          watch = true;
        } else if (p == "watch=off" || p == "watch=false" || p == "watch=0") {
          watch = false;
        } else {
          throw error(errc::invalid_url, "database URL '" + std::string(url) +
                                             "': unknown parameter '" + std::string(p) +
                                             "'; SQLite URLs take only watch=on|off, e.g. "
                                             "sqlite:/tmp/events.db?watch=off");
        }
      }
    }
    if (path.empty()) {
      throw error(errc::invalid_url, "database URL '" + std::string(url) +
                                         "' names no file: use sqlite:/path/to/events.db");
    }
    if (path == ":memory:" || starts_with(path, "file:")) {
      throw error(errc::invalid_url,
                  "database URL '" + std::string(url) +
                      "': in-memory and URI-style SQLite databases cannot be shared between "
                      "connections; give a file path, e.g. sqlite:/tmp/events.db");
    }
    return std::make_unique<sqlite::sqlite_storage>(std::string(path), opts, watch);
  }
  bool is_pg =
      starts_with(url, "postgresql://") || starts_with(url, "postgres://") ||
      (url.find('=') != std::string_view::npos && url.find("://") == std::string_view::npos);
  if (is_pg) {
#ifdef EVENTQ_HAVE_POSTGRES
    return open_postgres(url, opts);
#else
    throw error(errc::invalid_url, "database URL '" + redact_url(url) +
                                       "' is PostgreSQL, but this eventq was built without "
                                       "PostgreSQL support (EVENTQ_WITH_POSTGRES=OFF)");
#endif
  }
  throw error(errc::invalid_url,
              "unsupported database URL '" + redact_url(url) +
                  "': expected sqlite:/path/to/events.db, postgresql://user@host:5432/dbname "
                  "or a libpq 'host=... dbname=...' string");
}

}  // namespace eventq::detail
