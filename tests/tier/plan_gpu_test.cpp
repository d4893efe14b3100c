// The planner over three tiers (VRAM, host RAM, SSD) and two processors, on synthetic tables and
// a synthetic H100 profile (issue 14's figures: host RAM 95 GB/s, pinned copies 55 GB/s,
// pageable 8.6 GB/s).
#include <gtest/gtest.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "model/config.h"
#include "support/plan_table.h"
#include "tier/plan/plan.h"
#include "util/error.h"

namespace strata::tier {
namespace {

using test::kMiB;
constexpr uint64_t GiB = uint64_t(1) << 30;

GpuDevice h100(int index, uint64_t mem_bytes) {
  GpuDevice g;
  g.index = index;
  g.name = "synthetic H100";
  g.mem_bytes = mem_bytes;
  g.mem_gbps = 3350;
  g.gflops = 150000;
  g.pcie_pinned_gbps = 55;
  g.pcie_pageable_gbps = 8.6;
  return g;
}

PlanInputs h100_inputs(uint64_t host_bytes, uint64_t gpu_bytes) {
  PlanInputs in;
  in.budget_bytes = host_bytes;
  in.n_ctx = 256;
  in.n_batch = 64;
  in.ram_gbps = 95;
  in.ssd_gbps = 2.0;
  in.cpu_batch_gflops = 1100;
  in.gpus = {h100(0, gpu_bytes)};
  return in;
}

struct Model {
  ModelConfig config;
  test::TensorTable table;
};
Model small_moe(int n_layer = 6) {
  Model m{test::small_plan_config(n_layer, 8, 2), {}};
  m.table = test::small_plan_table(m.config);
  return m;
}

// The smallest VRAM budget the plan accepts, from the error it gives one byte lower.
uint64_t vram_minimum(const Model& m, PlanInputs in) {
  in.gpus[0].mem_bytes = 4 * GiB;
  Plan p = make_plan(m.table.tensors, m.config, in);
  return p.gpus.at(0).minimum_bytes;
}

TEST(PlanGpu, ZeroVramIsTheTwoTierPlan) {
  const Model m = small_moe();
  PlanInputs two = h100_inputs(0, 0);
  two.gpus.clear();
  for (double fraction : {0.0, 0.3, 1.5}) {
    PlanInputs in = two;
    const Plan full = make_plan(m.table.tensors, m.config, [&] {
      PlanInputs f = in;
      f.budget_bytes = 64 * GiB;
      return f;
    }());
    in.budget_bytes = full.minimum_bytes + uint64_t(fraction * double(full.model_bytes));
    const Plan without = make_plan(m.table.tensors, m.config, in);
    in.gpus = {h100(0, 0)};  // a GPU, with no memory for the plan
    const Plan zero = make_plan(m.table.tensors, m.config, in);
    EXPECT_TRUE(zero.gpus.empty());
    EXPECT_TRUE(zero.layers.empty());
    EXPECT_EQ(to_json(zero), to_json(without));
    EXPECT_EQ(describe(zero), describe(without));
    for (const auto& u : zero.units) {
      EXPECT_EQ(u.device, -1);
      EXPECT_EQ(u.compute, Processor::cpu);
      EXPECT_NE(u.tier, Tier::vram);
    }
  }
}

TEST(PlanGpu, BelowTheVramMinimumNamesIt) {
  const Model m = small_moe();
  PlanInputs in = h100_inputs(4 * GiB, 0);
  const uint64_t minimum = vram_minimum(m, in);
  in.gpus[0].mem_bytes = minimum;
  EXPECT_NO_THROW(make_plan(m.table.tensors, m.config, in));
  in.gpus[0].mem_bytes = minimum - 1;
  try {
    make_plan(m.table.tensors, m.config, in);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("GPU 0 memory budget"), std::string::npos) << what;
    EXPECT_NE(what.find("minimum of " + format_bytes(double(minimum))), std::string::npos) << what;
    EXPECT_NE(what.find("output head"), std::string::npos) << what;
  }
}

TEST(PlanGpu, AttentionNormsAndRouterGoFirst) {
  const Model m = small_moe(6);
  PlanInputs in = h100_inputs(4 * GiB, 0);
  const uint64_t minimum = vram_minimum(m, in);
  in.gpus[0].mem_bytes = 4 * GiB;
  const Plan all = make_plan(m.table.tensors, m.config, in);
  // A core: 4 x 1 MiB attention, norms, router and the layer's KV.
  const uint64_t core = 4 * kMiB + 2 * 1024 + 4096 + all.kv_bytes / 6;
  // Room for four cores and a bit: four layers' cores in VRAM, no expert.
  in.gpus[0].mem_bytes = minimum + 4 * core + kMiB / 2;
  Plan p = make_plan(m.table.tensors, m.config, in);
  int on_gpu = 0;
  for (const auto& l : p.layers) on_gpu += l.device == 0;
  EXPECT_EQ(on_gpu, 4);
  for (const auto& u : p.units) EXPECT_NE(u.tier, Tier::vram) << u.layer << "/" << u.expert;
  for (const auto& t : p.tensors)
    if ((t.role == TensorRole::attention || t.role == TensorRole::router) && p.layers[size_t(t.layer)].device == 0) {
      EXPECT_EQ(t.tier, Tier::vram) << t.name;
    }
  // Room for every core and three experts: all cores first, then experts.
  in.gpus[0].mem_bytes = minimum + 6 * core + 3 * 3 * kMiB + kMiB / 2;
  p = make_plan(m.table.tensors, m.config, in);
  for (const auto& l : p.layers) EXPECT_EQ(l.device, 0) << "layer " << l.layer;
  int experts = 0;
  for (const auto& u : p.units) experts += u.tier == Tier::vram;
  EXPECT_EQ(experts, 3);
  EXPECT_LE(p.gpus[0].used_bytes, p.gpus[0].budget_bytes);
  for (const auto& t : p.tensors)
    if (t.layer < 0 && (t.role == TensorRole::output || t.role == TensorRole::norm)) {
      EXPECT_EQ(t.tier, Tier::vram) << t.name;
      EXPECT_EQ(t.device, 0) << t.name;
    }
}

// A session's GPU (GpuDevice::session_bytes, the runtime's count of its weights, KV cache,
// activations and scratch): every core and the head are in VRAM inside it whatever the budget;
// the minimum is the session and a slot per routed rank; staging takes two per rank where the
// budget has them; each expert in VRAM takes a slot.
TEST(PlanGpu, TheSessionIsTheGpusFixedPart) {
  const Model m = small_moe(6);
  PlanInputs in = h100_inputs(4 * GiB, 0);
  const uint64_t session = 700 * kMiB, slot = 3 * kMiB + 768;
  const int k = 2;
  in.gpus[0].session_bytes = session;
  in.gpus[0].expert_slot_bytes = slot;
  const uint64_t minimum = session + k * slot;
  in.gpus[0].mem_bytes = minimum;
  Plan p = make_plan(m.table.tensors, m.config, in);
  ASSERT_EQ(p.gpus.size(), 1u);
  EXPECT_EQ(p.gpus[0].minimum_bytes, minimum);
  EXPECT_EQ(p.gpus[0].session_bytes, session);
  EXPECT_EQ(p.gpus[0].n_staging_slots, k);
  EXPECT_EQ(p.gpus[0].used_bytes, minimum);
  for (const auto& l : p.layers) EXPECT_EQ(l.device, 0) << "layer " << l.layer;
  for (const auto& u : p.units) EXPECT_NE(u.tier, Tier::vram) << u.layer << "/" << u.expert;
  for (const auto& t : p.tensors)
    if (t.role == TensorRole::attention || t.role == TensorRole::router || t.role == TensorRole::output) {
      EXPECT_EQ(t.tier, Tier::vram) << t.name;
    }
  EXPECT_NE(describe(p).find("session " + format_bytes(double(session))), std::string::npos) << describe(p);
  in.gpus[0].mem_bytes = minimum - 1;
  try {
    make_plan(m.table.tensors, m.config, in);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("minimum of " + format_bytes(double(minimum))), std::string::npos) << what;
    EXPECT_NE(what.find("the session"), std::string::npos) << what;
  }
  // Room for staging two per rank and five experts.
  in.gpus[0].mem_bytes = session + (2 * k + 5) * slot + slot / 2;
  p = make_plan(m.table.tensors, m.config, in);
  EXPECT_EQ(p.gpus[0].n_staging_slots, 2 * k);
  EXPECT_EQ(p.gpus[0].n_expert_vram, 5);
  EXPECT_EQ(p.gpus[0].expert_cache_bytes, 5 * slot);
  EXPECT_EQ(p.gpus[0].used_bytes, session + (2 * k + 5) * slot);
  const auto j = nlohmann::json::parse(to_json(p));
  EXPECT_EQ(j["gpus"][0]["session_bytes"].get<uint64_t>(), session);
}

