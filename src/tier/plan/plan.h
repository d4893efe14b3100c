#pragma once
// The placement planner (DESIGN §2): decides which weights sit in RAM and which are streamed from
// the SSD, from the tensor table alone (no tensor data is read), by a linear program solved with
// COIN-OR CLP and then rounded to whole units.
//
// Units of placement: the mandatory set (attention, norms, router, output head, shared experts,
// small tensors) is always resident; each dense FFN matrix (ffn_gate, ffn_up, ffn_down of a layer)
// and each expert slice (layer l, expert e: the e-th slice of ffn_{gate,up,down}_exps) is resident
// or streamed; token_embd (untied) is read a row per token in place from the mapped file.
//
// The planner in parts, one file each: units.cpp (unit extraction), memory.cpp (sizes, budget and
// what the engine allocates), cost_model.cpp (seconds per token of a placement), lp.cpp (the
// relaxation; the only file that includes the solver), rounding.cpp (whole units, pool shapes),
// plan.cpp (the search that runs them), report.cpp (words and JSON), replanner.cpp (re-solving
// off the forward thread).
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "gguf/gguf.h"
#include "model/config.h"
#include "model/weights.h"
#include "tier/io/aligned_buffer.h"

namespace strata::tier {

// Dense FFN matrices stream in pieces of whole rows of at most this size (DenseFfnStreamer's).
inline constexpr uint64_t kStreamPieceBytes = uint64_t(16) << 20;
// Rows of one streamed piece of a matrix of n_rows rows of row_bytes: whole rows whose aligned
// read (a page more at either end) fits piece_bytes, in whole 16-row blocks (matmul's tiles)
// where a piece holds that many. The planner sizes the pool with it, the streamer cuts with it.
int64_t stream_piece_rows(uint64_t row_bytes, int64_t n_rows, uint64_t piece_bytes = kStreamPieceBytes);
// Pieces in the dense ring at prefetch depth d: at depth 1 one to compute from and one reading,
// deeper three per level (five reads in flight at depth 2).
constexpr int dense_ring_pieces(int depth) { return depth <= 1 ? 2 : 3 * depth; }
// Bytes a direct read of [offset, offset + bytes) lands in: the 4096-aligned range around it. An
// expert slot holds one such range per expert matrix (ExpertStreamer::layout).
constexpr uint64_t direct_read_span(uint64_t offset, uint64_t bytes) {
  return io::align_up(offset + bytes, io::kDirectAlign) - io::align_down(offset, io::kDirectAlign);
}

// A GPU as the planner sees it: how much of its memory the plan may use and how fast it is
// (device_speed.h measures them through the backend seam; tests give synthetic ones).
struct GpuDevice {
  int index = 0;                  // the backend's device number (make_cuda_backend(index))
  std::string name;               // for people
  uint64_t mem_bytes = 0;         // VRAM the plan may use (--gpu-mem); 0: the device takes no part
  double mem_gbps = 0;            // device memory read bandwidth
  double gflops = 0;              // quantized matmul rate on a prompt batch
  double pcie_pinned_gbps = 0;    // host -> device copies from pinned host memory
  double pcie_pageable_gbps = 0;  // the same from ordinary (pageable) memory
  // VRAM the session computing on this GPU holds besides the routed experts: weights, KV cache,
  // activations and scratch, as the runtime counts them (gpu_session_vram_bytes, runtime/session.h).
  // Given (> 0), every layer's attention, norms and router and the output head are in it on this
  // GPU, and the rest of mem_bytes is the GPU expert tier's: staging and cached experts in slots
  // of expert_slot_bytes (GpuExperts::slot_bytes). 0: the plan places the cores itself and counts
  // activations for a batch (`strata plan` of several GPUs, on paper).
  uint64_t session_bytes = 0;
  uint64_t expert_slot_bytes = 0;  // with session_bytes; 0: an expert takes its slices' bytes
};

struct PlanInputs {
  uint64_t budget_bytes = 0;    // 0: detect_memory_budget()
  int n_ctx = 4096;             // context the KV cache is sized for (clamped to the training context)
  int n_batch = 512;            // prompt tokens per forward pass (sizes the scratch buffers)
  int n_threads = 1;            // threads the model runs with (attention scratch is per thread)
  DType kv_type = DType::F16;   // the KV cache's type (--kv-type)
  // Choose kv_type instead: the widest of f16, q8_0, q4_0 with which every weight stays resident,
  // else q4_0 (the most memory left to the weights). The plan's inputs say which.
  bool kv_type_auto = false;
  // Defaults are DESIGN §5's figures for the development machine; Tiering and `strata plan` put
  // this machine's in their place (device_speed.h) whenever a plan streams.
  double ram_gbps = 30.0;       // ~30 GB/s with 2 threads
  double ssd_gbps = 1.7;        // O_DIRECT, queue depth >= 1, 1 MiB reads
  std::string speed_source = "assumed";  // where ram_gbps and ssd_gbps come from, for people
  double compute_gflops = 0.0;  // 0: compute time per layer = weight bytes / RAM bandwidth
  int max_prefetch_depth = 4;   // most pool slots per streamed unit type
  // Fraction of expert misses the next-layer predictor requests early; the rest is read after
  // routing, overlapping only the same layer's hit experts. 0 until the predictor measures it.
  double expert_prefetch_recall = 0.0;
  // Per-token access probability of expert e in layer l, [n_layer][n_expert]; empty: k/E.
  std::vector<std::vector<double>> expert_probability;
  // The GPUs the plan may place weights on (three tiers: VRAM, host RAM, SSD). Empty, or none
  // with mem_bytes > 0: the two-tier plan (RAM and SSD), exactly as without GPUs.
  std::vector<GpuDevice> gpus;
  // The CPU's quantized matmul rate on a prompt batch (prompt predictions of work left on the
  // CPU); 0: unknown, and a plan with GPUs predicts no prompt speed for work on the CPU.
  double cpu_batch_gflops = 0;
  bool uses_gpu() const {
    for (const auto& g : gpus)
      if (g.mem_bytes > 0) return true;
    return false;
  }
};

enum class Placement { resident, streamed, mapped };  // mapped: token rows read in place
const char* placement_name(Placement p);

enum class UnitKind { dense_ffn, expert };
// Where a unit's bytes live between tokens, and which processor computes it.
enum class Tier { vram, host, ssd };
enum class Processor { cpu, gpu };
const char* tier_name(Tier t);
const char* processor_name(Processor p);

struct PlanUnit {
  UnitKind kind = UnitKind::dense_ffn;
  int layer = 0;
  int expert = -1;  // expert index, -1 for a dense FFN block
  uint64_t n_bytes = 0;
  double probability = 1.0;  // accesses per token
  double lp_fraction = 0.0;  // x_u of the LP relaxation
  bool resident = false;     // after rounding
  int part = -1;             // dense units: the FfnPart (gate, up, down) of the layer
  // Bytes the unit holds in memory while resident: a dense matrix its own; an expert one slot of
  // the expert streamer, sized for its layer's experts (page-aligned read ranges).
  uint64_t memory_bytes = 0;
  // Three tiers (GPU plans; a two-tier plan says host or ssd, cpu, device -1): where the bytes
  // live, which processor computes the unit in generation (a unit not in VRAM: the CPU where its
  // bytes are, or the GPU after a copy over PCIe), and on which GPU (-1: none).
  Tier tier = Tier::ssd;
  Processor compute = Processor::cpu;
  int device = -1;
  double lp_vram = 0;  // the LP's fraction of the unit in VRAM (GPU plans)
};

struct TensorPlacement {
  std::string name;
  TensorRole role = TensorRole::other;
  int layer = -1;  // -1: not a per-layer tensor
  uint64_t n_bytes = 0;
  uint64_t file_offset = 0;
  Placement placement = Placement::resident;  // experts: resident only when every slice is
  uint64_t resident_bytes = 0;
  uint64_t slice_bytes = 0;           // experts: bytes of one expert's slice
  std::vector<int> resident_experts;  // experts: slices kept in the expert cache (host RAM)
  // GPU plans: the tier and device of the tensor's bytes (experts: of the slices not listed
  // below), and the expert slices held in VRAM on `device`.
  Tier tier = Tier::host;
  int device = -1;
  std::vector<int> vram_experts;
};

struct RoleSummary {
  TensorRole role = TensorRole::other;
  uint64_t vram_bytes = 0;  // GPU plans: in VRAM (resident_bytes then counts host RAM only)
  uint64_t resident_bytes = 0;
  uint64_t streamed_bytes = 0;
  uint64_t mapped_bytes = 0;
};

// What bounds the predicted token rate. The last four only in plans with GPUs.
enum class Limit {
  ram_bandwidth,
  compute,
  ssd_bandwidth,
  ssd_expert_misses,
  vram_bandwidth,  // the GPU reading its own memory
  pcie_bandwidth,  // copies from host RAM to the GPU
  gpu_compute,     // the GPU's arithmetic (prompt batches)
  cpu_compute,     // the CPU's arithmetic (prompt batches)
};
const char* limit_name(Limit limit);

// A plan is four things, each written by one stage of the planner (plan.cpp runs them):
//   inputs      what was asked (PlanInputs), of which model, and what that costs before any
//               decision (PlanFixed: the engine's own allocations and the always-resident weights);
//   placement   which units stay in memory (units.cpp extracts them, lp.cpp and rounding.cpp
//               decide, units.cpp maps the decision back onto tensors);
//   pool        the streaming slots (rounding.cpp);
//   prediction  what the cost model expects of that placement and pool (cost_model.cpp).
// Plan derives from the four parts so that each stage fills its own part and readers keep
// plain field names (plan.pool_bytes, plan.limit).
struct PlanFixed {
  uint64_t model_bytes = 0;      // every tensor
  uint64_t mandatory_bytes = 0;  // always-resident weights
  uint64_t kv_bytes = 0;
  uint64_t scratch_bytes = 0;
  uint64_t minimum_bytes = 0;  // mandatory + kv + scratch + one pool slot per streamed unit type
};

struct PlanPlacement {
  uint64_t resident_weight_bytes = 0;  // mandatory + resident units
  uint64_t streamed_weight_bytes = 0;
  uint64_t mapped_bytes = 0;
  uint64_t expert_cache_bytes = 0;  // resident expert slices
  int n_expert_cache = 0;
  int n_dense_resident = 0, n_dense_units = 0;  // FFN matrices
  int n_expert_resident = 0, n_expert_units = 0;
  bool streams() const { return n_dense_resident < n_dense_units || n_expert_resident < n_expert_units; }

