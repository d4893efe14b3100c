#pragma once
// Which web pages and host names may use the server, as Ollama decides (server/routes.go and
// envconfig.AllowedOrigins): a browser request whose Origin is not allowed gets 403, so a page
// the user visits cannot drive the server; when the server listens on loopback, a Host header
// that is not a local name gets 403, so DNS rebinding cannot reach it either.
#include <string>
#include <vector>

namespace strata::server {

struct OriginPolicy {
  // Patterns with at most one '*' ("http://localhost:*", "app://*", or "*" for any origin):
  // OLLAMA_ORIGINS' comma-separated entries, then the defaults (loopback on any port over
  // http and https, and the app://, file://, tauri://, vscode-webview:// and vscode-file:// schemes).
  std::vector<std::string> allowed_origins;
  bool check_host = true;  // the server listens on loopback
};

// The policy for a server listening on `listen_host`; origins_env is OLLAMA_ORIGINS (may be null).
OriginPolicy make_origin_policy(const std::string& listen_host, const char* origins_env);

// A request's Origin header (empty: not a cross-origin browser request) is allowed: empty, the
// same origin as its Host, or one that matches a pattern.
bool origin_allowed(const OriginPolicy& policy, const std::string& origin, const std::string& host_header);
// A request's Host header is allowed: always when the server does not listen on loopback, else
// a loopback, private or unspecified address, "localhost", this machine's name, or a name under
// .localhost, .local or .internal.
bool host_allowed(const OriginPolicy& policy, const std::string& host_header);

}  // namespace strata::server
