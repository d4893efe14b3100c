// `strata plan MODEL [--mem SIZE] [--ctx N] [--json]`: where each tensor would live under a memory
// budget and the token rate that placement allows (src/tier/plan/).
#include <iostream>
#include <memory>
#include <string>

#include "commands.h"
#include "gguf/gguf.h"
#include "model/config.h"
#include "model/model.h"
#include "runtime/session.h"
#include "ops/thread_pool.h"
#include "tier/plan/device_speed.h"
#include "tier/plan/plan.h"
#include "util/error.h"

namespace strata::app {

namespace {

// Where `run` and the other commands compute this model by default (--gpu / --cpu choose).
std::string device_line(const std::string& path, const tier::PlanInputs& in) {
  auto model = Model::load(path);
  SessionParams p;
  p.n_ctx = in.n_ctx;
  p.n_batch = in.n_batch;
  p.kv_type = in.kv_type;
  const std::string why = gpu_unsupported(*model, p);
  return why.empty() ? "device: GPU (cuda:0): weights, KV cache and activations in VRAM\n"
                     : "device: CPU (GPU not used: " + why + ")\n";
}

}  // namespace

void add_plan_command(CLI::App& app) {
  struct Options {
    std::string model;
    std::string mem;
    tier::PlanInputs inputs;
    double ram_gbps = 0, ssd_gbps = 0;
    int threads = 0;
    bool measure = false;
    bool json = false;
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("plan", "Plan what stays in memory and what streams from SSD under a budget");
  cmd->add_option("MODEL", opt->model, "GGUF file")->required();
  cmd->add_option("--mem", opt->mem, "memory budget, e.g. 8G (default: available memory less a margin)");
  cmd->add_option("-c,--ctx", opt->inputs.n_ctx, "context length the KV cache is sized for")->capture_default_str();
  cmd->add_option("-b,--batch", opt->inputs.n_batch, "prompt tokens per forward pass")->capture_default_str();
  cmd->add_option("--ram-bw", opt->ram_gbps, "RAM bandwidth, GB/s (default: this machine's, measured once and cached)");
  cmd->add_option("--ssd-bw", opt->ssd_gbps,
                  "SSD bandwidth at our queue depth, GB/s (default: this machine's, measured once and cached)");
  cmd->add_option("-t,--threads", opt->threads, "threads the model will run with (default: physical cores)");
  cmd->add_flag("--measure", opt->measure, "measure RAM and SSD again instead of using the cached speeds");
  cmd->add_option("--gflops", opt->inputs.compute_gflops, "compute rate, GFLOP/s (0: bound by RAM bandwidth)")
      ->capture_default_str();
  cmd->add_option("--prefetch-depth", opt->inputs.max_prefetch_depth, "most read-ahead depth")->capture_default_str();
  cmd->add_option("--predict-recall", opt->inputs.expert_prefetch_recall,
                  "fraction of expert misses requested before routing (0..1)")
      ->capture_default_str();
  cmd->add_flag("--json", opt->json, "print the plan as JSON, with every tensor's placement");
  cmd->callback([opt] {
    if (opt->inputs.n_ctx <= 0 || opt->inputs.n_batch <= 0) throw Error("plan: --ctx and --batch must be positive");
    if (!opt->mem.empty()) {
      opt->inputs.budget_bytes = tier::parse_size(opt->mem);
      if (opt->inputs.budget_bytes == 0) throw Error("plan: --mem must be positive");
    }
    auto file = gguf::File::open(opt->model);
    ModelConfig config = load_config(*file);
    tier::PlanInputs& in = opt->inputs;
    in.n_threads = opt->threads > 0 ? opt->threads : ThreadPool::physical_cores();
    if (opt->ram_gbps > 0) in.ram_gbps = opt->ram_gbps;
    if (opt->ssd_gbps > 0) in.ssd_gbps = opt->ssd_gbps;
    const tier::Plan plan =
        tier::plan_on_this_machine(*file, config, in, opt->ram_gbps > 0, opt->ssd_gbps > 0, in.n_threads, opt->measure);
    if (opt->json)
      std::cout << tier::to_json(plan) << "\n";
    else
      std::cout << tier::describe(plan) << device_line(opt->model, in);
  });
}

}  // namespace strata::app
