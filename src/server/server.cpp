#include "server/server.h"

#include <sys/socket.h>

#include <atomic>
#include <thread>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "server/api.h"
#include "server/connection.h"
#include "server/http_util.h"
#include "server/limits.h"
#include "server/metrics.h"
#include "server/origin.h"
#include "util/error.h"

namespace strata::server {

void parse_host(const std::string& text, std::string& host, int& port) {
  std::string s = text;
  if (const size_t scheme = s.find("://"); scheme != std::string::npos) s.erase(0, scheme + 3);
  if (const size_t slash = s.find('/'); slash != std::string::npos) s.resize(slash);
  std::string port_text;
  if (!s.empty() && s[0] == '[') {  // [v6]:port
    const size_t close = s.find(']');
    if (close == std::string::npos) throw Error("invalid host \"" + text + "\": missing ']'");
    host = s.substr(1, close - 1);
    if (close + 1 < s.size() && s[close + 1] == ':') port_text = s.substr(close + 2);
  } else if (const size_t colon = s.rfind(':'); colon != std::string::npos && s.find(':') == colon) {
    host = s.substr(0, colon);
    port_text = s.substr(colon + 1);
  } else {
    host = s;
  }
  if (host.empty()) host = "127.0.0.1";
  port = 11434;
  if (!port_text.empty()) {
    size_t used = 0;
    int p = -1;
    try {
      p = std::stoi(port_text, &used);
    } catch (const std::exception&) {
    }
    if (used != port_text.size() || p < 0 || p > 65535)
      throw Error("invalid port \"" + port_text + "\" in host \"" + text + "\"");
    port = p;
  }
}

namespace {

ErrorStyle style_for(const httplib::Request& req) {
  return req.path.rfind("/v1/", 0) == 0 ? ErrorStyle::openai : ErrorStyle::ollama;
}

// Cross-site requests (origin.h): refused before anything reads their body; a preflight from an
// allowed origin is answered here.
httplib::Server::HandlerResponse check_origin(const OriginPolicy& policy, const httplib::Request& req,
                                              httplib::Response& res) {
  const std::string host = req.get_header_value("Host");
  const std::string origin = req.get_header_value("Origin");
  if (!host_allowed(policy, host)) {
    connection_close_after_response();
    send_error(res, style_for(req), 403,
               "host \"" + host + "\" is not allowed: the server listens on loopback and answers local names only");
    return httplib::Server::HandlerResponse::Handled;
  }
  if (!origin_allowed(policy, origin, host)) {
    connection_close_after_response();
    send_error(res, style_for(req), 403,
               "origin \"" + origin + "\" is not allowed (add it to OLLAMA_ORIGINS to let its pages use the server)");
    return httplib::Server::HandlerResponse::Handled;
  }
  if (!origin.empty()) {
    res.set_header("Access-Control-Allow-Origin", origin);
    res.set_header("Vary", "Origin");
  }
  if (req.method == "OPTIONS") {
    res.status = 204;
    res.set_header("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS");
    res.set_header("Access-Control-Allow-Headers",
                   "Authorization, Content-Type, User-Agent, Accept, X-Requested-With, OpenAI-Beta, "
                   "x-stainless-arch, x-stainless-async, x-stainless-custom-poll-interval, x-stainless-helper-method, "
                   "x-stainless-lang, x-stainless-os, x-stainless-package-version, x-stainless-poll-helper, "
                   "x-stainless-retry-count, x-stainless-runtime, x-stainless-runtime-version, x-stainless-timeout");
    res.set_header("Access-Control-Max-Age", "43200");
    return httplib::Server::HandlerResponse::Handled;
  }
  // Bodies are JSON whatever their declared type, as Ollama reads them (`curl -d` sends
  // application/x-www-form-urlencoded). httplib would parse a form body into parameters, refuse
  // one over 8 KiB with a 413 (on routes without a body reader: every GET route and unknown paths)
  // and call multipart parsers no route has; without the type, a body is only bytes, bounded by
  // limits::kMaxBodyBytes.
  if (req.has_header("Content-Type")) {
    auto& mutable_req = const_cast<httplib::Request&>(req);  // httplib's own Request, mutable until routed
    mutable_req.headers.erase("Content-Type");
  }
  connection_reading_body();
  return httplib::Server::HandlerResponse::Unhandled;
}

// SO_REUSEADDR only: httplib's default adds SO_REUSEPORT, with which a second server on a port
// in use starts silently and shares it.
void exclusive_port(socket_t sock) {
  int yes = 1;
  setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
}

}  // namespace

struct Server::Impl {
  explicit Impl(ServerOptions o) : options(std::move(o)), registry(options.registry) {}
  ServerOptions options;
  ModelRegistry registry;
  BoundedServer http;
  std::thread thread;
  int port = -1;
  std::atomic<bool> listened_ok{false};
  std::atomic<bool> thread_done{false};
  std::atomic<bool> stopping{false};
};

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {
  BoundedServer& http = impl_->http;
  ModelRegistry& registry = impl_->registry;
  http.set_socket_options(exclusive_port);
  const OriginPolicy policy = make_origin_policy(impl_->options.host, std::getenv("OLLAMA_ORIGINS"));
  http.set_pre_routing_handler(
      [policy](const httplib::Request& req, httplib::Response& res) { return check_origin(policy, req, res); });

  add_ollama_routes(http, registry);
  add_openai_routes(http, registry);
  add_responses_routes(http, registry);
  add_anthropic_routes(http, registry);
  add_embedding_routes(http, registry);
  add_management_routes(http, registry);

  // httplib's own answers (unknown route, body too large, bad request line) get a JSON body too.
  http.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty() || res.content_provider_) return httplib::Server::HandlerResponse::Unhandled;
    if (connection_timed_out()) {  // httplib calls a request that stopped arriving a bad one
      res.status = 408;
      connection_close_after_response();
      res.set_header("Connection", "close");
    }
    std::string message = "HTTP error " + std::to_string(res.status);
    if (res.status == 400) message = "bad request";
    if (res.status == 404) message = "no route for " + req.method + " " + req.path;
    if (res.status == 405) message = "method not allowed";
    if (res.status == 413)
      message = "the request body" +
                (req.has_header("Content-Length") ? " (" + req.get_header_value("Content-Length") + " bytes)"
                                                  : std::string()) +
                " is larger than " + std::to_string(limits::kMaxBodyBytes >> 20) + " MiB (the server's limit)";
    if (res.status == 414) message = "request URI too long";
    if (res.status == 408) message = connection_timeout_message();
    res.set_content(error_body(style_for(req), res.status, message), "application/json; charset=utf-8");
    return httplib::Server::HandlerResponse::Handled;
  }));
  http.set_exception_handler([](const httplib::Request& req, httplib::Response& res, std::exception_ptr) {
    send_error(res, style_for(req), 500, "internal error");
  });
  http.set_logger([](const httplib::Request& req, const httplib::Response& res) {
    metrics().record_request(req.method, req.path, res.status);
    std::fprintf(stderr, "%s %s %s %d\n", rfc3339(std::chrono::system_clock::now()).c_str(), req.method.c_str(),
                 req.path.c_str(), res.status);
  });
}

