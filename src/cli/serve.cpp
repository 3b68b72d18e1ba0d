#include "serve.h"

#include <httplib.h>

#include <iostream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "status_page.h"

namespace eventq::cli {

namespace {

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

// Compares without stopping at the first difference, so that timing tells nothing.
bool same_secret(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  }
  return diff == 0;
}

}  // namespace

std::pair<std::string, int> check_listen(const serve_settings& s) {
  auto colon = s.listen.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.listen.size()) {
    throw std::invalid_argument("--listen '" + s.listen +
                                "' is not HOST:PORT (e.g. 127.0.0.1:9187, [::1]:9187)");
  }
  std::string host = s.listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  int port = 0;
  for (char c : s.listen.substr(colon + 1)) {
    if (c < '0' || c > '9' || port > 65535) {
      throw std::invalid_argument("--listen '" + s.listen + "': the port is not a number");
    }
    port = port * 10 + (c - '0');
  }
  if (port > 65535) throw std::invalid_argument("--listen '" + s.listen + "': port over 65535");
  if (!is_loopback(host) && s.token.empty()) {
    throw std::invalid_argument(
        "--listen " + s.listen +
        " is not a loopback address: anyone who reaches it would see the farm; pass --token "
        "SECRET (or set EVENTQ_SERVE_TOKEN) and send 'Authorization: Bearer SECRET'");
  }
  return {host, port};
}

int serve(status_reader& reader, const serve_settings& s, const std::atomic<bool>& stop) {
  auto [host, port] = check_listen(s);
  httplib::Server svr;
  std::mutex log_mutex;
  std::string last_error;  // a failing database is reported once, not per request
  auto read = [&](httplib::Response& res) -> std::optional<farm_status> {
    try {
      auto st = reader.read();
      std::lock_guard lk(log_mutex);
      if (!last_error.empty()) std::cerr << "eventq: serve: the database answers again\n";
      last_error.clear();
      return st;
    } catch (const std::exception& e) {
      std::string msg = e.what();
      {
        std::lock_guard lk(log_mutex);
        if (msg != last_error) std::cerr << "eventq: serve: " << msg << '\n';
        last_error = msg;
      }
      res.status = 503;
      res.set_content("eventq: cannot read the database: " + msg + "\n", "text/plain");
      return std::nullopt;
    }
  };
  if (!s.token.empty()) {
    svr.set_pre_routing_handler([&s](const httplib::Request& req, httplib::Response& res) {
      auto auth = req.get_header_value("Authorization");
      if (auth.rfind("Bearer ", 0) == 0 && same_secret(auth.substr(7), s.token)) {
        return httplib::Server::HandlerResponse::Unhandled;
      }
      res.status = 401;
      res.set_header("WWW-Authenticate", "Bearer realm=\"eventq\"");
      res.set_content("eventq: send 'Authorization: Bearer <token>' (eventq serve --token)\n",
                      "text/plain");
      return httplib::Server::HandlerResponse::Handled;
    });
  }
  svr.Get("/", [&](const httplib::Request&, httplib::Response& res) {
    if (auto st = read(res)) {
      // No script runs on the page at all: escaping is the first defence, this the second.
      res.set_header("Content-Security-Policy",
                     "default-src 'none'; style-src 'unsafe-inline'; img-src data:");
      res.set_header("X-Content-Type-Options", "nosniff");
      res.set_content(render_status_page(*st, s.refresh_seconds), "text/html; charset=utf-8");
    }
  });
  svr.Get("/metrics", [&](const httplib::Request&, httplib::Response& res) {
    if (auto st = read(res)) {
      std::ostringstream out;
      write_prometheus(out, *st);
      res.set_content(out.str(), "text/plain; version=0.0.4; charset=utf-8");
    }
  });
  svr.Get("/api/status", [&](const httplib::Request&, httplib::Response& res) {
    if (auto st = read(res)) {
      // Texts from the tables (listeners' error messages above all) need not be UTF-8: replaced,
      // not thrown on.
      res.set_content(
          status_json(*st).dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n",
          "application/json");
    }
  });

  int bound = port == 0 ? svr.bind_to_any_port(host) : (svr.bind_to_port(host, port) ? port : -1);
  if (bound <= 0) {
    std::cerr << "eventq: serve: cannot listen on " << s.listen
              << " (address in use, or not an address of this host)\n";
    return 1;
  }
  std::string shown = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  std::cout << "listening on http://" << shown << ':' << bound << "/"
            << (s.token.empty() ? "" : " (requests need 'Authorization: Bearer <token>')")
            << std::endl;
  // stop() is a no-op until the server runs: repeat it until listening has ended.
  std::atomic<bool> done{false};
  std::thread watcher([&] {
    while (!done) {
      if (stop) svr.stop();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  bool ok = svr.listen_after_bind();
  done = true;
  watcher.join();
  return ok ? 0 : 1;
}

}  // namespace eventq::cli
