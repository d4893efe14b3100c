// `strata plan MODEL [--mem SIZE] [--gpu-mem SIZE] [--ctx N] [--json]`: where each tensor would live
// (VRAM, host RAM, SSD) and which processor computes it under memory budgets, and the token rates
// that placement allows (src/tier/plan/).
#include <algorithm>
#include <iostream>
#include <memory>
#include <string>

#include "commands.h"
#include "options.h"
#include "gguf/gguf.h"
#include "model/config.h"
#include "model/model.h"
#include "runtime/session.h"
#include "ops/thread_pool.h"
#include "tier/gpu/gpu_session.h"
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
    // Three tiers: VRAM per GPU and the machine's GPU speeds (measured where not given).
    std::string gpu_mem;  // "8G", or "8G,8G" for two GPUs; "0": no GPU
    double gpu_bw = 0, pcie_bw = 0, pcie_pageable_bw = 0, gpu_gflops = 0, cpu_gflops = 0;
    std::string profile;
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("plan", "Plan what stays in memory and what streams from SSD under a budget");
  cmd->add_option("MODEL", opt->model, "GGUF file")->required();
  cmd->add_option("--mem", opt->mem, "memory budget, e.g. 8G (default: available memory less a margin)");
  cmd->add_option("-c,--ctx", opt->inputs.n_ctx, "context length the KV cache is sized for")->capture_default_str();
  cmd->add_option("-b,--batch", opt->inputs.n_batch, "prompt tokens per forward pass")->capture_default_str();
  add_kv_type_option(cmd, opt->inputs.kv_type, opt->inputs.kv_type_auto);
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
  cmd->add_option("--gpu-mem", opt->gpu_mem,
                  "VRAM the plan may use, per GPU (8G, or 8G,8G for two); 0: no GPU, the two-tier plan "
                  "(default: each GPU's free memory less a margin)");
  cmd->add_option("--gpu-bw", opt->gpu_bw, "GPU memory bandwidth, GB/s (default: measured)");
  cmd->add_option("--pcie-bw", opt->pcie_bw, "host-to-GPU copy bandwidth from pinned memory, GB/s (default: measured)");
  cmd->add_option("--pcie-pageable-bw", opt->pcie_pageable_bw,
                  "host-to-GPU copy bandwidth from pageable memory, GB/s (default: measured)");
  cmd->add_option("--gpu-gflops", opt->gpu_gflops, "GPU matmul rate on a prompt batch, GFLOP/s (default: measured)");
  cmd->add_option("--cpu-gflops", opt->cpu_gflops, "CPU matmul rate on a prompt batch, GFLOP/s (default: measured)");
  cmd->add_option("--profile", opt->profile,
                  "a synthetic machine instead of this one: lent-h100 (issue 14's H100 machine: host RAM 95 GB/s, "
                  "PCIe 55 GB/s pinned, 8.6 GB/s pageable); the flags above override its figures")
      ->check(CLI::IsMember({"lent-h100"}));
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
    tier::GpuOverrides gpu;
    gpu.mem_gbps = opt->gpu_bw;
    gpu.pcie_pinned_gbps = opt->pcie_bw;
    gpu.pcie_pageable_gbps = opt->pcie_pageable_bw;
    gpu.gflops = opt->gpu_gflops;
    gpu.cpu_batch_gflops = opt->cpu_gflops;
    if (!opt->gpu_mem.empty()) {
      for (size_t at = 0; at <= opt->gpu_mem.size();) {
        const size_t comma = std::min(opt->gpu_mem.find(',', at), opt->gpu_mem.size());
        gpu.mem_bytes.push_back(tier::parse_size(opt->gpu_mem.substr(at, comma - at)));
        if (gpu.mem_bytes.size() > tier::kMaxPlanGpus)
          throw Error("plan: --gpu-mem lists more than " + std::to_string(tier::kMaxPlanGpus) + " GPUs");
        at = comma + 1;
      }
      gpu.mem_given = true;
    }
    // One GPU for a MoE model: the session as the runtime counts it (what `run --gpu-mem` plans).
    if (gpu.mem_given && gpu.mem_bytes.size() == 1 && gpu.mem_bytes[0] > 0 && config.n_expert > 0) {
      auto model = Model::load(opt->model);
      SessionParams p;
      p.n_ctx = in.n_ctx;
      p.n_batch = in.n_batch;
      p.kv_type = in.kv_type;
      tier::TieringOptions t;
      tier::set_gpu_tier_options(*model, p, gpu.mem_bytes[0], t);
      gpu.session_bytes = t.gpu_session_bytes;
      gpu.expert_slot_bytes = t.gpu_expert_slot_bytes;
    }
    bool ram_given = opt->ram_gbps > 0, ssd_given = opt->ssd_gbps > 0;
    if (opt->profile == "lent-h100") {
      tier::apply_lent_h100_profile(in, gpu);
      ram_given = true;
    }
    if (opt->ram_gbps > 0) in.ram_gbps = opt->ram_gbps;
    if (opt->ssd_gbps > 0) in.ssd_gbps = opt->ssd_gbps;
    const tier::Plan plan =
        tier::plan_on_this_machine(*file, config, in, ram_given, ssd_given, in.n_threads, opt->measure, &gpu);
    if (opt->json)
      std::cout << tier::to_json(plan) << "\n";
    else
      std::cout << tier::describe(plan) << device_line(opt->model, in);
  });
}

}  // namespace strata::app
