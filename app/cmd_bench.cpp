// strata bench MODEL: prompt processing and generation speed (like llama-bench's pp/tg), the
// weight bytes a generated token reads, and the memory-bandwidth bound that implies.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "commands.h"
#include "options.h"
#include "tier/stats.h"
#include "tier/plan/device_speed.h"

namespace strata::app {

namespace {

struct BenchOptions {
  ModelOptions model;
  int n_prompt = 512;
  int n_gen = 128;
  bool json = false;
};

// Bytes this process made the kernel fetch from storage (/proc/self/io read_bytes): O_DIRECT
// reads and page faults on the mapped model alike, so it also shows re-reads of evicted pages.
uint64_t storage_read_bytes() {
  std::FILE* f = std::fopen("/proc/self/io", "r");
  if (!f) return 0;
  char key[64];
  unsigned long long value = 0, found = 0;
  while (std::fscanf(f, "%63s %llu", key, &value) == 2)
    if (std::strcmp(key, "read_bytes:") == 0) found = value;
  std::fclose(f);
  return found;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto opts = std::make_shared<BenchOptions>();
  CLI::App* cmd = app.add_subcommand("bench", "measure prompt and generation speed");
  add_model_options(cmd, opts->model);
  add_trace_routing_option(cmd, opts->model);
  cmd->add_option("--routing-override", opts->model.routing_override,
                  "MoE benchmarks: run the experts this routing trace names instead of the router's (e.g. a "
                  "forged model under realistic routing from bench/routing_synth.py; positions wrap around)");
  cmd->add_option("-p,--n-prompt", opts->n_prompt, "prompt tokens")->capture_default_str();
  cmd->add_option("-n,--n-gen", opts->n_gen, "generated tokens")->capture_default_str();
  cmd->add_flag("--json", opts->json, "print one JSON object");
  cmd->callback([opts] {
    auto model = Model::load(opts->model.model_path);
    SessionParams& sp = opts->model.session;
    if (sp.n_ctx <= 0 || sp.n_ctx < opts->n_prompt + opts->n_gen + 1) sp.n_ctx = opts->n_prompt + opts->n_gen + 1;
    resolve_kv_type(*model, opts->model);
    // The GPU's free memory before the session (the CUDA context made by asking): what the run then
    // holds is measured, beside what the plan and the session counted for it.
    size_t vram_free_before = 0, vram_total = 0;
    const bool vram_known = sp.device != Device::cpu && backend::cuda_memory(0, vram_free_before, vram_total);
    Session session(*model, sp);
    if (!opts->json) std::printf("device     %s\n", session.device_name().c_str());
    auto tiering = make_tiering(*model, opts->model, session);
    auto trace = make_routing_trace(*model, opts->model, session);
    const int n_vocab = model->config().n_vocab;
    std::mt19937 rng(42);
    std::vector<int32_t> prompt(size_t(opts->n_prompt));
    for (auto& t : prompt) t = int32_t(rng() % uint32_t(n_vocab));

    // Warm-up (as llama-bench): one token pages the weights in, so both runs measure compute. On
    // the GPU, as llama-bench's warm-up runs: the whole prompt and two decode steps, so that the
    // one-time costs (scratch growing to the largest matrix, cuBLAS's first calls, the decode
    // graph's capture) fall outside the timed runs.
    if (session.on_gpu()) {
      session.eval(prompt);
      session.eval({prompt[0]});
      session.eval({prompt[0]});
    } else {
      session.eval({prompt[0]});
    }
    session.truncate(0);
    // After the warm-up every scratch has grown: the run's VRAM, measured, against the count.
    size_t vram_free_after = 0;
    const bool vram_measured =
        session.on_gpu() && vram_known && backend::cuda_memory(0, vram_free_after, vram_total);
    const uint64_t vram_in_use = vram_measured && vram_free_before > vram_free_after ? vram_free_before - vram_free_after : 0;
    const tier::GpuExperts* gpu_tier = tiering->gpu_experts();
    const uint64_t vram_counted = session.vram_bytes() + session.vram_reserved_bytes() +
                                  (gpu_tier ? gpu_tier->vram_bytes() : 0);

    double t0 = now_seconds();
    session.eval(prompt);
    const double pp_seconds = now_seconds() - t0;
    const tier::TierStats before = tiering->stats();
    const uint64_t io_before = storage_read_bytes();
    t0 = now_seconds();
    for (int i = 0; i < opts->n_gen; ++i) session.eval({int32_t(rng() % uint32_t(n_vocab))});
    const double tg_seconds = now_seconds() - t0;

    tier::TierStats after = tiering->stats();
    const double process_read = opts->n_gen > 0 ? double(storage_read_bytes() - io_before) / opts->n_gen : 0.0;
    // The generated tokens' share of the counters.
    const tier::TierStats gen = after.since(before);
    const double ssd_per_token = opts->n_gen > 0 ? double(gen.bytes_read()) / opts->n_gen : 0.0;
    const double hit_rate = gen.experts.needed > 0 ? gen.cache_hit_rate() : 1.0;
    // Bytes that had to come from the SSD for the generated tokens at the observed hit rate.
    const double must_read = opts->n_gen > 0 ? double(gen.must_read_bytes()) / opts->n_gen : 0.0;
    if (trace) trace->flush();
    if (opts->model.stats) {
      after.n_tokens = uint64_t(opts->n_prompt + opts->n_gen);
      after.seconds = pp_seconds + tg_seconds;
      std::fputs(tier::describe_stats(after).c_str(), stderr);
    }
    // The measurement's 256 MiB buffer would not fit a budget the model already fills: under
    // streaming the bound is the plan's, from the speeds it planned with (measured once on this
    // machine and cached, tier/plan/device_speed.h): RAM bandwidth over the weight bytes a token
    // reads, or the SSD over the bytes the plan expects a token to read from it, whichever binds.
    // On the GPU the bound is its memory's bandwidth.
    const double bytes = model->weight_bytes_per_token();
    const double pp = opts->n_prompt / pp_seconds, tg = opts->n_gen / tg_seconds;
    const bool streamed = after.streaming && !session.on_gpu();
    const double bandwidth = session.on_gpu() ? session.gpu_memory_gbps()
                             : streamed       ? tiering->plan().inputs.ram_gbps
                                              : tier::measure_ram_gbps(session.n_threads());
    double bound = bandwidth > 0 ? bandwidth * 1e9 / bytes : 0.0;
    const char* bound_by = session.on_gpu() ? "vram" : "ram";
    if (streamed) {
      const tier::Plan& plan = tiering->plan();
      const double ssd_bound =
          plan.ssd_bytes_per_token > 0 ? plan.inputs.ssd_gbps * 1e9 / plan.ssd_bytes_per_token : 0.0;
      if (ssd_bound > 0 && (bound <= 0 || ssd_bound < bound)) {
        bound = ssd_bound;
        bound_by = "ssd";
      }
    }
    if (opts->json) {
      std::printf(
          "{\"pp_tokens\":%d,\"pp_tok_s\":%.3f,\"tg_tokens\":%d,\"tg_tok_s\":%.3f,\"threads\":%d,"
          "\"weight_bytes_per_token\":%.0f,\"read_bandwidth_gb_s\":%.2f,\"tg_bound_tok_s\":%.3f,"
          "\"ssd_bytes_per_token\":%.0f,\"expert_cache_hit_rate\":%.4f,\"ssd_must_read_per_token\":%.0f,\"process_read_"
          "bytes_per_token\":%.0f,\"gpu\":%s,\"streaming\":%s,\"predicted_tok_s\":%.3f,\"tg_io_wait_s\":%.3f,\"tg_disk_idle_s\":%.3f,\"kv_type\":\"%s\",\"tg_bound_by\":\"%s\",\"vram_in_use_bytes\":%llu,\"vram_counted_bytes\":%llu}\n",
          opts->n_prompt, pp, opts->n_gen, tg, session.n_threads(), bytes, bandwidth, bound, ssd_per_token, hit_rate,
          must_read, process_read, session.on_gpu() ? "true" : "false", after.streaming ? "true" : "false", after.predicted_tok_s,
          gen.io_wait_seconds(), gen.disk_idle_seconds(), type_name(sp.kv_type), bound_by, (unsigned long long)vram_in_use,
          (unsigned long long)(session.on_gpu() ? vram_counted : 0));
    } else {
      std::printf("prompt     %5d tokens  %9.2f tok/s\n", opts->n_prompt, pp);
      std::printf("generation %5d tokens  %9.2f tok/s\n", opts->n_gen, tg);
      if (bandwidth > 0) {
        if (session.on_gpu())
          std::printf("weights read per token %.1f MB; GPU memory bandwidth %.1f GB/s (device copy)\n", bytes / 1e6,
                      bandwidth);
        else
          std::printf("weights read per token %.1f MB; read bandwidth %.1f GB/s (%d threads)\n", bytes / 1e6,
                      bandwidth, session.n_threads());
        if (streamed)
          std::printf("streamed generation limit (the plan's speeds: RAM %.1f GB/s, SSD %.2f GB/s; %s binds) "
                      "%.2f tok/s; reached %.0f%%\n",
                      bandwidth, tiering->plan().inputs.ssd_gbps, bound_by, bound, 100.0 * tg / bound);
        else
          std::printf("memory-bound generation limit %.2f tok/s; reached %.0f%%\n", bound, 100.0 * tg / bound);
      }
      if (after.streaming)
        std::printf("SSD read per generated token %.1f MB; expert cache hit rate %.0f%%\n", ssd_per_token / 1e6,
                    100.0 * hit_rate);
      if (vram_measured)
        std::printf("VRAM measured %llu MiB in use by this run (free memory before the session less after the "
                    "warm-up; the CUDA context not in it); counted %llu MiB: session %llu MiB, expert tier %llu MiB\n",
                    (unsigned long long)(vram_in_use >> 20), (unsigned long long)(vram_counted >> 20),
                    (unsigned long long)((session.vram_bytes() + session.vram_reserved_bytes()) >> 20),
                    (unsigned long long)((gpu_tier ? gpu_tier->vram_bytes() : 0) >> 20));
      if (after.gpu.present) {
        // The GPU expert tier (--gpu-mem): the plan's predictions beside the measurement, and the
        // generated tokens' share of its counters, per token.
        const tier::GpuTierCounters& g = gen.gpu;
        const double n = opts->n_gen > 0 ? double(opts->n_gen) : 1.0;
        std::printf("gpu tier plan: prompt %.0f tok/s, generation %.1f tok/s predicted; measured %.0f%% and %.0f%% "
                    "of that\n",
                    g.predicted_prompt_tok_s, g.predicted_gen_tok_s,
                    g.predicted_prompt_tok_s > 0 ? 100.0 * pp / g.predicted_prompt_tok_s : 0.0,
                    g.predicted_gen_tok_s > 0 ? 100.0 * tg / g.predicted_gen_tok_s : 0.0);
        std::printf("gpu tier generation: VRAM hit rate %.0f%% (plan %.0f%%), %.1f MB over PCIe, experts %.1f GPU / "
                    "%.1f CPU, copy %.2f ms, GPU experts %.2f ms, CPU experts %.2f ms, routing wait %.2f ms per token\n",
                    100.0 * gen.vram_expert_hit_rate(), 100.0 * g.predicted_vram_hit_rate, double(g.pcie_bytes) / n / 1e6,
                    double(g.experts_gpu) / n, double(g.experts_cpu) / n, 1e3 * g.copy_seconds / n,
                    1e3 * g.gpu_compute_seconds / n, 1e3 * g.cpu_compute_seconds / n, 1e3 * g.wait_seconds / n);
      }
    }
  });
}

}  // namespace strata::app
