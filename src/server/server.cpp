#include "server/server.h"

#include <csignal>
#include <cstdio>

#include "server/api.h"
#include "server/http_util.h"
#include "server/metrics.h"
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

void run_server(const ServerOptions& options) {
  std::signal(SIGPIPE, SIG_IGN);  // a client gone mid-stream is a failed write, not a dead server
  ModelRegistry registry(options.registry);
  httplib::Server http;
  const int n_threads = options.n_http_threads;
  http.new_task_queue = [n_threads] { return new httplib::ThreadPool(size_t(n_threads)); };
  http.set_payload_max_length(options.max_body_bytes);
  http.set_read_timeout(60, 0);
  http.set_write_timeout(30, 0);

  add_ollama_routes(http, registry);
  add_openai_routes(http, registry);
  add_embedding_routes(http, registry);
  add_management_routes(http, registry);

  // httplib's own answers (unknown route, body too large, bad request line) get a JSON body too.
  const size_t max_body_mib = options.max_body_bytes >> 20;
  http.set_error_handler(
      httplib::Server::HandlerWithResponse([max_body_mib](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty() || res.content_provider_) return httplib::Server::HandlerResponse::Unhandled;
        const ErrorStyle style = req.path.rfind("/v1/", 0) == 0 ? ErrorStyle::openai : ErrorStyle::ollama;
        std::string message = "HTTP error " + std::to_string(res.status);
        if (res.status == 400) message = "bad request";
        if (res.status == 404) message = "no route for " + req.method + " " + req.path;
        if (res.status == 405) message = "method not allowed";
        if (res.status == 413) message = "request body is larger than " + std::to_string(max_body_mib) + " MiB";
        if (res.status == 414) message = "request URI too long";
        res.set_content(error_body(style, res.status, message), "application/json; charset=utf-8");
        return httplib::Server::HandlerResponse::Handled;
      }));
  http.set_exception_handler([](const httplib::Request& req, httplib::Response& res, std::exception_ptr) {
    const ErrorStyle style = req.path.rfind("/v1/", 0) == 0 ? ErrorStyle::openai : ErrorStyle::ollama;
    send_error(res, style, 500, "internal error");
  });
  http.set_logger([](const httplib::Request& req, const httplib::Response& res) {
    metrics().record_request(req.method, req.path, res.status);
    std::fprintf(stderr, "%s %s %s %d\n", rfc3339(std::chrono::system_clock::now()).c_str(), req.method.c_str(),
                 req.path.c_str(), res.status);
  });

  int port = options.port;
  if (port == 0) {
    port = http.bind_to_any_port(options.host);
    if (port < 0) throw Error("cannot listen on " + options.host);
  } else if (!http.bind_to_port(options.host, port)) {
    throw Error("cannot listen on " + options.host + ":" + std::to_string(port) + " (in use, or not a local address?)");
  }
  const std::string where = options.registry.single_file.empty() ? "models from " + options.registry.models_dir
                                                                 : "model " + options.registry.single_file;
  std::fprintf(stderr, "strata serve: listening on http://%s:%d (%s)\n", options.host.c_str(), port, where.c_str());
  if (!http.listen_after_bind()) throw Error("the server stopped unexpectedly");
}

}  // namespace strata::server