TEST(PlanGpu, MoreVramNeverPredictsSlower) {
  const Model m = small_moe(6);
  for (uint64_t host : {uint64_t(40) * kMiB, 4 * GiB}) {  // experts partly on the SSD, or all in host RAM
    PlanInputs in = h100_inputs(host, 0);
    const uint64_t lo = vram_minimum(m, in), hi = lo + 200 * kMiB;
    double previous = 1e30;
    for (int i = 0; i <= 100; ++i) {
      in.gpus[0].mem_bytes = lo + (hi - lo) * uint64_t(i) / 100;
      const Plan p = make_plan(m.table.tensors, m.config, in);
      EXPECT_LE(p.gpus[0].used_bytes, p.gpus[0].budget_bytes);
      EXPECT_LE(p.used_bytes, in.budget_bytes);
      EXPECT_LE(p.seconds_per_token, previous * (1 + 1e-9)) << "host " << host << " vram " << in.gpus[0].mem_bytes;
      EXPECT_GE(p.seconds_per_token, p.lp_seconds_per_token * (1 - 1e-6));
      previous = p.seconds_per_token;
    }
    // Everything in VRAM at the end: only the GPU works.
    const Plan last = make_plan(m.table.tensors, m.config, in);
    for (const auto& u : last.units) EXPECT_EQ(u.tier, Tier::vram);
    EXPECT_EQ(last.limit, Limit::vram_bandwidth);
    EXPECT_DOUBLE_EQ(last.generation.pcie_bytes, 0.0);
  }
}

