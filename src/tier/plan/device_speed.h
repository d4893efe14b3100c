#pragma once
// The two speeds the planner's time model rests on, measured on this machine rather than assumed:
// RAM read bandwidth with the threads that will run the model, and the SSD's direct-read
// bandwidth on the file system that holds the model. Measuring takes about two seconds, so results
// are kept in ~/.cache/strata/device-speed.json (per file-system device and thread count) and
// measured again when a week old or when asked. Only a plan that streams needs them: a model
// that fits is all-resident whatever the speeds.
#include <string>
#include <vector>

#include "tier/plan/plan.h"

namespace strata::backend {
class Backend;
}

namespace strata::tier {

struct DeviceSpeed {
  double ram_gbps = 0;
  double ssd_gbps = 0;
  std::string source;  // for people: "measured now", "measured 2026-11-26 (cached)", ...
};

// Bytes per second summing a buffer much larger than the caches with n_threads threads, best of 3.
double measure_ram_gbps(int n_threads);
// Random 4 MiB O_DIRECT reads of `path`, 8 in flight (as the streamers read), for about `seconds`
// after a quarter second of warm-up. Throws strata::Error when the file cannot be read.
double measure_ssd_gbps(const std::string& path, double seconds = 1.5);

// The cached speeds for `model_path`'s device and n_threads, measuring what is missing, stale or
// (remeasure) asked for. A cache that cannot be written is only a cost: nothing throws for it.
DeviceSpeed device_speed(const std::string& model_path, int n_threads, bool remeasure = false,
                         double ssd_seconds = 1.5);

// --- GPUs (three-tier plans)
inline constexpr size_t kMaxPlanGpus = 16;  // GPUs one plan places weights on

// What `strata plan` was told about GPUs; 0 or empty: this machine's, measured.
struct GpuOverrides {
  bool mem_given = false;
  std::vector<uint64_t> mem_bytes;  // per GPU; all 0: no GPU (the two-tier plan)
  double mem_gbps = 0, pcie_pinned_gbps = 0, pcie_pageable_gbps = 0, gflops = 0;
  double cpu_batch_gflops = 0;
  // The first GPU's session (GpuDevice::session_bytes, expert_slot_bytes), as the runtime counts
  // it; 0: the plan counts its own.
  uint64_t session_bytes = 0, expert_slot_bytes = 0;
  bool synthetic = false;  // a profile of another machine: nothing is measured here
  std::string name;        // the synthetic GPU's name
};

// Issue 14's lent H100 machine (16 cores): host RAM 95 GB/s, pinned host -> GPU copies 55 GB/s,
// pageable 8.6 GB/s (measured there), HBM3 ~3,350 GB/s; batch matmul rates 150 TFLOP/s on the GPU
// (llama.cpp's all-GPU Mixtral prompt, 4,334 tok/s, is ~112) and 1.1 TFLOP/s on the CPU (Strata's
// 43 tok/s Mixtral prompt on 16 cores). Synthetic: `in` and `gpu` take these figures wherever
// they hold none; an H100's 80 GB less a margin when no --gpu-mem is given.
void apply_lent_h100_profile(PlanInputs& in, GpuOverrides& gpu);

// A processor's speeds measured through the backend seam (backend/backend.h): its memory read
// bandwidth (a device-to-device copy reads and writes each byte once), host -> device copies from
// ordinary (pageable) host memory, and a Q4_K matmul on a batch of n_tokens. `bytes`: the size
// of the copies (small in tests).
struct ProcessorSpeed {
  double mem_gbps = 0, upload_gbps = 0, gflops = 0;
  double pinned_upload_gbps = 0;  // the same copies from pinned host memory (Backend::alloc_host)
};
ProcessorSpeed measure_processor(backend::Backend& b, size_t bytes = size_t(256) << 20, int n_tokens = 512);

// The GPUs a plan uses: from `gpu` where given, else this machine's (CUDA devices, each measured
// once through the backend and cached with the other speeds), with their free memory less a
// margin unless --gpu-mem was given. Fills in.gpus and in.cpu_batch_gflops; leaves in.gpus empty
// without a GPU. Throws strata::Error for --gpu-mem on a machine without one and no figures.
void resolve_gpus(PlanInputs& in, const GpuOverrides& gpu, int n_threads, bool remeasure);

// make_plan, with this machine's speeds in place of `in`'s wherever they were not given
// (ram_given, ssd_given) and the plan streams or uses a GPU, or remeasure asks for them. gpu:
// what was said about GPUs (null: none are planned for).
Plan plan_on_this_machine(const gguf::File& file, const ModelConfig& config, PlanInputs in, bool ram_given,
                          bool ssd_given, int n_threads, bool remeasure = false, const GpuOverrides* gpu = nullptr);

}  // namespace strata::tier
