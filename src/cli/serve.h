// `eventq serve`: the status page, /metrics and /api/status over HTTP (cpp-httplib).
#pragma once

#include <atomic>
#include <string>

#include "eventq/status.h"

namespace eventq::cli {

struct serve_settings {
  std::string listen = "127.0.0.1:9187";  ///< host:port; port 0 picks a free one
  std::string token;                      ///< bearer token; required unless loopback
  int refresh_seconds = 5;                ///< the page reloads itself this often
};

/// Throws std::invalid_argument (a usage error) for a malformed --listen, or a non-loopback
/// one without a token. Returns {host, port}.
std::pair<std::string, int> check_listen(const serve_settings& s);

/// Serves until `stop` becomes true; prints "listening on http://HOST:PORT/" once bound.
/// Returns the exit status (1: could not bind).
int serve(status_reader& reader, const serve_settings& s, const std::atomic<bool>& stop);

}  // namespace eventq::cli