// Host experts of a layer, read from host RAM at 95 GB/s by the CPU or copied at 55 GB/s: with
// both, a token's host-side bytes split about 95 : 55, faster than either alone.
TEST(PlanGpu, SplitComputeWhenBothBandwidthsHelp) {
  const Model m = small_moe(6);
  PlanInputs in = h100_inputs(4 * GiB, 0);
  const uint64_t minimum = vram_minimum(m, in);
  const uint64_t core = 4 * kMiB + 2 * 1024 + 4096 +
                        make_plan(m.table.tensors, m.config,
                                  [&] {
                                    PlanInputs f = in;
                                    f.gpus[0].mem_bytes = 4 * GiB;
                                    return f;
                                  }())
                                .kv_bytes /
                            6;
  in.gpus[0].mem_bytes = minimum + 6 * core + kMiB / 2;  // cores only: every expert on the host
  const Plan split = make_plan(m.table.tensors, m.config, in);
  int gpu = 0, cpu = 0;
  for (const auto& u : split.units) {
    EXPECT_EQ(u.tier, Tier::host);
    (u.compute == Processor::gpu ? gpu : cpu) += 1;
    if (u.compute == Processor::gpu) {
      EXPECT_EQ(u.device, 0);
    }
  }
  EXPECT_GT(gpu, 0);
  EXPECT_GT(cpu, 0);
  for (const auto& l : split.layers) {
    EXPECT_GT(l.copy_share, 0.2) << "layer " << l.layer;
    EXPECT_LT(l.copy_share, 0.6) << "layer " << l.layer;
  }
  EXPECT_GT(split.generation.pcie_bytes, 0.0);
  EXPECT_GT(split.generation.ram_bytes, 0.0);

  // A slow link: the CPU computes every host expert.
  PlanInputs slow = in;
  slow.gpus[0].pcie_pinned_gbps = 0.5;
  const Plan cpu_only = make_plan(m.table.tensors, m.config, slow);
  for (const auto& u : cpu_only.units) EXPECT_EQ(u.compute, Processor::cpu);
  // A slow CPU: every host expert is copied.
  PlanInputs slow_ram = in;
  slow_ram.ram_gbps = 2;
  const Plan copy_only = make_plan(m.table.tensors, m.config, slow_ram);
  for (const auto& u : copy_only.units) EXPECT_EQ(u.compute, Processor::gpu);

  // The split beats what either path alone would take on the same machine.
  const double host_bytes = split.generation.pcie_bytes + split.generation.ram_bytes;
  const double ffn_alone = std::min(host_bytes / 95e9, host_bytes / 55e9);
  const double ffn_split = split.seconds_per_token - (cpu_only.seconds_per_token - host_bytes / 95e9);
  EXPECT_LT(ffn_split, ffn_alone * 0.8);
}

