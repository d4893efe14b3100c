#pragma once
// Options shared by the commands that load a model and generate.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ops/attention.h"
#include "runtime/generate.h"
#include "runtime/session.h"
#include "tier/gpu/gpu_session.h"
#include "tier/plan/plan.h"
#include "tier/tiering.h"
#include "tier/trace/routing_trace.h"
#include "util/error.h"

namespace strata::app {

struct ModelOptions {
  std::string model_path;
  SessionParams session;
  bool kv_type_auto = false;  // --kv-type auto: the planner picks session.kv_type (resolve_kv_type)
  int stream_ffn = 0;  // FFN blocks of this many layers (the last ones) stream from the file
  int prefetch = 2;    // with --stream-ffn: read-ahead depth (a ring of 16 MiB pieces, 3 per level, 2 at depth 1)
  std::string mem;     // memory budget: the planner picks what streams ("": what is available)
  bool stats = false;  // print tiering statistics at the end
  bool fresh = false;  // MoE: neither load nor save routing statistics
  std::string trace_routing;  // MoE: write the routing trace (tier/trace/routing_trace.h) here
  std::string routing_override;  // bench: MoE layers route as this trace says (tier/trace/routing_override.h)
  std::string expert_guess = "both";  // MoE: which guessers read experts ahead (both, router, coactivation, none)
  std::string gpu_mem;        // GPU memory the session may use ("": the whole model in VRAM or none)
  // With gpu_mem: of a token's expert misses, the share copied over PCIe; < 0: the plan's, per
  // layer (LayerPlacement::copy_share).
  double gpu_copy_share = -1;
  double gpu_prompt_copy_share = -1;  // the same for a prompt's misses; < 0: the plan's
  // Memory available when the command started, before the model and the session took theirs
  // (which the plan counts itself); 0: unknown.
  uint64_t budget_at_start = 0;
};

// The planner's options for a session of these parameters under the memory budget (--mem, else
// what the machine or its cgroup had left when the command started).
inline tier::TieringOptions tiering_options(const ModelOptions& o, const SessionParams& p) {
  tier::TieringOptions t;
  t.budget_bytes = o.mem.empty() ? o.budget_at_start : tier::parse_size(o.mem);
  t.n_ctx = p.n_ctx;
  t.n_batch = p.n_batch;
  t.kv_type = p.kv_type;
  t.stream_ffn = o.stream_ffn;
  t.prefetch = o.prefetch;
  t.persist_routing = !o.fresh;
  t.routing_override = o.routing_override;
  t.look_ahead = o.expert_guess == "both" || o.expert_guess == "router";
  t.co_predict = o.expert_guess == "both" || o.expert_guess == "coactivation";
  t.n_threads = p.n_threads;
  return t;
}

// --kv-type auto: the cache type the planner picks for this model, context and budget
// (PlanInputs::kv_type_auto: f16 where every weight stays resident with it, else the widest that
// keeps them, else q4_0), written into o.session before the session allocates its cache. Where
// no type keeps every weight resident, q4_0 is chosen on purpose: the weights then stream, and
// each byte the cache does not take is a weight byte not read from the file every token (an 8B
// model at 4,096 tokens: ~370 MB more weights in memory than with f16). f16 where the
// session will run on the GPU (the CUDA backend keeps an f16 cache; the budget weighed is host
// memory). Says on stderr what it chose.
inline void resolve_kv_type(const Model& model, ModelOptions& o) {
  if (!o.kv_type_auto) return;
  SessionParams& p = o.session;
  p.kv_type = DType::F16;
  const char* why = "every weight stays in memory with it";
  const std::optional<DType> gpu = p.device != Device::cpu ? gpu_kv_type(model, p) : std::nullopt;
  if (gpu) {
    p.kv_type = *gpu;
    why = *gpu == DType::F16 ? "the session runs on the GPU" : "the session runs on the GPU, where an f16 cache does not fit";
  } else {
    tier::TieringOptions t = tiering_options(o, p);
    t.n_ctx = p.n_ctx > 0 ? p.n_ctx : model.config().n_ctx_train;  // as the session resolves it
    t.kv_type_auto = true;
    try {
      const tier::Plan plan = tier::plan_for(model, t);
      p.kv_type = plan.inputs.kv_type;
      if (plan.streams())  // every weight byte kept in memory is one fewer read from the file per token
        why = "no cache type keeps every weight in memory; the narrowest leaves them the most";
      else if (p.kv_type != DType::F16)
        why = "with f16 some weights would stream from the file under the memory budget";
    } catch (const Error&) {  // nothing fits: make_tiering names the problem or runs without a budget
      why = "no plan fits the memory budget";
    }
  }
  std::fprintf(stderr, "KV cache: %s (--kv-type auto: %s)\n", type_name(p.kv_type), why);
}

// Places the model's weights under the memory budget (--mem, else what the machine or its cgroup
// has left) and connects the streamers to the session. When the model fits, nothing streams.
inline std::unique_ptr<tier::Tiering> make_tiering(const Model& model, const ModelOptions& o, Session& session) {
  SessionParams p = o.session;
  p.n_ctx = session.n_ctx();
  p.n_threads = session.n_threads();
  tier::TieringOptions t = tiering_options(o, p);
  // --gpu-mem on a MoE model: the three-tier plan for that VRAM, with the session as the runtime
  // counts it (the GPU expert tier follows the plan).
  if (!o.gpu_mem.empty() && model.config().n_expert > 0)
    tier::set_gpu_tier_options(model, p, tier::parse_size(o.gpu_mem), t);
  std::unique_ptr<tier::Tiering> tiering;
  try {
    tiering = std::make_unique<tier::Tiering>(model, t);
  } catch (const Error& e) {
    if (!o.mem.empty() || std::string_view(e.what()).starts_with("plan: GPU ")) throw;  // VRAM: no host budget helps
    // No budget was asked for and what looks available is below the minimum: run from the
    // mapped file as a plain engine would, and say so.
    std::fprintf(stderr, "warning: %s; running without a memory budget\n", e.what());
    t.budget_bytes = ~uint64_t(0) >> 2;
    tiering = std::make_unique<tier::Tiering>(model, t);
  }
  session.set_ffn_source(tiering->ffn_source());
  session.set_expert_source(tiering->expert_source());
  if (tiering->streaming() || !o.mem.empty()) std::fprintf(stderr, "%s\n", tiering->summary().c_str());
  if (!o.gpu_mem.empty()) {
    const std::string said =
        model.config().n_expert > 0
            ? tier::attach_gpu_experts(model, session, *tiering, session.n_batch(), o.gpu_copy_share,
                                       o.gpu_prompt_copy_share)
            : tier::check_dense_gpu_budget(session, tier::parse_size(o.gpu_mem), o.gpu_mem);
    std::fprintf(stderr, "%s\n", said.c_str());
  }
  return tiering;
}

// --trace-routing FILE: the session reports every MoE layer's routing (and the guesses made of it)
// to a trace writer, which the caller keeps until the last evaluation. Null without the option.
inline std::unique_ptr<tier::RoutingTraceWriter> make_routing_trace(const Model& model, const ModelOptions& o,
                                                                    Session& session) {
  if (o.trace_routing.empty()) return nullptr;
  auto trace = std::make_unique<tier::RoutingTraceWriter>(o.trace_routing, model);
  session.set_routing_observer(trace.get(), trace->guesser());
  return trace;
}

inline void add_trace_routing_option(CLI::App* cmd, ModelOptions& o) {
  cmd->add_option("--trace-routing", o.trace_routing,
                  "MoE: write per token and layer the routed experts and the guesses made of them to this file");
}

struct SamplingOptions {
  GenerateParams gen;
  bool greedy = false;
};

// --kv-type: the KV cache's element type (f16, q8_0, q4_0), or auto: the planner's choice for the
// memory budget (the caller resolves it before the session, resolve_kv_type). f16 by default:
// the same command gives the same tokens whatever memory is free, as llama.cpp's and Ollama's
// default.
inline void add_kv_type_option(CLI::App* cmd, DType& kv_type, bool& kv_type_auto) {
  cmd->add_option_function<std::string>(
         "--kv-type",
         [&kv_type, &kv_type_auto](const std::string& name) {
           kv_type_auto = name == "auto";
           kv_type = kv_type_auto ? DType::F16 : ops::parse_kv_type(name);
         },
         "KV cache type: f16 (default), q8_0, q4_0, or auto (f16 unless a narrower one keeps the weights "
         "in memory under the budget)");
}

// --gpu / --cpu: where the session computes (default: the GPU when present and the model fits).
inline void add_device_options(CLI::App* cmd, SessionParams& session) {
  session.device = Device::automatic;
  CLI::Option* gpu = cmd->add_flag_callback(
      "--gpu", [&session] { session.device = Device::gpu; },
      "compute on the GPU (an error where the build, the machine or the model cannot)");
  CLI::Option* cpu = cmd->add_flag_callback(
      "--cpu", [&session] { session.device = Device::cpu; }, "compute on the CPU even where a GPU could");
  gpu->excludes(cpu);
}

inline void add_model_options(CLI::App* cmd, ModelOptions& o) {
  cmd->preparse_callback([&o](size_t) {
    try {
      o.budget_at_start = tier::detect_memory_budget();
    } catch (const Error&) {  // make_tiering detects again and names the problem
    }
  });
  // No CLI11 file check: the GGUF reader names a missing or unreadable file itself (exit 1).
  cmd->add_option("model", o.model_path, "GGUF model file")->required();
  cmd->add_option("-c,--ctx", o.session.n_ctx, "context length (tokens)")->capture_default_str();
  cmd->add_option("-b,--batch", o.session.n_batch, "prompt tokens per forward pass")->capture_default_str();
  cmd->add_option("-t,--threads", o.session.n_threads, "threads (default: physical cores)");
  add_kv_type_option(cmd, o.session.kv_type, o.kv_type_auto);
  add_device_options(cmd, o.session);
  cmd->add_option("--stream-ffn", o.stream_ffn, "stream the FFN blocks of the last N layers from the file (O_DIRECT)");
  cmd->add_option("--prefetch", o.prefetch, "with --stream-ffn: read-ahead depth (a ring of 16 MiB pieces, 3 per level, 2 at depth 1)")
      ->capture_default_str();
  cmd->add_option_function<std::string>(
      "--gpu-mem",
      [&o](const std::string& size) {
        o.gpu_mem = size;
        o.session.device = Device::gpu;
        o.session.routed_experts_on_gpu = false;
      },
      "MoE on a GPU too small for the model: VRAM to use (e.g. 8G); the routed experts live in host RAM, a "
      "VRAM cache holds some, the CPU computes misses and prompt batches copy theirs over PCIe");
  cmd->add_option("--gpu-copy-share", o.gpu_copy_share,
                  "with --gpu-mem: share of a token's expert misses copied to the GPU, the rest computed by the "
                  "CPU (default: the plan's, per layer)");
  cmd->add_option("--gpu-prompt-copy-share", o.gpu_prompt_copy_share,
                  "with --gpu-mem: share of a prompt batch's expert misses copied to the GPU, the rest computed by "
                  "the CPU meanwhile (default: the plan's)");
  cmd->add_option("--mem", o.mem,
                  "memory budget (e.g. 2G; default: what is available): the planner streams what does not fit");
  cmd->add_option("--expert-guess", o.expert_guess,
                  "MoE streaming: guessers that read the next layer's experts ahead: both (default), router "
                  "(look-ahead), coactivation, none")
      ->check(CLI::IsMember({"both", "router", "coactivation", "none"}));
  cmd->add_flag("--fresh", o.fresh, "MoE: ignore routing statistics of earlier runs and do not save this run's");
  cmd->add_flag("--stats", o.stats, "print tiering statistics (SSD bytes per token, hit rates, I/O wait)");
}

inline void add_sampling_options(CLI::App* cmd, SamplingOptions& o) {
  SamplerParams& s = o.gen.sampling;
  cmd->add_option("-n,--n-predict", o.gen.n_predict, "tokens to generate (-1: until the end)")->capture_default_str();
  cmd->add_option("--temp", s.temperature, "temperature (0: greedy)")->capture_default_str();
  cmd->add_option("--top-k", s.top_k, "top-k (0: off)")->capture_default_str();
  cmd->add_option("--top-p", s.top_p, "top-p (1: off)")->capture_default_str();
  cmd->add_option("--min-p", s.min_p, "min-p (0: off)")->capture_default_str();
  cmd->add_option("--repeat-penalty", s.repeat_penalty, "repeat penalty (1: off)")->capture_default_str();
  cmd->add_option("--repeat-last-n", s.repeat_last_n, "tokens the penalties look back")->capture_default_str();
  cmd->add_option("--presence-penalty", s.presence_penalty, "presence penalty")->capture_default_str();
  cmd->add_option("--frequency-penalty", s.frequency_penalty, "frequency penalty")->capture_default_str();
  cmd->add_option("--seed", s.seed, "random seed (default: random)");
  cmd->add_option("--stop", o.gen.stop, "stop string (repeatable)");
  cmd->add_flag("--greedy", o.greedy, "greedy decoding (same as --temp 0)");
}

}  // namespace strata::app
