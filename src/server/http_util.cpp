#include "server/http_util.h"

#include <ctime>

#include "server/connection.h"
#include "server/errors.h"
#include "server/http_status.h"
#include "server/limits.h"
#include "util/error.h"

namespace strata::server {

std::string error_body(ErrorStyle style, int status, const std::string& message) {
  if (style == ErrorStyle::ollama) return dump(json{{"error", message}});
  if (style == ErrorStyle::anthropic)
    return dump(json{{"type", "error"}, {"error", {{"type", openai_error_type(status)}, {"message", message}}}});
  return dump(json{
      {"error", {{"message", message}, {"type", openai_error_type(status)}, {"param", nullptr}, {"code", nullptr}}}});
}

void send_json(httplib::Response& res, const json& body, int status) {
  res.status = status;
  res.set_content(dump(body), "application/json; charset=utf-8");
}

void send_error(httplib::Response& res, ErrorStyle style, int status, const std::string& message) {
  res.status = status;
  res.set_content(error_body(style, status, message), "application/json; charset=utf-8");
}

httplib::Server::Handler guarded(ErrorStyle style, Handler handler) {
  return [style, handler = std::move(handler)](const httplib::Request& req, httplib::Response& res) {
    connection_handling();
    try {
      handler(req, res);
    } catch (const ServerError& e) {
      send_error(res, style, http_status(e.kind()), e.what());
    } catch (const json::exception& e) {  // a value the request gave that JSON cannot hold
      send_error(res, style, 400, std::string("invalid request: ") + e.what());
    } catch (const std::out_of_range&) {
      send_error(res, style, 400, "a number in the request is out of range");
    } catch (const std::invalid_argument&) {
      send_error(res, style, 400, "a value in the request is invalid");
    } catch (const std::exception& e) {
      send_error(res, style, 500, e.what());
    } catch (...) {
      send_error(res, style, 500, "internal error");
    }
  };
}

void add_route_with_body(httplib::Server& http, const char* method, const std::string& pattern, ErrorStyle style,
                         Handler handler) {
  auto run = guarded(style, std::move(handler));
  auto read_then_run = [style, run](const httplib::Request& req, httplib::Response& res,
                                    const httplib::ContentReader& read) {
    std::string body;
    bool too_large = false;
    const bool ok = read([&](const char* data, size_t n) {
      if (body.size() + n > limits::kMaxBodyBytes) return !(too_large = true);
      body.append(data, n);
      return true;
    });
    const bool timed_out = connection_timed_out();
    connection_handling();
    if (!ok || too_large) {
      connection_close_after_response();  // what was not read must not pass for the next request
      res.set_header("Connection", "close");
      if (too_large || res.status == 413)
        return send_error(res, style, 413,
                          "the request body is larger than " + std::to_string(limits::kMaxBodyBytes >> 20) +
                              " MiB (the server's limit)");
      if (timed_out) return send_error(res, style, 408, connection_timeout_message());
      return send_error(
          res, style, 400,
          "the request body could not be read (it is shorter than its Content-Length, or its chunks are malformed)");
    }
    // httplib hands handlers a const Request it owns as a mutable local; the body read above
    // goes where every handler looks for it.
    const_cast<httplib::Request&>(req).body = std::move(body);
    run(req, res);
  };
  if (std::string(method) == "DELETE")
    http.Delete(pattern, read_then_run);
  else
    http.Post(pattern, read_then_run);
}

void send_stream(httplib::Response& res, const char* content_type, std::function<void(const Emit&)> body) {
  res.status = 200;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(content_type, [body = std::move(body)](size_t, httplib::DataSink& sink) {
    bool connected = true;
    body([&](const std::string& chunk) {
      if (connected && (!client_connected() || !sink.write(chunk.data(), chunk.size()))) connected = false;
      return connected;
    });
    if (connected) sink.done();
    return connected;  // false: httplib drops the connection
  });
}

std::string rfc3339(std::chrono::system_clock::time_point t) {
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
  const std::time_t secs = std::time_t(us / 1000000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  const size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%06lldZ", (long long)(us % 1000000));
  return buf;
}

int64_t unix_seconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

}  // namespace strata::server
