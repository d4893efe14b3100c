#pragma once
// What the two APIs share on the HTTP side: error bodies, JSON and streamed responses, times.
#include <httplib.h>

#include <chrono>
#include <functional>
#include <string>

#include "server/json_fields.h"

namespace strata::server {

enum class ErrorStyle {
  ollama,     // {"error": "message"}
  openai,     // {"error": {"message", "type", "param", "code"}}
  anthropic,  // {"type": "error", "error": {"type", "message"}}
};

std::string error_body(ErrorStyle style, int status, const std::string& message);
void send_json(httplib::Response& res, const json& body, int status = 200);
void send_error(httplib::Response& res, ErrorStyle style, int status, const std::string& message);

using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;
// Runs a handler, answering HttpError with its status, a bad argument with 400 and anything else
// with 500, in the API's error shape. No request can take the server down.
httplib::Server::Handler guarded(ErrorStyle style, Handler handler);
// Registers a route with a body ("POST" or "DELETE") whose guarded handler finds the body in
// req.body, read here within limits::kMaxBodyBytes whether it comes with a Content-Length or
// chunked (413 beyond, before more is buffered) and within limits::kBodyTimeoutSeconds (408).
void add_route_with_body(httplib::Server& http, const char* method, const std::string& pattern, ErrorStyle style,
                         Handler handler);

// Writes the chunks `body` produces as they come (NDJSON or server-sent events). `emit` returns
// false once the client is gone; body should then stop. body must not throw.
using Emit = std::function<bool(const std::string&)>;
void send_stream(httplib::Response& res, const char* content_type, std::function<void(const Emit&)> body);

// RFC 3339 in UTC with microseconds: 2024-05-01T12:00:00.123456Z.
std::string rfc3339(std::chrono::system_clock::time_point t);
int64_t unix_seconds(std::chrono::system_clock::time_point t);
inline int64_t to_ns(double seconds) { return int64_t(seconds * 1e9); }

}  // namespace strata::server
