#include "server/http_status.h"

#include <iterator>

namespace strata::server {

namespace {

struct StatusRow {
  ErrorKind kind;
  int status;
  const char* openai_type;
};

// One row per kind; error_kind_for_status takes the first row with a status.
constexpr StatusRow kStatusTable[] = {
    {ErrorKind::bad_request, 400, "invalid_request_error"},
    {ErrorKind::not_found, 404, "not_found_error"},
    {ErrorKind::forbidden, 403, "api_error"},
    {ErrorKind::too_large, 413, "api_error"},
    {ErrorKind::timeout, 408, "api_error"},
    {ErrorKind::does_not_fit, 500, "api_error"},  // as Ollama answers a model that cannot be loaded
    {ErrorKind::load_failed, 500, "api_error"},
    {ErrorKind::busy, 503, "api_error"},
    {ErrorKind::conflict, 409, "api_error"},
    {ErrorKind::upstream_failed, 502, "api_error"},
    {ErrorKind::no_space, 507, "api_error"},
    {ErrorKind::not_implemented, 501, "api_error"},
    {ErrorKind::internal, 500, "api_error"},
};

const StatusRow& row_of(ErrorKind kind) {
  for (const StatusRow& r : kStatusTable)
    if (r.kind == kind) return r;
  return kStatusTable[std::size(kStatusTable) - 1];
}

}  // namespace

int http_status(ErrorKind kind) { return row_of(kind).status; }

ErrorKind error_kind_for_status(int status) {
  for (const StatusRow& r : kStatusTable)
    if (r.status == status) return r.kind;
  return ErrorKind::internal;
}

const char* openai_error_type(int status) {
  // Statuses only a handler gives (not a kind's) are api errors, as 5xx are.
  for (const StatusRow& r : kStatusTable)
    if (r.status == status) return r.openai_type;
  return "api_error";
}

ServerError::ServerError(int status, const std::string& what)
    : std::runtime_error(what), kind_(error_kind_for_status(status)) {}

int ServerError::status() const { return http_status(kind_); }

}  // namespace strata::server
