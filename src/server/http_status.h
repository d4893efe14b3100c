#pragma once
// The API layer's one table from a domain error's kind (errors.h) to its HTTP status and to the
// OpenAI error type; nothing else in the server knows status codes for errors.
#include "server/errors.h"

namespace strata::server {

int http_status(ErrorKind kind);
// The kind a status stands for (ServerError's status constructor); internal for one not listed.
ErrorKind error_kind_for_status(int status);
// OpenAI's error "type" for a status: invalid_request_error, not_found_error, api_error, ...
const char* openai_error_type(int status);

}  // namespace strata::server
