#pragma once
// The cost model: seconds per token of a placement, from the units' bytes and the machine's
// speeds (DESIGN §2). The LP minimises the same model relaxed; rounding's candidates are judged
// by it exactly.
//
// The expert cache is the streamer's lfu (ExpertStreamer's default policy): every expert slot is
// cache, the pool's too, and it keeps the experts used most. So a plan's cached experts are its
// resident ones and, in its pool slots, the most probable of the rest (lfu_hit_rate).
//
// Per token (c_l: compute of layer l = bytes it touches / RAM bandwidth, or FLOPs / rate when
// that is larger; io: bytes streamed / SSD bandwidth, weighted by access probability):
//   prefetch depth 1 (one slot per streamed type: nothing is read ahead)
//     t_l = c_l + io_dense_l + io_experts_l
//   prefetch depth >= 2 (reads run ahead of compute into further slots)
//     t_l >= c_l,  t_l >= (1 - recall) * io_experts_l   (misses nobody predicted are read after
//                                                         routing, hidden only by hit experts)
//     sum_l t_l + head >= sum_l io_l + embedding rows    (the SSD is busy the whole token at most)
#include <vector>

#include "tier/plan/plan.h"
#include "tier/plan/units.h"

namespace strata::tier {

inline constexpr double kGB = 1e9;

// The modelled hit rate of an lfu cache of `slots` experts: the `slots` largest access
// probabilities (per expert, per token, every layer's: the cache is one pool) take their share of
// all accesses. Checked against bench/routing_replay.py's lfu on the trained model's traces, with
// the probabilities revise() makes of their counts (tests/tier/lfu_model_test.cpp): within 6
// points on the committed ones at 10-50 % of the experts (it overstates: lfu only learns what is
// popular), within 10 points on the full code, prose and chat traces (on code it understates: the
// popular experts drift from file to file and lfu follows). The model it replaces (hits: the
// resident experts' mass, the pool none) gives 10 / 25 / 50 % with no statistics, where lfu hits
// 23 / 50 / 78 % on the committed code trace.
double lfu_hit_rate(std::vector<double> probability, int slots);

struct CostModel {
  const PlanInputs* in = nullptr;
  const UnitTable* table = nullptr;
  std::vector<double> compute_ram_s;        // per layer: touched bytes / RAM bandwidth
  std::vector<double> compute_flops_s;      // per layer: FLOPs / rate (0 when no rate given)
  double head_ram_s = 0, head_flops_s = 0;  // output norm + head
  double ram_bytes_per_token = 0;           // weights touched and the KV cache at a full context

  int n_layer() const { return table->n_layer; }
  const std::vector<PlanUnit>& units() const { return table->units; }
  double compute_s(int l) const { return std::max(compute_ram_s[size_t(l)], compute_flops_s[size_t(l)]); }
  double head_s() const { return std::max(head_ram_s, head_flops_s); }
  double io_s(const PlanUnit& u) const { return u.probability * double(u.n_bytes) / (in->ssd_gbps * kGB); }
  double embd_io_s() const { return table->embd_row_bytes / (in->ssd_gbps * kGB); }
};

// --- Three tiers (plans with GPUs)
// Per layer l, per token: the core (attention, norms, router, the layer's KV) runs on its GPU from
// VRAM, or on the CPU from host RAM; then the FFN units, each in VRAM (GPU), or on the host side
// (host RAM or streamed from the SSD) computed by the CPU, or copied over PCIe and computed by the
// GPU. The processors and the link work at once:
//   t_l = core_l + max(gpu_l, cpu_l, pcie_l, (1 - recall) * ssd_misses_l) [+ a hand-over when
//         both processors work in the layer]
//   sum_l t_l + head >= every SSD read of the token
// A prompt batch of B tokens needs expert u once with probability q_u = 1 - (1 - p_u)^B and
// B * p_u of its tokens; the host-side share that is copied is chosen per batch (copy_share),
// and the resources work in overlapped waves: a batch takes the longest of them.
// The VRAM units are the GPU tier's cache (ExpertCache, lfu): decode's copies enter it in place of
// the least used, so with routing as the probabilities say it holds the likeliest experts, the
// units placed here, and a copy costs the link the same whether it lands in the cache or in
// staging. Routing that drifts (real text) is what the model leaves out: lfu follows it, a static
// placement would not.
struct GpuCostModel {
  const PlanInputs* in = nullptr;
  const UnitTable* table = nullptr;
  std::vector<int> layer_gpu;      // per layer: index into in->gpus of the GPU its core would use
  int head_gpu = 0;                // the GPU that holds the output head (the last layer's)
  std::vector<double> core_bytes;  // per layer: core weights and the layer's KV at a full context
  std::vector<double> kv_layer_bytes;
  double head_bytes = 0;
  // The session's GPU (GpuDevice::session_bytes): every core and the head sit in VRAM inside the
  // session's bytes, and an expert there takes a slot of expert_slot_bytes.
  bool cores_in_session = false;
  double expert_slot_bytes = 0;
  // VRAM a unit takes where the plan puts it there (a dense matrix of a session's GPU, such as a
  // shared expert, is in the session's bytes already).
  double vram_bytes(const PlanUnit& u) const {
    if (u.kind == UnitKind::dense_ffn) return cores_in_session ? 0.0 : double(u.n_bytes);
    return expert_slot_bytes > 0 ? expert_slot_bytes : double(u.n_bytes);
  }

