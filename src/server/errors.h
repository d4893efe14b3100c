#pragma once
// An error the server answers with an HTTP status: handlers throw it, the route wrapper turns it
// into the API's error shape (Ollama: {"error": "..."}; OpenAI: {"error": {"message", "type"}}).
#include <stdexcept>
#include <string>

namespace strata::server {

class HttpError : public std::runtime_error {
 public:
  HttpError(int status, const std::string& what) : std::runtime_error(what), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

inline HttpError bad_request(const std::string& what) { return HttpError(400, what); }

}  // namespace strata::server
