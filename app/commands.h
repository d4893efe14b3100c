#pragma once
// Each `strata` subcommand registers itself on the CLI11 app; one file per command (app/cmd_*.cpp).
#include <CLI/CLI.hpp>
#include <string>

namespace strata::app {

void add_inspect_command(CLI::App& app);
void add_run_command(CLI::App& app);
void add_chat_command(CLI::App& app);
void add_forge_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_logits_command(CLI::App& app);
void add_perplexity_command(CLI::App& app);
void add_template_command(CLI::App& app);
void add_serve_command(CLI::App& app);
void add_list_command(CLI::App& app);  // cmd_client.cpp
void add_ps_command(CLI::App& app);    // cmd_client.cpp
void add_iobench_command(CLI::App& app);
void add_pull_command(CLI::App& app);  // cmd_pull.cpp

// The models folder `strata serve` and `strata pull` use by default: ~/.strata/models.
std::string default_models_dir();

// The server the client commands talk to (cmd_client.cpp): $OLLAMA_HOST in Ollama's syntax,
// default 127.0.0.1:11434; a wildcard listen address means this machine.
struct ServerAddress {
  std::string host;
  int port = 0;
  std::string text() const { return host + ":" + std::to_string(port); }
};
ServerAddress server_address();
void add_plan_command(CLI::App& app);

}  // namespace strata::app
