#pragma once
// The cost model: seconds per token of a placement, from the units' bytes and the machine's
// speeds (DESIGN §2). The LP minimises the same model relaxed; rounding's candidates are judged
// by it exactly.
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

// Both referenced objects must outlive the model. kv_bytes: the KV cache a token reads at a full
// context, spread evenly over the layers.
CostModel make_cost_model(const UnitTable& table, const PlanInputs& in, uint64_t kv_bytes);

// The prediction for units resident where `resident` says; overlap: a pool deep enough (>= 2) to
// read ahead. Fills every field of PlanPrediction but the LP's and the solver's.
PlanPrediction predict(const CostModel& model, const std::vector<bool>& resident, bool overlap);

}  // namespace strata::tier