Server::~Server() { stop(); }

int Server::start() {
  std::signal(SIGPIPE, SIG_IGN);  // a client gone mid-stream is a failed write, not a dead server
  const ServerOptions& options = impl_->options;
  errno = 0;
  const int port = impl_->http.bind_bounded(options.host, options.port);
  if (port < 0) {
    const int err = errno;
    throw Error("cannot listen on " + options.host + ":" + std::to_string(options.port) + ": " +
                (err == EADDRINUSE ? std::string("the port is in use (is another server running?)")
                 : err             ? std::string(std::strerror(err))
                                   : std::string("not a local address?")));
  }
  impl_->port = port;
  const std::string where = options.registry.single_file.empty() ? "models from " + options.registry.models_dir
                                                                 : "model " + options.registry.single_file;
  std::fprintf(stderr, "strata serve: listening on http://%s:%d (%s)\n", options.host.c_str(), port, where.c_str());
  impl_->thread = std::thread([impl = impl_.get()] {
    impl->listened_ok = impl->http.listen_after_bind();
    impl->thread_done = true;
  });
  // httplib's stop() stops only a server that is running: wait until it is (or its thread ended).
  while (!impl_->http.is_running() && !impl_->thread_done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return port;
}

void Server::stop() {
  impl_->stopping = true;
  impl_->http.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

void Server::wait() {
  if (impl_->thread.joinable()) impl_->thread.join();
  if (!impl_->listened_ok && !impl_->stopping) throw Error("the server stopped unexpectedly");
}

int Server::port() const { return impl_->port; }

ModelRegistry& Server::registry() { return impl_->registry; }

void run_server(const ServerOptions& options) {
  Server server(options);
  server.start();
  server.wait();
}

}  // namespace strata::server
