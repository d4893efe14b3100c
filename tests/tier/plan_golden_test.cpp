// The two-tier plan (RAM and SSD, no GPU) as it was before the GPU tier joined the planner:
// digests of the decisions (every unit's residency, the pool, the prediction) recorded from the
// planner of commit 7c87100 on synthetic tables, re-recorded when the attention scratch began to
// keep each row's scores (its bytes grow with the context, so every plan's used bytes moved), and
// again when those scores were bounded and the split-K partials sized for the threads, again when
// the tiles changed (q8_0 query rows in, the transposed key block and f16 query rows out), and the MoE
// cases when the expert pool's slots began to count as cache (lfu: cost_model.h).
// A plan with no GPU, or with --gpu-mem 0, must come out identical.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "model/config.h"
#include "support/plan_table.h"
#include "tier/plan/plan.h"

namespace strata::tier {
namespace {

using test::kMiB;

// Everything the two-tier planner decides, as text, hashed (FNV-1a) so a table of cases stays short.
std::string digest(const Plan& p) {
  std::string s;
  char buf[160];
  for (const auto& u : p.units) s += u.resident ? '1' : '0';
  std::snprintf(buf, sizeof buf, "|d%d ds%d es%d pool%llu used%llu lim%d t%.9e ssd%.6e ram%.6e", p.prefetch_depth,
                p.n_dense_slots, p.n_expert_slots, (unsigned long long)p.pool_bytes, (unsigned long long)p.used_bytes,
                int(p.limit), p.seconds_per_token, p.ssd_bytes_per_token, p.ram_bytes_per_token);
  s += buf;
  for (const auto& t : p.tensors) {
    s += "|" + t.name + ":" + placement_name(t.placement) + ":" + std::to_string(t.resident_bytes);
    for (int e : t.resident_experts) s += "," + std::to_string(e);
  }
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)h);
  return buf;
}

struct Case {
  const char* name;
  int n_layer, n_expert;
  double budget_fraction;  // of the way from the minimum to everything resident
  double recall, gflops;
  const char* digest;  // of the two-tier planner's plan
};

constexpr Case kCases[] = {
    {"dense tight", 8, 0, 0.0, 0.0, 0.0, "dd9d9cd4fee12ef7"},
    {"dense half", 8, 0, 0.5, 0.0, 0.0, "d13d7bd38de64d4f"},
    {"dense slow compute", 8, 0, 0.5, 0.0, 0.2, "94aa914520fcb1f2"},
    {"dense fits", 8, 0, 1.2, 0.0, 0.0, "aad4140df064d284"},
    {"moe tight", 6, 8, 0.0, 0.0, 0.0, "f3c834c7af02f65b"},
    {"moe third", 6, 8, 0.33, 0.0, 0.0, "7264b8fdfdf7fe0a"},
    {"moe recall", 6, 8, 0.33, 0.8, 0.0, "c9796837c32af83b"},
    {"moe slow compute", 6, 8, 0.6, 0.5, 0.3, "7a103a37571de145"},
    {"moe fits", 6, 8, 1.2, 0.0, 0.0, "64d5ee274ee08c69"},
};

Plan plan_for(const Case& c, bool with_gpu_profile) {
  const ModelConfig config = test::small_plan_config(c.n_layer, c.n_expert, 2);
  const test::TensorTable t = test::small_plan_table(config);
  PlanInputs in;
  in.budget_bytes = 64ull << 30;
  in.n_ctx = 256;
  in.n_batch = 8;
  in.expert_prefetch_recall = c.recall;
  in.compute_gflops = c.gflops;
  const Plan full = make_plan(t.tensors, config, in);
  const double lo = double(full.minimum_bytes), hi = double(full.model_bytes + full.kv_bytes + full.scratch_bytes);
  in.budget_bytes = uint64_t(lo + (hi - lo) * c.budget_fraction);
  if (with_gpu_profile) {  // a GPU the plan may not use (--gpu-mem 0), with the lent H100's speeds
    GpuDevice g;
    g.mem_gbps = 3350, g.gflops = 150000, g.pcie_pinned_gbps = 55, g.pcie_pageable_gbps = 8.6;
    in.gpus = {g};
    in.cpu_batch_gflops = 1100;
  }
  return make_plan(t.tensors, config, in);
}

TEST(PlanGolden, TwoTierPlanUnchanged) {
  for (const Case& c : kCases) {
    EXPECT_EQ(digest(plan_for(c, false)), c.digest) << c.name;
    EXPECT_EQ(digest(plan_for(c, true)), c.digest) << c.name << ", --gpu-mem 0";
  }
}

}  // namespace
}  // namespace strata::tier
