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
    {"llama_tiny_moe_Q8_0_cpu", {"--arch", "llama", "--preset", "tiny-moe", "--type", "Q8_0", "--seed", "5"}, Device::cpu},
    {"qwen2moe_small_Q4_K_M_cpu", {"--arch", "qwen2moe", "--preset", "small", "--type", "Q4_K_M", "--seed", "5"},
     Device::cpu},
    {"llama_tiny_moe_Q8_0_gpu", {"--arch", "llama", "--preset", "tiny-moe", "--type", "Q8_0", "--seed", "5"}, Device::gpu},
    {"qwen3moe_small_Q4_K_M_gpu", {"--arch", "qwen3moe", "--preset", "small", "--type", "Q4_K_M", "--seed", "5"},
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
  fs::path dir_;
  std::unique_ptr<Model> model_;
};

TEST_P(GpuExpertTier, SplitAndStreamedRunsMatchTheResidentRun) {
  const Case& c = GetParam();
  Session resident(*model_, params(true));
  const int k = model_->config().n_expert_used;
  test::RoutingRecorder resident_routing(k);
  const std::vector<float> want = run(resident, resident_routing);
  const size_t n_vocab = size_t(model_->config().n_vocab);
  const float range = *std::max_element(want.begin(), want.end()) - *std::min_element(want.begin(), want.end());
  const uint64_t slot = GpuExperts::slot_bytes(*model_);
  const int n_expert = model_->config().n_expert;
  struct Config {
    const char* what;
    uint64_t vram;
    double copy_share;
  };
  const Config configs[] = {
      {"staging only, CPU computes every decode miss", GpuExperts::minimum_vram(*model_), 0.0},
      {"staging only, every decode miss copied", GpuExperts::minimum_vram(*model_), 1.0},
      {"a cache of some experts, half the misses copied", slot * uint64_t(n_expert + model_->config().n_layer), 0.5},
      {"every expert cached", slot * uint64_t(n_expert) * uint64_t(model_->config().n_layer + 2), 0.5},
  };
  for (const Config& cfg : configs) {
    Session split(*model_, params(false));
    GpuExpertOptions o;
    o.vram_bytes = cfg.vram;
    o.copy_share = cfg.copy_share;
    o.n_batch = kBatch;
    GpuExperts tier(*model_, split.backend(), split.pool(), o);
    split.set_expert_compute(&tier);
    test::RoutingRecorder split_routing(k);
    const std::vector<float> got = run(split, split_routing);
    ASSERT_EQ(got.size(), want.size());
    // Row r: the logits after position r. Past the first routing flip (GPU runs only: the CPU's
    // share rounds otherwise than the GPU's kernels) the runs may differ; rows before it must not.
    const int64_t rows = int64_t(got.size() / n_vocab);
    const int64_t flip = test::RoutingRecorder::first_difference(resident_routing, split_routing, rows);
    float worst = 0.0f;
    for (size_t i = 0; i < size_t(flip) * n_vocab; ++i) worst = std::max(worst, std::fabs(got[i] - want[i]));
    for (float v : got) ASSERT_TRUE(std::isfinite(v));
    const GpuTierCounters k = tier.counters();
    std::printf("[ %-26s ] %-46s cache %3d staging %3d: routing equal for %lld of %lld rows, worst |diff| %.6f of "
                "range %.3f; hits %llu/%llu, gpu %llu cpu %llu experts, %.1f MB over PCIe\n",
                c.name, cfg.what, tier.n_cache_slots(), tier.n_staging_slots(), (long long)flip, (long long)rows, worst,
                range,
                (unsigned long long)k.vram_expert_hits, (unsigned long long)k.vram_expert_needed,
                (unsigned long long)k.experts_gpu, (unsigned long long)k.experts_cpu, double(k.pcie_bytes) / 1e6);
    if (c.device == Device::cpu) {
      EXPECT_EQ(flip, rows) << cfg.what;
      EXPECT_EQ(worst, 0.0f) << cfg.what;
    } else {
      EXPECT_LT(worst, 0.02f * range) << cfg.what;
      EXPECT_GT(flip, 0) << cfg.what;
    }
    EXPECT_GT(k.vram_expert_needed, 0u);
    if (cfg.copy_share == 0.0 && tier.n_cache_slots() == 0) EXPECT_GT(k.experts_cpu, 0u) << cfg.what;
    // Copies take what staging holds (k slots here); the CPU only the rest of a step's misses.
    if (cfg.copy_share == 1.0) EXPECT_LT(k.experts_cpu * 4, k.experts_gpu) << cfg.what;
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
