#pragma once
// /api/pull with an http(s):// URL (download.h does the transfer): Ollama's pull answer, either one
// {"status": "success"} or an NDJSON stream of status lines and progress lines carrying digest,
// total and completed, ending with "success" or {"error": ...}.
#include <httplib.h>

#include "server/model_registry.h"

namespace strata::server {

void pull_from_url(ModelRegistry& registry, const std::string& url, bool stream, httplib::Response& res);

}  // namespace strata::server
