// Models and settings that used to fall back to the CPU, now on the GPU, against the same pass on
// the CPU: a forged gpt-oss (MXFP4 experts with biases, the clamped SwiGLU, attention sinks,
// alternating sliding windows, YaRN), and a forged qwen3 and gemma3 (sliding windows) with q8_0 and
// q4_0 KV caches (head size 32: the tiny llama's 16 holds no 32-value block). Forged by the CLI
// ($STRATA_BIN) with the tokenizer of $STRATA_TOKENIZER_GGUF or SmolLM2's, as gpu_forward_test.
// Skips without a CUDA build, a GPU, the CLI or the tokenizer; STRATA_REQUIRE_GPU=1 turns a skip
// into a failure.
//
// The two passes differ by rounding (the GPU's int8 activations carry a float scale where the
// CPU's carry an f16 one; prompts go through f16 GEMMs), so the test bounds the whole logit vector,
// max |gpu - cpu| / max |cpu| < kLogitTolerance, demands the CPU's top-1 wherever its top-2
// margin exceeds kNoise, and greedy continuations token for token up to the first near-tie.
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
#include "support/paths.h"

namespace strata {
namespace {

constexpr float kNoise = 0.05f;  // tiny forged models have small logits
constexpr float kLogitTolerance = 0.03f;

bool gpu_required() {
  const char* v = std::getenv("STRATA_REQUIRE_GPU");
  return v && std::strcmp(v, "1") == 0;
}

struct Case {
  const char* name;
  const char* forge_args;
  DType kv_type;
};

class GpuCoverage : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    const Case& c = GetParam();
    std::string why;
    const char* tok = std::getenv("STRATA_TOKENIZER_GGUF");
    const std::string tokenizer = tok ? tok : test::model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
    const char* bin_env = std::getenv("STRATA_BIN");
    const std::string bin =
        bin_env ? bin_env
                : (std::filesystem::read_symlink("/proc/self/exe").parent_path().parent_path() / "strata").string();
    if (!backend::cuda_built())
      why = "this build has no CUDA backend (configure with -DSTRATA_CUDA=ON)";
    else if (backend::cuda_device_count() == 0)
      why = "no CUDA device on this machine (run make test-gpu on one)";
    else if (!std::filesystem::exists(tokenizer))
      why = "no tokenizer GGUF for forge: " + tokenizer;
    else if (!std::filesystem::exists(bin))
      why = "no strata CLI at " + bin + " (set STRATA_BIN)";
    if (!why.empty()) {
      if (gpu_required()) FAIL() << "STRATA_REQUIRE_GPU=1 but " << why;
      GTEST_SKIP() << why;
    }
    path_ = (std::filesystem::temp_directory_path() /
             ("strata_gpu_coverage_" + std::string(c.name) + "_" + std::to_string(::getpid()) + ".gguf"))
                .string();
    const std::string cmd =
        "'" + bin + "' forge " + c.forge_args + " --tokenizer-from '" + tokenizer + "' -o '" + path_ + "' > /dev/null";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    model_ = Model::load(path_);
  }
  void TearDown() override {
    model_.reset();
    if (!path_.empty()) std::filesystem::remove(path_);
  }
  std::unique_ptr<Session> session(Device device) const {
    SessionParams p;
    p.n_ctx = 512;
    p.n_batch = 64;  // the prompt takes several batches through the f16 GEMM
    p.n_threads = 4;
    p.kv_type = GetParam().kv_type;
    p.device = device;
    if (device == Device::gpu) EXPECT_EQ(gpu_unsupported(*model_, p), "");
    auto s = std::make_unique<Session>(*model_, p);
    EXPECT_EQ(s->on_gpu(), device == Device::gpu) << s->device_name();
    return s;
  }
  std::vector<int32_t> tokens(int n) const {  // deterministic ids spread over the vocabulary
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i)
      ids[size_t(i)] = int32_t((uint64_t(i) * 7919u + 13u) % uint64_t(model_->config().n_vocab));
    return ids;
  }
  std::string path_;
  std::unique_ptr<Model> model_;
};

int argmax(const float* x, int n) { return int(std::max_element(x, x + n) - x); }

float top2_margin(const float* x, int n) {
  const int top = argmax(x, n);
  float second = -INFINITY;
  for (int i = 0; i < n; ++i)
    if (i != top) second = std::max(second, x[i]);
  return x[top] - second;
}

