// strata serve [FILE.gguf]: the Ollama- and OpenAI-compatible HTTP server (src/server/).
#include <cstdlib>

#include "commands.h"
#include "options.h"
#include "gguf/gguf.h"
#include "model/config.h"
#include "ops/attention.h"
#include "server/server.h"
#include "tier/plan/plan.h"
#include "util/error.h"

namespace strata::app {

namespace {
struct ServeOptions {
  std::string model_file;
  std::string models_dir;
  std::string host;
  std::string mem;
  std::string keep_alive;
  server::ServerOptions server;
};
}  // namespace

std::string default_models_dir() {
  const char* home = std::getenv("HOME");
  return std::string(home ? home : ".") + "/.strata/models";
}

void add_serve_command(CLI::App& app) {
  auto opts = std::make_shared<ServeOptions>();
  CLI::App* cmd = app.add_subcommand("serve", "serve models over Ollama's and OpenAI's HTTP APIs");
  cmd->add_option("model", opts->model_file, "serve only this GGUF file (named by its file stem)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--models", opts->models_dir, "folder of *.gguf models (default: ~/.strata/models)");
  cmd->add_option("--host", opts->host,
                  "address to listen on: host, host:port or http://host:port "
                  "(default: $OLLAMA_HOST, else 127.0.0.1:11434)");
  server::RegistryOptions& reg = opts->server.registry;
  cmd->add_option("-c,--ctx", reg.session.n_ctx, "default context length (tokens; options.num_ctx overrides)")
      ->capture_default_str();
  cmd->add_option("-b,--batch", reg.session.n_batch, "prompt tokens per forward pass")->capture_default_str();
  cmd->add_option("-t,--threads", reg.session.n_threads, "threads per generation (default: physical cores)");
  add_kv_type_option(cmd, reg.session.kv_type, reg.kv_type_auto);
  add_device_options(cmd, reg.session);
  cmd->add_option_function<std::string>(
      "--gpu-mem",
      [&reg](const std::string& size) {
        reg.gpu_mem = tier::parse_size(size);
        reg.session.device = Device::gpu;
        reg.session.routed_experts_on_gpu = false;
      },
      "MoE on a GPU too small for the model (as run and bench): VRAM a model's session may use (e.g. 8G); "
      "its routed experts live in host RAM, a VRAM cache holds some, the CPU computes misses");
  cmd->add_option("--gpu-copy-share", reg.gpu_copy_share,
                  "with --gpu-mem: share of a token's expert misses copied to the GPU (default: the plan's)");
  cmd->add_option("--max-queue", reg.max_queue, "requests per model running or waiting; more get 503")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option(
      "--mem", opts->mem,
      "memory budget for loaded models (e.g. 8G; default: what is available); larger models stream from the SSD");
  cmd->add_option("--import-from", reg.import_dirs,
                  "a folder whose GGUF files /api/create and /api/pull may take by path (repeatable); "
                  "no request reads files outside it and the models folder");
  cmd->add_option("--keep-alive", opts->keep_alive,
                  "how long a model stays loaded after its last request: a duration (5m, 1h30m) or seconds; "
                  "negative: forever (default: $OLLAMA_KEEP_ALIVE, else 5m)");
  cmd->callback([opts] {
    std::string host = opts->host;
    if (host.empty()) {
      const char* env = std::getenv("OLLAMA_HOST");
      host = env && *env ? env : "127.0.0.1:11434";
    }
    server::parse_host(host, opts->server.host, opts->server.port);
    if (!opts->mem.empty()) opts->server.registry.budget_bytes = tier::parse_size(opts->mem);
    if (opts->keep_alive.empty()) {
      opts->server.registry.keep_alive_s = server::keep_alive_from_env(std::getenv("OLLAMA_KEEP_ALIVE"));
    } else if (auto s = server::parse_duration_seconds(opts->keep_alive)) {
      opts->server.registry.keep_alive_s = *s;
    } else {
      throw Error("--keep-alive \"" + opts->keep_alive + "\" is not a duration (like 5m, 1h30m, -1 or 300)");
    }
    // A single model is checked before the server starts: an architecture the catalogue does not
    // know is refused now, naming it, not at the first request.
    if (!opts->model_file.empty()) load_config(*gguf::File::open(opts->model_file));
    opts->server.registry.single_file = opts->model_file;
    opts->server.registry.models_dir = opts->models_dir.empty() ? default_models_dir() : opts->models_dir;
    server::run_server(opts->server);
  });
}

}  // namespace strata::app
