#pragma once
// `strata serve`: an Ollama- and OpenAI-compatible HTTP server over the engine.
#include <memory>
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

// The server as an object: its registry and HTTP routes, started and stopped in-process (tests
// run one on port 0 and talk to it over loopback).
class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();  // stop()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds (port 0: a free port chosen by the system) and serves on a background thread; returns
  // the port. Throws strata::Error when the address cannot be bound.
  int start();
  // Stops accepting connections, waits for the ones being served, and joins the thread. The
  // registry (and its loaded models) lives until the Server goes.
  void stop();
  // Blocks until the server stops; throws strata::Error when it stopped without stop().
  void wait();
  int port() const;
  ModelRegistry& registry();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Serves until the process ends; throws strata::Error when the address cannot be bound.
void run_server(const ServerOptions& options);

}  // namespace strata::server
