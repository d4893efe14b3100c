#include "server/http_util.h"

#include <ctime>

#include "server/errors.h"
#include "util/error.h"

namespace strata::server {

namespace {
const char* openai_error_type(int status) {
  switch (status) {
    case 400:
      return "invalid_request_error";
    case 404:
      return "not_found_error";
    default:
      return "api_error";
  }
}
}  // namespace

std::string error_body(ErrorStyle style, int status, const std::string& message) {
  if (style == ErrorStyle::ollama) return dump(json{{"error", message}});
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
    try {
      handler(req, res);
    } catch (const HttpError& e) {
      send_error(res, style, e.status(), e.what());
    } catch (const std::exception& e) {
      send_error(res, style, 500, e.what());
    } catch (...) {
      send_error(res, style, 500, "internal error");
    }
  };
}

void send_stream(httplib::Response& res, const char* content_type, std::function<void(const Emit&)> body) {
  res.status = 200;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(content_type, [body = std::move(body)](size_t, httplib::DataSink& sink) {
    bool connected = true;
    body([&](const std::string& chunk) {
      if (connected && !sink.write(chunk.data(), chunk.size())) connected = false;
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