  const GpuDevice& gpu(int layer) const { return in->gpus[size_t(layer_gpu[size_t(layer)])]; }
  double gpu_bps(int layer) const { return gpu(layer).mem_gbps * kGB; }
  double pcie_bps(int layer) const { return gpu(layer).pcie_pinned_gbps * kGB; }
  // The CPU on bytes in host RAM: reading them, or its arithmetic where a rate is given.
  double cpu_s(double bytes, double elems) const {
    const double flops = in->compute_gflops > 0 ? 2.0 * elems / (in->compute_gflops * 1e9) : 0.0;
    return std::max(bytes / (in->ram_gbps * kGB), flops);
  }
  double core_gpu_s(int l) const { return core_bytes[size_t(l)] / gpu_bps(l); }
  double core_cpu_s(int l) const { return cpu_s(core_bytes[size_t(l)], table->core_elems[size_t(l)]); }
  double head_s() const { return head_bytes / (in->gpus[size_t(head_gpu)].mem_gbps * kGB); }
};

// A placement of the GPU plan, as fractions (the LP's) or whole units (0 or 1).
struct GpuAssignment {
  std::vector<double> core_vram;  // per layer: the core in VRAM on its GPU
  std::vector<double> vram;       // per unit: in VRAM on its layer's GPU
  std::vector<double> host;       // per unit: in host RAM (pinned); the rest streams from the SSD
  std::vector<double> copy;       // per unit: computed by the GPU after a copy (<= 1 - vram)
};

// Seconds the work of each resource takes, and the one that bounds.
struct GpuPrediction {
  double seconds = 0;  // per token (generation) or per batch (prompt); 0 with unknown rates
  Limit limit = Limit::vram_bandwidth;
  ResourceLoad load;
};

// Gives in->gpus for every layer's core: contiguous ranges of layers in proportion to each GPU's
// mem_bytes (GPUs with none take no layer).
GpuCostModel make_gpu_cost_model(const UnitTable& table, const PlanInputs& in, uint64_t kv_bytes);
GpuPrediction predict_generation(const GpuCostModel& model, const GpuAssignment& a);
// copy_share: of the host-side units' work in the batch, the share copied to the GPU.
GpuPrediction predict_prompt(const GpuCostModel& model, const GpuAssignment& a, int n_batch, double copy_share);
// The copy share that makes the batch fastest, and its prediction (scans [0, 1]).
GpuPrediction best_prompt(const GpuCostModel& model, const GpuAssignment& a, int n_batch, double* copy_share);

// Both referenced objects must outlive the model. kv_bytes: the KV cache a token reads at a full
// context, spread evenly over the layers.
CostModel make_cost_model(const UnitTable& table, const PlanInputs& in, uint64_t kv_bytes);

// The prediction for units resident where `resident` says, with n_expert_pool_slots more expert
// slots (the pool: the cache holds the most probable of the experts not resident there); overlap:
// a pool deep enough (>= 2) to read ahead. Fills every field of PlanPrediction but the LP's and
// the solver's.
PlanPrediction predict(const CostModel& model, const std::vector<bool>& resident, bool overlap,
                       int n_expert_pool_slots);
// How much of each unit the cache holds: the resident ones whole, and in the pool's slots the
// most probable experts of the rest, equally probable ones sharing what is left (so that with
// no statistics every layer's misses shrink alike).
std::vector<double> cached_units(const std::vector<PlanUnit>& units, const std::vector<bool>& resident,
                                 int n_expert_pool_slots);

}  // namespace strata::tier