TEST(PlanGpu, ManyGpusSplitTheLayers) {
  const Model m = small_moe(6);
  PlanInputs in = h100_inputs(4 * GiB, 0);
  in.gpus = {h100(0, 2 * GiB), h100(1, 2 * GiB)};
  const Plan p = make_plan(m.table.tensors, m.config, in);
  ASSERT_EQ(p.gpus.size(), 2u);
  EXPECT_EQ(p.gpus[0].first_layer, 0);
  EXPECT_EQ(p.gpus[0].n_layers, 3);
  EXPECT_EQ(p.gpus[1].first_layer, 3);
  EXPECT_EQ(p.gpus[1].n_layers, 3);
  for (const auto& l : p.layers) EXPECT_EQ(l.device, l.layer < 3 ? 0 : 1);
  for (const auto& u : p.units) {
    EXPECT_EQ(u.tier, Tier::vram);
    EXPECT_EQ(u.device, u.layer < 3 ? 0 : 1);
  }
  for (const auto& t : p.tensors)
    if (t.layer < 0 && t.role == TensorRole::output) {
      EXPECT_EQ(t.device, 1);  // the head on the last layer's GPU
    }
  auto j = nlohmann::json::parse(to_json(p));
  EXPECT_EQ(j["gpus"].size(), 2u);
  EXPECT_EQ(j["layers"][5]["device"].get<int>(), 1);
}

TEST(PlanGpu, DescribesTiersProcessorsAndBounds) {
  const Model m = small_moe(6);
  PlanInputs in = h100_inputs(60 * kMiB, 0);
  in.gpus[0].mem_bytes = vram_minimum(m, in) + 40 * kMiB;
  const Plan p = make_plan(m.table.tensors, m.config, in);
  const std::string text = describe(p);
  for (const char* want : {"VRAM", "host RAM", "SSD", "GPU 0", "CPU", "generation", "prompt", "bound by"})
    EXPECT_NE(text.find(want), std::string::npos) << want << "\n" << text;
  EXPECT_GT(p.prompt_tokens_per_second, 0.0);
  auto j = nlohmann::json::parse(to_json(p));
  EXPECT_TRUE(j["per_token"].contains("prompt_tokens_per_second"));
  bool saw_vram = false;
  for (const auto& t : j["tensors"]) saw_vram |= t.value("tier", "") == "VRAM";
  EXPECT_TRUE(saw_vram);
}

