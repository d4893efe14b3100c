// The GPU expert tier (tier/gpu/gpu_experts.h) against the run with every expert resident, on
// forged MoE models: split decode (cached experts on the device, misses on the CPU or copied to
// staging) and prompt batches in waves of copies. On the CPU backend the tier's "device" is the
// host (its arena plain memory, its copies memcpy), which checks the bookkeeping exactly: the
// logits must be bit-identical, since every expert still runs once over the same rows. On a GPU
// (the CUDA build on a GPU machine; STRATA_REQUIRE_GPU=1 makes a missing one a failure) the tier
// runs against the all-GPU session within the CPU/GPU tolerance of gpu_moe_forward_test.cpp: 2% of
// the logit range, since the CPU's share quantizes activations as ggml does, up to the first token
// any layer routed differently (that rounding flips near-tied choices of random weights).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "backend/backend.h"
#include "model/model.h"
#include "runtime/session.h"
#include "support/forge.h"
#include "support/paths.h"
#include "support/routing_recorder.h"
#include "tier/gpu/gpu_experts.h"
#include "tier/gpu/gpu_session.h"
#include "tier/plan/plan.h"
#include "util/error.h"

namespace strata::tier {
namespace {

namespace fs = std::filesystem;

bool gpu_required() {
  const char* v = std::getenv("STRATA_REQUIRE_GPU");
  return v && std::strcmp(v, "1") == 0;
}

std::string tokenizer_source() {
  if (const char* env = std::getenv("STRATA_TOKENIZER")) return env;
  return test::model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
}

struct Case {
  const char* name;
  std::vector<std::string> forge_args;
  Device device;
};

const Case kCases[] = {
    {"llama_tiny_moe_Q8_0_cpu",
     {"--arch", "llama", "--preset", "tiny-moe", "--type", "Q8_0", "--seed", "5"},
     Device::cpu},
    {"qwen2moe_small_Q4_K_M_cpu",
     {"--arch", "qwen2moe", "--preset", "small", "--type", "Q4_K_M", "--seed", "5"},
     Device::cpu},
    {"llama_tiny_moe_Q8_0_gpu",
     {"--arch", "llama", "--preset", "tiny-moe", "--type", "Q8_0", "--seed", "5"},
     Device::gpu},
    {"qwen3moe_small_Q4_K_M_gpu",
     {"--arch", "qwen3moe", "--preset", "small", "--type", "Q4_K_M", "--seed", "5"},
     Device::gpu},
    {"qwen2moe_small_Q4_K_M_gpu", {"--arch", "qwen2moe", "--preset", "small", "--type", "Q4_K_M", "--seed", "5"},
     Device::gpu},
};

constexpr int kBatch = 32;

class GpuExpertTier : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    std::string why;
    if (GetParam().device == Device::gpu) {
      if (!backend::cuda_built()) why = "this build has no CUDA backend (configure with -DSTRATA_CUDA=ON)";
      else if (backend::cuda_device_count() == 0) why = "no CUDA device on this machine (run make test-gpu on one)";
    }
    if (why.empty() && !fs::exists(tokenizer_source())) why = "no tokenizer source for the forge: " + tokenizer_source();
    if (!why.empty()) {
      if (gpu_required() && GetParam().device == Device::gpu) FAIL() << "STRATA_REQUIRE_GPU=1 but " << why;
      GTEST_SKIP() << why;
    }
    dir_ = fs::temp_directory_path() / ("strata_gpu_tier_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    const std::string path = (dir_ / (std::string(GetParam().name) + ".gguf")).string();
    ASSERT_TRUE(test::forge(GetParam().forge_args, tokenizer_source(), path));
    model_ = Model::load(path);
  }
  void TearDown() override {
    model_.reset();
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  SessionParams params(bool experts_on_gpu) const {
    SessionParams p;
    p.n_ctx = 256;
    p.n_batch = kBatch;
    p.n_threads = 4;
    p.device = GetParam().device;
    p.routed_experts_on_gpu = experts_on_gpu;
    return p;
  }
  std::vector<int32_t> prompt(int n) const {
    std::vector<int32_t> ids;
    for (int i = 0; i < n; ++i) ids.push_back(int32_t((211 + 6151 * int64_t(i)) % model_->config().n_vocab));
    return ids;
  }
  // Logits of a 70-token prompt (batches of 32: waves of copies) and 16 greedy steps (split decode).
  std::vector<float> run(Session& s, test::RoutingRecorder& routing) const {
    s.set_routing_observer(&routing);
    const int n_vocab = model_->config().n_vocab;
    std::vector<float> all = s.eval_all_logits(prompt(70));
    int next = int(std::max_element(all.end() - n_vocab, all.end()) - (all.end() - n_vocab));
    for (int step = 0; step < 16; ++step) {
      const float* l = s.eval({next});
      all.insert(all.end(), l, l + n_vocab);
      next = int(std::max_element(l, l + n_vocab) - l);
    }
    return all;
  }
  // The split run against the resident one (`want`, `resident_routing`): bit-identical on the
  // CPU, within the CPU/GPU tolerance up to the first routing flip on a GPU. Returns its counters.
  // (Its counters; the tier goes with its session, whose backend it uses.)
  GpuTierCounters check_split(const GpuExpertOptions& o, const std::vector<float>& want,
                              const test::RoutingRecorder& resident_routing, const char* what) {
    const Case& c = GetParam();
    const int k = model_->config().n_expert_used;
    const size_t n_vocab = size_t(model_->config().n_vocab);
    const float range = *std::max_element(want.begin(), want.end()) - *std::min_element(want.begin(), want.end());
    Session split(*model_, params(false));
    auto tier = std::make_unique<GpuExperts>(*model_, split.backend(), split.pool(), o);
    split.set_expert_compute(tier.get());
    test::RoutingRecorder split_routing(k);
    const std::vector<float> got = run(split, split_routing);
    EXPECT_EQ(got.size(), want.size());
    if (got.size() != want.size()) return {};
    // Row r: the logits after position r. Past the first routing flip (GPU runs only: the CPU's
    // share rounds otherwise than the GPU's kernels) the runs may differ; rows before it must not.
    const int64_t rows = int64_t(got.size() / n_vocab);
    const int64_t flip = test::RoutingRecorder::first_difference(resident_routing, split_routing, rows);
    float worst = 0.0f;
    for (size_t i = 0; i < size_t(flip) * n_vocab; ++i) worst = std::max(worst, std::fabs(got[i] - want[i]));
    for (float v : got) EXPECT_TRUE(std::isfinite(v));
    const GpuTierCounters n = tier->counters();
    std::printf("[ %-26s ] %-46s cache %3d staging %3d: routing equal for %lld of %lld rows, worst |diff| %.6f of "
                "range %.3f; hits %llu/%llu, gpu %llu cpu %llu experts, %.1f MB over PCIe, copy %.4f s, gpu %.4f s\n",
                c.name, what, tier->n_cache_slots(), tier->n_staging_slots(), (long long)flip, (long long)rows, worst,
                range, (unsigned long long)n.vram_expert_hits, (unsigned long long)n.vram_expert_needed,
                (unsigned long long)n.experts_gpu, (unsigned long long)n.experts_cpu, double(n.pcie_bytes) / 1e6,
                n.copy_seconds, n.gpu_compute_seconds);
    if (c.device == Device::cpu) {
      EXPECT_EQ(flip, rows) << what;
      EXPECT_EQ(worst, 0.0f) << what;
    } else {
      EXPECT_LT(worst, 0.02f * range) << what;
      EXPECT_GT(flip, 0) << what;
    }
    EXPECT_GT(n.vram_expert_needed, 0u);
    EXPECT_EQ(n.cache_slots, uint64_t(tier->n_cache_slots()));
    EXPECT_EQ(n.staging_slots, uint64_t(tier->n_staging_slots()));
    // Copies and the GPU's compute are timed on the device (the CPU backend: the host's clock).
    if (n.pcie_bytes > 0) {
      EXPECT_GT(n.copy_seconds, 0.0) << what;
    }
    if (n.experts_gpu > 0) {
      EXPECT_GT(n.gpu_compute_seconds, 0.0) << what;
    }
    return n;
  }
  // The first n experts of an even share per layer: expert 0 of every MoE layer, then expert 1, ...
  std::vector<ExpertRef> even_cache(int n) const {
    const ModelConfig& c = model_->config();
    std::vector<ExpertRef> out;
    for (int e = 0; e < c.n_expert; ++e)
      for (int l = 0; l < c.n_layer; ++l)
        if (c.is_moe_layer(l) && int(out.size()) < n) out.push_back({l, e});
    return out;
  }
  fs::path dir_;
  std::unique_ptr<Model> model_;
};

TEST_P(GpuExpertTier, SplitAndStreamedRunsMatchTheResidentRun) {
  Session resident(*model_, params(true));
  const int k = model_->config().n_expert_used;
  test::RoutingRecorder resident_routing(k);
  const std::vector<float> want = run(resident, resident_routing);
  const uint64_t slot = GpuExperts::slot_bytes(*model_);
  const ModelConfig& mc = model_->config();
  struct Config {
    const char* what;
    uint64_t vram;
    double copy_share;
    int cached;
    double prompt_share = 1.0;  // of a prompt's misses, copied; the CPU computes the rest meanwhile
  };
  const int all = mc.n_expert * mc.n_layer;
  const Config configs[] = {
      {"staging only, CPU computes every decode miss", GpuExperts::minimum_vram(*model_), 0.0, 0},
      {"staging only, every decode miss copied", GpuExperts::minimum_vram(*model_), 1.0, 0},
      {"a cache of some experts, half the misses copied", slot * uint64_t(mc.n_expert + mc.n_layer), 0.5, mc.n_layer},
      {"every expert cached", slot * uint64_t(mc.n_expert) * uint64_t(mc.n_layer + 2), 0.5, all},
      // The cache is lfu's (ExpertCache): decode's copies enter it, and later tokens hit them.
      {"an empty cache that decode copies fill (lfu)", slot * uint64_t(2 * mc.n_expert + mc.n_layer), 1.0, 0},
      // The plan's prompt_copy_share: the CPU computes part of a prompt's misses beside the GPU.
      {"half of a prompt's misses on the CPU", slot * uint64_t(mc.n_expert + mc.n_layer), 0.5, mc.n_layer, 0.5},
      {"every prompt miss on the CPU, staging only", GpuExperts::minimum_vram(*model_), 0.0, 0, 0.0},
  };
  for (const Config& cfg : configs) {
    GpuExpertOptions o;
    o.vram_bytes = cfg.vram;
    o.copy_share.assign(size_t(mc.n_layer), cfg.copy_share);
    o.cached = even_cache(cfg.cached);
    o.n_batch = kBatch;
    o.prompt_copy_share = cfg.prompt_share;
    const GpuTierCounters n = check_split(o, want, resident_routing, cfg.what);
    if (cfg.prompt_share == 0.0) {  // nothing copied: the CPU computed every miss, prompt and decode
      EXPECT_EQ(n.pcie_bytes, 0u) << cfg.what;
      EXPECT_GT(n.experts_cpu, 0u) << cfg.what;
    }
    if (cfg.copy_share == 0.0 && n.cache_slots == 0) {
      EXPECT_GT(n.experts_cpu, 0u) << cfg.what;
    }
    // Copies take what staging holds (k slots here); the CPU only the rest of a step's misses.
    if (cfg.copy_share == 1.0) {
      EXPECT_LT(n.experts_cpu * 4, n.experts_gpu) << cfg.what;
    }
    if (cfg.cached == 0 && n.cache_slots > 0) {
      EXPECT_GT(n.vram_admitted, 0u) << cfg.what;
      EXPECT_GT(n.vram_expert_hits, 0u) << cfg.what;
    } else if (n.cache_slots == 0) {
      EXPECT_EQ(n.vram_admitted, 0u) << cfg.what;
    }
    if (cfg.cached == all) {
      EXPECT_EQ(n.vram_expert_hits, n.vram_expert_needed) << cfg.what;
      EXPECT_EQ(n.experts_cpu, 0u) << cfg.what;
    }
  }
}

// The runtime follows the three-tier plan: the experts the plan keeps in VRAM (the hottest under
// a skewed routing prior, not the lowest ids) are the ones cached, each layer's copy share is the
// plan's, staging is at least the plan's; and the run stays exact.
TEST_P(GpuExpertTier, FollowsTheThreeTierPlan) {
  const ModelConfig& mc = model_->config();
  const int k = mc.n_expert_used;
  PlanInputs in;
  in.budget_bytes = uint64_t(64) << 30;
  in.n_ctx = 256;
  in.n_batch = kBatch;
  in.n_threads = 4;
  in.ram_gbps = 95;
  in.ssd_gbps = 2;
  in.cpu_batch_gflops = 1100;
  // Higher ids likelier: expert e of every layer routed to in proportion to e + 1.
  in.expert_probability.assign(size_t(mc.n_layer), std::vector<double>(size_t(mc.n_expert), 0.0));
  const double sum = 0.5 * mc.n_expert * (mc.n_expert + 1);
  for (auto& layer : in.expert_probability)
    for (int e = 0; e < mc.n_expert; ++e) layer[size_t(e)] = k * (e + 1) / sum;
  GpuDevice g;
  g.name = "synthetic H100";
  g.mem_gbps = 3350;
  g.gflops = 150000;
  g.pcie_pinned_gbps = 55;
  g.pcie_pageable_gbps = 8.6;
  g.mem_bytes = uint64_t(8) << 30;
  in.gpus = {g};
  const uint64_t minimum = make_plan(model_->file(), mc, in).gpus.at(0).minimum_bytes;
  // A VRAM budget that holds some of the experts but not all: the least that holds a quarter.
  Plan plan;
  int n_vram = 0, n_experts = 0;
  auto plan_for = [&](uint64_t mem) {
    in.gpus[0].mem_bytes = mem;
    plan = make_plan(model_->file(), mc, in);
    n_vram = n_experts = 0;
    for (const PlanUnit& u : plan.units)
      if (u.kind == UnitKind::expert) ++n_experts, n_vram += u.tier == Tier::vram;
  };
  uint64_t lo = minimum, hi = minimum + model_->file().file_size();
  while (hi - lo > 4096) {
    const uint64_t mid = lo + (hi - lo) / 2;
    plan_for(mid);
    (4 * n_vram >= n_experts ? hi : lo) = mid;
  }
  plan_for(hi);
  ASSERT_GT(n_vram, 0);
  ASSERT_LT(n_vram, n_experts);

  const uint64_t slot = GpuExperts::slot_bytes(*model_);
  // An arena for the plan's experts and its staging, as `--gpu-mem` gives after the session's part.
  const uint64_t vram = slot * uint64_t(n_vram) + plan.gpus.at(0).staging_bytes + slot;
  GpuExpertOptions o = gpu_expert_options(plan, vram, slot, kBatch);
  ASSERT_EQ(int(o.cached.size()), n_vram);
  for (size_t i = 1; i < o.cached.size(); ++i)  // hottest first
    EXPECT_GE(in.expert_probability[size_t(o.cached[i - 1].layer)][size_t(o.cached[i - 1].expert)],
              in.expert_probability[size_t(o.cached[i].layer)][size_t(o.cached[i].expert)]);
  ASSERT_EQ(o.copy_share.size(), size_t(mc.n_layer));
  for (int l = 0; l < mc.n_layer; ++l) EXPECT_EQ(o.copy_share[size_t(l)], plan.layers[size_t(l)].copy_share);
  EXPECT_GE(o.min_staging, k);

  {  // The cache begins with exactly the plan's experts in VRAM: the likeliest, not the lowest ids.
    Session split(*model_, params(false));
    GpuExperts tier(*model_, split.backend(), split.pool(), o);
    EXPECT_GE(tier.n_staging_slots(), o.min_staging);
    EXPECT_GE(tier.n_cache_slots(), n_vram);  // the arena holds the plan's experts
    double planned_p = 0, other_p = 0;
    for (const PlanUnit& u : plan.units) {
      if (u.kind != UnitKind::expert) continue;
      const bool planned = u.tier == Tier::vram;
      (planned ? planned_p : other_p) += u.probability;
      EXPECT_EQ(tier.cache_slot(u.layer, u.expert) >= 0, planned) << "layer " << u.layer << " expert " << u.expert;
    }
    EXPECT_GT(planned_p / n_vram, other_p / (n_experts - n_vram));
    const GpuTierCounters n = tier.counters();
    EXPECT_EQ(n.cache_slots, uint64_t(tier.n_cache_slots()));
  }
  Session resident(*model_, params(true));
  test::RoutingRecorder resident_routing(k);
  const std::vector<float> want = run(resident, resident_routing);
  // The tier records the routing it sees (the Tiering saves it for the next run's plan).
  RoutingStats seen(mc.n_layer, mc.n_expert, k);
  o.routing = &seen;
  check_split(o, want, resident_routing, "the three-tier plan's placement");
  const std::vector<std::vector<double>> f = seen.frequencies();
  for (int l = 0; l < mc.n_layer; ++l) {
    if (!mc.is_moe_layer(l)) continue;
    double total = 0;
    for (double v : f[size_t(l)]) total += v;
    EXPECT_EQ(total, double(86 * k)) << "layer " << l;  // 70 prompt tokens and 16 decoded, k each
  }
}

// --gpu-mem's one computation (tier/gpu/gpu_session.h): the runtime counts the session
// (gpu_session_vram_bytes), the plan takes that as the GPU's fixed part and leaves the rest to the
// expert tier, whose arena is then exactly the plan's: as many cache slots as the plan has experts in
// VRAM, its staging slots; and the plan's minimum is the session and one slot per routed rank.
TEST_P(GpuExpertTier, TheTierTakesWhatThePlanLeaves) {
  const ModelConfig& mc = model_->config();
  const int k = mc.n_expert_used;
  const uint64_t slot = GpuExperts::slot_bytes(*model_);
  TieringOptions t;
  set_gpu_tier_options(*model_, params(false), uint64_t(1) << 30, t);
  ASSERT_GT(t.gpu_session_bytes, 0u);
  EXPECT_EQ(t.gpu_expert_slot_bytes, slot);
  SessionParams with_experts = params(false);
  with_experts.routed_experts_on_gpu = true;  // the session without the tier holds every expert too
  EXPECT_GT(gpu_session_vram_bytes(*model_, with_experts), t.gpu_session_bytes);
  PlanInputs in;
  in.budget_bytes = uint64_t(64) << 30;
  in.n_ctx = 256;
  in.n_batch = kBatch;
  in.n_threads = 4;
  in.ram_gbps = 95;
  in.ssd_gbps = 2;
  in.cpu_batch_gflops = 1100;
  GpuDevice g;
  g.name = "synthetic H100";
  g.mem_gbps = 3350;
  g.gflops = 150000;
  g.pcie_pinned_gbps = 55;
  g.pcie_pageable_gbps = 8.6;
  g.session_bytes = t.gpu_session_bytes;
  g.expert_slot_bytes = slot;
  in.gpus = {g};
  const uint64_t minimum = t.gpu_session_bytes + uint64_t(k) * slot;
  for (const int extra : {0, k, 2 * k + 3}) {
    in.gpus[0].mem_bytes = minimum + uint64_t(extra) * slot;
    const Plan plan = make_plan(model_->file(), mc, in);
    const GpuUse& use = plan.gpus.at(0);
    EXPECT_EQ(use.minimum_bytes, minimum);
    EXPECT_EQ(use.session_bytes, t.gpu_session_bytes);
    EXPECT_EQ(use.n_staging_slots, extra >= k ? 2 * k : k) << "extra " << extra;
    EXPECT_LE(use.used_bytes, use.budget_bytes);
    for (const LayerPlacement& l : plan.layers) EXPECT_EQ(l.device, 0) << "layer " << l.layer;
    int n_vram = 0;
    for (const PlanUnit& u : plan.units) n_vram += u.kind == UnitKind::expert && u.tier == Tier::vram;
    EXPECT_EQ(n_vram, k + extra - use.n_staging_slots) << "extra " << extra;
    const GpuExpertOptions o = gpu_expert_options(plan, use.budget_bytes - use.session_bytes, slot, kBatch);
    Session split(*model_, params(false));
    GpuExperts tier(*model_, split.backend(), split.pool(), o);
    EXPECT_EQ(tier.n_cache_slots(), n_vram) << "extra " << extra;
    EXPECT_EQ(tier.n_staging_slots(), use.n_staging_slots) << "extra " << extra;
    EXPECT_EQ(tier.vram_bytes(), use.budget_bytes - use.session_bytes) << "extra " << extra;
    EXPECT_EQ(tier.host_bytes(), plan.host_pinned_bytes) << "extra " << extra;  // every expert, a slot each
  }
  in.gpus[0].mem_bytes = minimum - 1;
  try {
    make_plan(model_->file(), mc, in);
    FAIL() << "a VRAM budget below the session and k slots was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the session"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(format_bytes(double(minimum))), std::string::npos) << e.what();
  }
}

TEST_P(GpuExpertTier, BudgetBelowTheMinimumIsNamed) {
  Session split(*model_, params(false));
  GpuExpertOptions o;
  o.vram_bytes = GpuExperts::minimum_vram(*model_) - 1;
  try {
    GpuExperts tier(*model_, split.backend(), split.pool(), o);
    FAIL() << "a budget below the minimum was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("minimum"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("staging"), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(Forged, GpuExpertTier, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace strata::tier