float logit_error(const float* gpu, const float* cpu, int n) {
  float diff = 0.0f, ref = 0.0f;
  for (int i = 0; i < n; ++i) {
    diff = std::max(diff, std::fabs(gpu[i] - cpu[i]));
    ref = std::max(ref, std::fabs(cpu[i]));
  }
  return ref > 0.0f ? diff / ref : diff;
}

TEST_P(GpuCoverage, PromptLogitsMatchCpu) {
  const std::vector<int32_t> ids = tokens(150);  // past every window and ring
  const int n_vocab = model_->config().n_vocab;
  const std::vector<float> cpu = session(Device::cpu)->eval_all_logits(ids);
  const std::vector<float> gpu = session(Device::gpu)->eval_all_logits(ids);
  float worst = 0.0f;
  int decisive = 0, agree = 0;
  for (size_t t = 0; t < ids.size(); ++t) {
    const float* c = cpu.data() + t * size_t(n_vocab);
    const float* g = gpu.data() + t * size_t(n_vocab);
    ASSERT_TRUE(std::all_of(g, g + n_vocab, [](float v) { return std::isfinite(v); })) << "token " << t;
    worst = std::max(worst, logit_error(g, c, n_vocab));
    if (top2_margin(c, n_vocab) > kNoise) {
      ++decisive;
      agree += argmax(g, n_vocab) == argmax(c, n_vocab);
    }
  }
  std::printf("%s: prompt of %zu tokens: worst logit error %.4f; top-1 agrees on %d of %d decisive tokens\n",
              GetParam().name, ids.size(), worst, agree, decisive);
  EXPECT_LT(worst, kLogitTolerance);
  EXPECT_EQ(agree, decisive);
}

// Decode steps (CUDA graphs after the first) from a prompt, greedy, token for token.
TEST_P(GpuCoverage, GreedyDecodeMatchesCpu) {
  const std::vector<int32_t> ids = tokens(40);
  const int n_vocab = model_->config().n_vocab;
  auto cpu = session(Device::cpu);
  auto gpu = session(Device::gpu);
  const float* c = cpu->eval(ids);
  const float* g = gpu->eval(ids);
  constexpr int kSteps = 32;
  int same = 0;
  float worst = 0.0f;
  for (int step = 0; step < kSteps; ++step) {
    const int tc = argmax(c, n_vocab), tg = argmax(g, n_vocab);
    worst = std::max(worst, logit_error(g, c, n_vocab));
    EXPECT_LT(logit_error(g, c, n_vocab), kLogitTolerance) << "step " << step;
    if (tc != tg) {
      EXPECT_LT(top2_margin(c, n_vocab), kNoise) << "step " << step << ": the GPU chose " << tg << ", the CPU " << tc;
      break;
    }
    ++same;
    c = cpu->eval({tc});
    g = gpu->eval({tc});
  }
  std::printf("%s: greedy %d of %d tokens equal, worst logit error %.4f\n", GetParam().name, same, kSteps, worst);
  EXPECT_GE(same, 8);
}

// The cases the session lets on the GPU. Measured on the H100 (merged main, 2026-12-08) and taken
// off until fixed, the session refusing them with the reason (gpu_unsupported): gpt-oss MXFP4 with
// an f16 or a q8_0 cache (prompt logits 0.21 / 0.30 off, greedy 0 / 5 of 32 equal) and gemma3 with a
// q4_0 cache (0.25 off, top-1 30 of 32); their forge lines were
//   {"gptoss_mxfp4", "--arch gpt-oss --preset tiny --type MXFP4_MOE --seed 1 --fill values", F16},
//   {"gptoss_mxfp4_kv_q8_0", "--arch gpt-oss --preset tiny --type MXFP4_MOE --seed 2 --fill values", Q8_0},
//   {"gemma3_kv_q4_0", "--arch gemma3 --preset tiny --type Q8_0 --seed 4 --fill values", Q4_0}.
// The ops alone (tests/backend/gpu_coverage_ops_test.cpp) pass there, so the difference is at the
// model's level (sliding-window layers with the quantized-cache kernel are common to both).
INSTANTIATE_TEST_SUITE_P(
    Forged, GpuCoverage,
    ::testing::Values(Case{"qwen3_kv_q8_0", "--arch qwen3 --preset tiny --type Q8_0 --seed 3 --fill values",
                           DType::Q8_0}),
    [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace strata