  std::vector<PlanUnit> units;
  std::vector<TensorPlacement> tensors;
  std::vector<RoleSummary> roles;
};

struct PlanPool {
  int prefetch_depth = 0;  // 0: nothing streamed
  // Dense: a ring of n_dense_slots pieces of dense_slot_bytes (rows of a matrix); experts:
  // n_expert_slots slots of one expert's slices each.
  uint64_t dense_slot_bytes = 0, expert_slot_bytes = 0;
  int n_dense_slots = 0, n_expert_slots = 0;
  uint64_t pool_bytes = 0;
};

struct PlanPrediction {
  double ssd_bytes_per_token = 0;  // expected
  double ram_bytes_per_token = 0;  // weights touched + KV at a full context
  double seconds_per_token = 0;
  double tokens_per_second = 0;
  Limit limit = Limit::ram_bandwidth;
  double lp_seconds_per_token = 0;  // the relaxation's optimum (a lower bound before rounding)
  std::string solver_status;
};

// Plans with GPUs: what each GPU holds, where each layer runs, and the two processors'
// predicted work. Empty (no gpus, no layers) in a two-tier plan.
struct GpuUse {
  int device = 0;  // GpuDevice::index
  uint64_t budget_bytes = 0, used_bytes = 0, minimum_bytes = 0;
  uint64_t weight_bytes = 0;        // attention, norms, router, head, dense matrices and experts in VRAM
  uint64_t expert_cache_bytes = 0;  // of which expert slices
  uint64_t kv_bytes = 0, scratch_bytes = 0;
  uint64_t staging_bytes = 0;  // buffers that copies over PCIe land in
  int first_layer = 0, n_layers = 0;
  int n_expert_vram = 0;
  // GpuDevice::session_bytes where given (weights, KV and scratch then counted in it, not above):
  // the expert tier's VRAM is budget_bytes - session_bytes, n_staging_slots of it staging.
  uint64_t session_bytes = 0;
  int n_staging_slots = 0;
};

struct LayerPlacement {
  int layer = 0;
  int device = -1;                     // the GPU of its attention, norms and router; -1: host (CPU)
  double copy_share = 0;               // generation: of the host-side FFN bytes a token needs, the
                                       // share copied to the GPU (the rest the CPU computes)
  int n_units_gpu = 0, n_units_cpu = 0;  // units not in VRAM, by processor
};

// Per-token (generation) or per-batch (prompt) work of each resource, and the seconds it takes.
struct ResourceLoad {
  double vram_bytes = 0, ram_bytes = 0, pcie_bytes = 0, ssd_bytes = 0;
  double gpu_flops = 0, cpu_flops = 0;
  double vram_s = 0, ram_s = 0, pcie_s = 0, ssd_s = 0, gpu_flops_s = 0, cpu_flops_s = 0;
};

struct PlanDevices {
  std::vector<GpuUse> gpus;
  std::vector<LayerPlacement> layers;
  ResourceLoad generation;  // per token
  // Prompt processing: batches of n_batch tokens; each needed expert copied once per batch.
  ResourceLoad prompt;  // per batch
  double prompt_tokens_per_second = 0;  // 0: not predicted (no CPU rate where the CPU computes)
  Limit prompt_limit = Limit::gpu_compute;
  double prompt_copy_share = 0;  // of host-side FFN work in a batch, the share copied to the GPU
  uint64_t host_pinned_bytes = 0;  // host RAM the GPU plan pins (resident units and the pool)
};

struct Plan : PlanFixed, PlanPlacement, PlanPool, PlanPrediction, PlanDevices {
  PlanInputs inputs;  // as given, with the budget filled in
  ModelConfig config;
  std::vector<gguf::TensorInfo> table;  // kept so revise() can re-solve
  uint64_t file_bytes = 0;              // the model file's size (its last read range ends there); 0: a table alone
  uint64_t used_bytes = 0;              // resident weights + kv + scratch + pool
};

// Role of a GGUF tensor by its name (blk.N.attn_q.weight, token_embd.weight, ...), from the tensor
// catalogue (model/catalogue.h); layer is set for per-layer tensors, else -1. A name the catalogue
// does not know is `other`, layer -1.
TensorRole classify_tensor(std::string_view name, int* layer);

// Throws strata::Error when the budget is below the minimum resident set (the message gives the
// minimum and what it is made of) or the table does not fit the config.
Plan make_plan(const gguf::File& file, const ModelConfig& config, const PlanInputs& inputs);
Plan make_plan(std::span<const gguf::TensorInfo> tensors, const ModelConfig& config, const PlanInputs& inputs);

// Re-solves with observed expert selections, counts[layer][expert] (any scale; layers without
// counts keep the prior k/E).
Plan revise(const Plan& plan, const std::vector<std::vector<double>>& expert_counts);

// "8G", "512M", "1.5T", "4096" (bytes); K/M/G/T are powers of 1024, a trailing B/iB is allowed.
uint64_t parse_size(std::string_view text);
std::string format_bytes(double bytes);
// Available memory less a margin: under a cgroup limit that binds (v2 memory.max, v1
// memory.limit_in_bytes, minus current usage other than inactive page cache) 3% (at least 96 MiB)
// for what the process holds beyond its plan; otherwise MemAvailable less 5% (at least 256 MiB),
// since other programs share it. Call it before loading a model: what is in use then counts as
// taken.
uint64_t detect_memory_budget();
// What the engine allocates (memory.cpp asks the engine's own sizing functions): the KV cache for
// a context, and a session's scratch for a batch and thread count.
uint64_t kv_cache_bytes(const ModelConfig& config, int n_ctx, int n_batch = 512, DType kv_type = DType::F16);
uint64_t scratch_bytes(const ModelConfig& config, int n_ctx, int n_batch, int n_threads = 1);

// `strata plan` output: the plan in words, and as JSON (per-tensor placement included).
std::string describe(const Plan& plan);
std::string to_json(const Plan& plan, int indent = 2);

}  // namespace strata::tier
