#pragma once
// `strata serve`: an Ollama- and OpenAI-compatible HTTP server over the engine.
#include <string>

#include "server/model_registry.h"

namespace strata::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 11434;
  RegistryOptions registry;  // connections, bodies and timeouts are bounded by server/limits.h
};

// Parses OLLAMA_HOST's forms: "host", "host:port", ":port", "[::1]:port", "http://host:port/".
// The port defaults to 11434 and the host to 127.0.0.1. Throws strata::Error for a bad port.
void parse_host(const std::string& text, std::string& host, int& port);

// Serves until the process ends; throws strata::Error when the address cannot be bound.
void run_server(const ServerOptions& options);

}  // namespace strata::server
