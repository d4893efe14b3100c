#pragma once
// The placement LP: the cost model (cost_model.h) relaxed to fractions x_u in [0, 1] of each
// unit resident, minimising expected seconds per token under the bytes left for units. The only
// file that includes the solver (COIN-OR CLP) is lp.cpp.
#include <string>
#include <vector>

#include "tier/plan/cost_model.h"

namespace strata::tier {

struct LpSolution {
  std::vector<double> x;  // per unit, clamped to [0, 1]
  double seconds = 0;     // the relaxation's optimum per token (a lower bound for whole units)
  std::string status;     // "optimal" or the solver's status
};

// overlap: the pool reads ahead (prefetch depth >= 2), as in predict().
LpSolution solve_relaxation(const CostModel& model, double free_bytes, bool overlap);

struct GpuLpSolution {
  GpuAssignment x;     // fractions, clamped to [0, 1]
  double seconds = 0;  // the relaxation's optimum per token, hand-overs left out (a lower bound)
  std::string status;
};

// The three-tier LP (cost_model.h's GpuCostModel relaxed): per unit the fractions in VRAM, in host
// RAM and copied to the GPU, per layer the core's fraction in VRAM, under each GPU's free VRAM
// (free_vram[g] for in.gpus[g]) and the host's free bytes. Host bytes of the cores not in VRAM
// count against free_host.
GpuLpSolution solve_gpu_relaxation(const GpuCostModel& model, const std::vector<double>& free_vram, double free_host);

}  // namespace strata::tier
