#pragma once
// The server's errors are domain errors: a kind (what went wrong, in the server's own terms) and a
// message naming the model, file, field or limit concerned. The parts (model catalogue, memory
// arbiter, model host, keep-alive reaper) throw them without knowing HTTP; only the API layer
// turns a kind into a status code, through one table (http_status.cpp), and into the API's error
// shape (Ollama: {"error": "..."}; OpenAI: {"error": {"message", "type"}}).
#include <stdexcept>
#include <string>

namespace strata::server {

enum class ErrorKind {
  bad_request,      // the request is malformed or names something invalid
  not_found,        // no such model
  forbidden,        // the request may not do this (origin, host)
  too_large,        // the body passes a size limit
  timeout,          // the request did not arrive in time
  does_not_fit,     // the model or the context does not fit the memory budget
  load_failed,      // the model file could not be loaded
  busy,             // too many requests wait for the model; try again
  conflict,         // another request is doing this already (a pull of the same model)
  upstream_failed,  // a source the server fetches from failed (a pull's HTTP server)
  no_space,         // the disk has no room for what the request would write
  not_implemented,  // a feature strata serve does not have
  internal,         // anything else
};

class ServerError : public std::runtime_error {
 public:
  ServerError(ErrorKind kind, const std::string& what) : std::runtime_error(what), kind_(kind) {}
  // The API layer's spelling, for a handler that answers with a given HTTP status: the kind is
  // the status's in http_status.cpp's table (internal for a status it does not list).
  ServerError(int http_status, const std::string& what);
  ErrorKind kind() const { return kind_; }
  // The HTTP status the API layer answers this error with (http_status.cpp's table).
  int status() const;

 private:
  ErrorKind kind_;
};

// The name API handlers throw by status; one type with ServerError, so a handler's catch of
// either sees every server error.
using HttpError = ServerError;

inline ServerError bad_request(const std::string& what) { return {ErrorKind::bad_request, what}; }
inline ServerError not_found(const std::string& what) { return {ErrorKind::not_found, what}; }
inline ServerError does_not_fit(const std::string& what) { return {ErrorKind::does_not_fit, what}; }
inline ServerError load_failed(const std::string& what) { return {ErrorKind::load_failed, what}; }
inline ServerError busy(const std::string& what) { return {ErrorKind::busy, what}; }
inline ServerError not_implemented(const std::string& what) { return {ErrorKind::not_implemented, what}; }
inline ServerError internal_error(const std::string& what) { return {ErrorKind::internal, what}; }

}  // namespace strata::server