// The cost model against issue 14's llama.cpp measurements (lent H100, forged Mixtral-8x7B
// Q4_K_M, 16 threads), each setting expressed as a plan: which experts the GPU holds, and whether
// host experts are copied (pageable, 8.6 GB/s: llama.cpp's prompt path) or computed by the CPU
// (its generation path: no copies). Generation predictions are bounds (bandwidth alone), above
// what llama.cpp reaches by a stated factor; prompt predictions of the copy-bound settings land
// within 15% of it. `-ngl 9` (whole layers on the CPU) is not a plan this planner makes: with
// VRAM for every layer's attention it puts them all there.
TEST(PlanGpu, PredictionsAgainstLlamaCppOnTheH100) {
  ModelConfig c;
  const test::TensorTable t = test::mixtral_q4_k_m_table(&c);
  PlanInputs base = h100_inputs(100 * GiB, 0);
  base.n_ctx = 4096;
  base.n_batch = 512;
  base.n_threads = 16;
  auto plan = [&](double vram_gb, double pcie_gbps, double cpu_gflops) {
    PlanInputs in = base;
    in.gpus[0].mem_bytes = uint64_t(vram_gb * double(GiB));
    in.gpus[0].pcie_pinned_gbps = pcie_gbps;
    in.cpu_batch_gflops = cpu_gflops;
    return make_plan(t.tensors, c, in);
  };
  // kNoLink: no copies; kCopyAll: a CPU batch rate too slow to take any prompt work.
  constexpr double kNoLink = 1e-3, kPageable = 8.6, kCopyAll = 1e-3;
  struct Check {
    const char* setting;
    double predicted, measured, lo, hi;  // predicted / measured within [lo, hi]
  };
  const Check checks[] = {
      {"everything on the GPU, generation", plan(30, 55, 1100).tokens_per_second, 196.7, 1.5, 2.5},
      {"everything on the GPU, prompt", plan(30, 55, 1100).prompt_tokens_per_second, 4334, 1.1, 1.6},
      {"-ncmoe 24 (8 GB), generation", plan(8, kNoLink, 1100).tokens_per_second, 13.4, 1.1, 1.5},
      {"-ncmoe 24 --no-host (8 GB), generation", plan(8, kNoLink, 1100).tokens_per_second, 15.5, 1.0, 1.3},
      {"-ncmoe 24 (8 GB), prompt", plan(8, kPageable, kCopyAll).prompt_tokens_per_second, 221, 0.85, 1.15},
      {"-ot exps=CPU (2 GB), generation", plan(2, kNoLink, 1100).tokens_per_second, 10.9, 1.1, 1.4},
      {"-ot exps=CPU (2 GB), prompt", plan(2, kPageable, kCopyAll).prompt_tokens_per_second, 157, 0.85, 1.15},
  };
  PlanInputs cpu_only = base;
  cpu_only.gpus.clear();
  const double cpu_only_tok_s = make_plan(t.tensors, c, cpu_only).tokens_per_second;
  const Check cpu_check{"CPU only, generation", cpu_only_tok_s, 10.0, 1.0, 1.3};
  for (const Check& k : checks) {
    const double ratio = k.predicted / k.measured;
    EXPECT_GE(ratio, k.lo) << k.setting << ": predicted " << k.predicted << ", llama.cpp " << k.measured;
    EXPECT_LE(ratio, k.hi) << k.setting << ": predicted " << k.predicted << ", llama.cpp " << k.measured;
    std::printf("  %-42s predicted %8.1f tok/s, llama.cpp %8.1f (%.2fx)\n", k.setting, k.predicted, k.measured, ratio);
  }
  EXPECT_GE(cpu_check.predicted / cpu_check.measured, cpu_check.lo) << cpu_check.predicted;
  EXPECT_LE(cpu_check.predicted / cpu_check.measured, cpu_check.hi) << cpu_check.predicted;
  // Strata's own plan at 8 GB beats every llama.cpp setting at ~8 GB on both counts.
  const Plan ours = plan(8, 55, 1100);
  EXPECT_GT(ours.tokens_per_second, 1.5 * 15.5);
  EXPECT_GT(ours.prompt_tokens_per_second, 3 * 221.0);
}

}  // namespace
}  // namespace strata::tier
