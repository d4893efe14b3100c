// Mixture-of-experts models forward on the GPU (router, top-k and the experts on the device; decode
// as CUDA graphs with the routing never leaving the GPU; prompt batches grouped per expert) against
// the same pass on the CPU, on forged models of each MoE family: Mixtral-style llama (tiny-moe),
// qwen3moe and qwen2moe (shared expert with its sigmoid gate). Skips without a CUDA build, a GPU or
// the forge's tokenizer source; STRATA_REQUIRE_GPU=1 (make test-gpu) turns a skip into a failure.
//
// Tolerances as forged_test.cpp's, as fractions of the CPU's logit range (random weights give small,
// nearly tied logits): every logit within 2% of the range; top-1 equal where the CPU's top-2 margin
// exceeds 4% of it. The GPU quantizes activations per 32 values (decode) or multiplies in f16
// (prompt) where the CPU quantizes as ggml; random weights route near-uniformly, so that noise
// flips a near-tied expert choice now and then (even at the first token), and from there the two
// runs would legitimately differ. So the GPU run compared with the CPU is forced to the CPU's
// routing (a ForwardHook at after_router, the routing override's seam: the device computes the
// experts the CPU chose, by the GPU router's own weights) and compared strictly at every token;
// the GPU router itself must have chosen the CPU's experts for a good share of (token, layer) pairs.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "model/blocks.h"
#include "model/model.h"
#include "model/weight_source.h"
#include "runtime/session.h"
#include "support/forge.h"
#include "support/paths.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

constexpr float kTolerance = 0.02f;
constexpr float kDecisive = 2 * kTolerance;

bool gpu_required() {
  const char* v = std::getenv("STRATA_REQUIRE_GPU");
  return v && std::strcmp(v, "1") == 0;
}

// The forge's tokenizer source: $STRATA_TOKENIZER (a GGUF with tokenizer.* keys), else SmolLM2.
std::string tokenizer_source() {
  if (const char* env = std::getenv("STRATA_TOKENIZER")) return env;
  return test::model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
}

struct Forged {
  const char* name;
  std::vector<std::string> args;
};

const Forged kModels[] = {
    {"llama_tiny_moe_F16", {"--arch", "llama", "--preset", "tiny-moe", "--type", "F16", "--seed", "3"}},
    {"llama_tiny_moe_Q8_0", {"--arch", "llama", "--preset", "tiny-moe", "--type", "Q8_0", "--seed", "3"}},
    {"qwen3moe_small_Q4_K_M", {"--arch", "qwen3moe", "--preset", "small", "--type", "Q4_K_M", "--seed", "3"}},
    {"qwen2moe_small_Q4_K_M", {"--arch", "qwen2moe", "--preset", "small", "--type", "Q4_K_M", "--seed", "3"}},
};

class GpuMoeForward : public ::testing::TestWithParam<Forged> {
 protected:
  void SetUp() override {
    std::string why;
    if (!backend::cuda_built()) why = "this build has no CUDA backend (configure with -DSTRATA_CUDA=ON)";
    else if (backend::cuda_device_count() == 0) why = "no CUDA device on this machine (run make test-gpu on one)";
    else if (!fs::exists(tokenizer_source())) why = "no tokenizer source for the forge: " + tokenizer_source();
    if (!why.empty()) {
      if (gpu_required()) FAIL() << "STRATA_REQUIRE_GPU=1 but " << why;
      GTEST_SKIP() << why;
    }
    dir_ = fs::temp_directory_path() / ("strata_gpu_moe_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    const std::string path = (dir_ / (std::string(GetParam().name) + ".gguf")).string();
    ASSERT_TRUE(test::forge(GetParam().args, tokenizer_source(), path)) << "forge failed for " << GetParam().name;
    model_ = Model::load(path);
    ASSERT_GT(model_->config().n_expert, 0);
  }
  void TearDown() override {
    model_.reset();
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  std::unique_ptr<Session> session(Device device) const {
    SessionParams p;
    p.n_ctx = 256;
    p.n_batch = 48;  // the 100-token prompt: two grouped batches and a short one
    p.n_threads = 4;
    p.device = device;
    auto s = std::make_unique<Session>(*model_, p);
    EXPECT_EQ(s->on_gpu(), device == Device::gpu) << s->device_name();
    return s;
  }
  std::vector<int32_t> prompt(int n) const {
    std::vector<int32_t> ids;
    for (int i = 0; i < n; ++i) ids.push_back(int32_t((113 + 7919 * int64_t(i)) % model_->config().n_vocab));
    return ids;
  }
  fs::path dir_;
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

float range_of(const float* x, size_t n) {
  const auto [lo, hi] = std::minmax_element(x, x + n);
  return *hi - *lo;
}

// Every MoE layer's routing of a session, in rank order, by (position, layer).
class Routing : public RoutingObserver {
 public:
  explicit Routing(int k) : k_(k) {}
  void routed(int layer, int64_t pos0, const int32_t* chosen, int n_tokens) override {
    for (int t = 0; t < n_tokens; ++t)
      by_key_[{pos0 + t, layer}].assign(chosen + size_t(t) * k_, chosen + size_t(t + 1) * k_);
  }
  void guessed(int, const int32_t*, int, bool) override {}
  const std::vector<int32_t>* find(int64_t pos, int layer) const {
    const auto it = by_key_.find({pos, layer});
    return it == by_key_.end() ? nullptr : &it->second;
  }
  size_t size() const { return by_key_.size(); }

 private:
  int k_;
  std::map<std::pair<int64_t, int>, std::vector<int32_t>> by_key_;
};

// Puts the CPU's routing (recorded before this session runs the same position) into each batch at
// after_router, counting how often the session's own router had chosen the same experts.
class ForceRouting : public ForwardHook {
 public:
  ForceRouting(const Routing& cpu, int k) : cpu_(cpu), k_(k) {}
  void after_router(ForwardPass& p, int layer) override {
    for (int t = 0; t < p.n_tokens; ++t) {
      int32_t* row = p.buf.chosen.data() + size_t(t) * k_;
      const std::vector<int32_t>* want = cpu_.find(p.pos0 + t, layer);
      if (!want) {
        ++missing;
        continue;
      }
      std::vector<int32_t> own(row, row + k_), cpu = *want;
      std::sort(own.begin(), own.end());
      std::sort(cpu.begin(), cpu.end());
      ++forced;
      same += own == cpu;
      std::copy(want->begin(), want->end(), row);
    }
  }
  void after_routing(ForwardPass&, int) override {}
  void after_ffn(ForwardPass&, int) override {}
  int forced = 0, same = 0, missing = 0;  // (token, layer) pairs

 private:
  const Routing& cpu_;
  int k_;
};

// The GPU router chose the CPU's experts for a good share of the pairs, far above chance (a choice
// at random matches about 1 / C(n_expert, k) of them; near ties flip some, more with more experts):
// the forcing does not hide a broken router.
void expect_router_agrees(const ForceRouting& force, const char* name) {
  EXPECT_EQ(force.missing, 0) << name << ": positions the CPU never routed";
  EXPECT_GT(force.forced, 0) << name << ": no MoE layer ran";
  EXPECT_GE(4 * force.same, force.forced) << name << ": the GPU router chose the CPU's experts for only "
                                          << force.same << " of " << force.forced << " (token, layer) pairs";
}

TEST_P(GpuMoeForward, PromptLogitsMatchCpu) {
  const std::vector<int32_t> ids = prompt(100);
  const int n_vocab = model_->config().n_vocab;
  const int k = model_->config().n_expert_used;
  Routing cpu_routing(k);
  ForceRouting force(cpu_routing, k);
  auto cpu_session = session(Device::cpu);
  auto gpu_session = session(Device::gpu);
  cpu_session->set_routing_observer(&cpu_routing);
  gpu_session->set_routing_observer(nullptr, &force);
  const std::vector<float> cpu = cpu_session->eval_all_logits(ids);
  const std::vector<float> gpu = gpu_session->eval_all_logits(ids);
  const float range = range_of(cpu.data(), cpu.size());
  ASSERT_GT(range, 0.0f);
  float worst = 0.0f;
  int decisive = 0, agree = 0;
  for (size_t t = 0; t < ids.size(); ++t) {
    const float* c = cpu.data() + t * size_t(n_vocab);
    const float* g = gpu.data() + t * size_t(n_vocab);
    float diff = 0.0f;
    for (int i = 0; i < n_vocab; ++i) diff = std::max(diff, std::fabs(g[i] - c[i]));
    ASSERT_TRUE(std::isfinite(diff)) << "token " << t;
    worst = std::max(worst, diff);
    EXPECT_LT(diff, kTolerance * range) << GetParam().name << " token " << t;
    if (top2_margin(c, n_vocab) > kDecisive * range) {
      ++decisive;
      agree += argmax(g, n_vocab) == argmax(c, n_vocab);
    }
  }
  std::printf("[ %-22s ] prompt of %zu tokens on the CPU's routing: worst |gpu-cpu| %.5f of range %.3f (%.2f%%), "
              "top-1 agrees on %d of %d decisive; GPU router chose the CPU's experts for %d of %d (token, layer)\n",
              GetParam().name, ids.size(), worst, range, 100.0 * worst / range, agree, decisive, force.same,
              force.forced);
  EXPECT_EQ(agree, decisive);
  EXPECT_GT(decisive, 0) << "no token decisive enough to compare the top-1";
  EXPECT_EQ(force.forced, int(ids.size()) * int(cpu_routing.size() / ids.size()));
  expect_router_agrees(force, GetParam().name);
}

// Teacher-forced by the CPU's greedy tokens. The GPU runs three times: on the CPU's routing, op by
// op, compared with the CPU at every step; on its own routing as replayed CUDA graphs (the routing
// never leaves the device); and on its own routing op by op with the routing observed. The last two
// must be bit-identical.
TEST_P(GpuMoeForward, GreedyDecodeMatchesCpu) {
  const std::vector<int32_t> ids = prompt(12);
  const int n_vocab = model_->config().n_vocab;
  const int k = model_->config().n_expert_used;
  Routing cpu_routing(k), gpu_routing(k);
  ForceRouting force(cpu_routing, k);
  auto cpu = session(Device::cpu);
  auto forced = session(Device::gpu);  // on the CPU's routing
  auto gpu = session(Device::gpu);     // observed: no graphs
  auto graphs = session(Device::gpu);  // graphs after the first step
  cpu->set_routing_observer(&cpu_routing);
  forced->set_routing_observer(nullptr, &force);
  gpu->set_routing_observer(&gpu_routing);
  const float* c = cpu->eval(ids);
  const float* f = forced->eval(ids);
  const float* g = gpu->eval(ids);
  const float* h = graphs->eval(ids);
  const float range = range_of(c, size_t(n_vocab));
  ASSERT_GT(range, 0.0f);
  constexpr int kSteps = 40;
  int same = 0, decisive = 0;
  float worst = 0.0f, graph_diff = 0.0f;
  for (int step = 0; step < kSteps; ++step) {
    for (int i = 0; i < n_vocab; ++i) graph_diff = std::max(graph_diff, std::fabs(h[i] - g[i]));
    float diff = 0.0f;
    for (int i = 0; i < n_vocab; ++i) diff = std::max(diff, std::fabs(f[i] - c[i]));
    ASSERT_TRUE(std::isfinite(diff)) << "step " << step;
    worst = std::max(worst, diff);
    EXPECT_LT(diff, kTolerance * range) << GetParam().name << " step " << step;
    const int tc = argmax(c, n_vocab), tf = argmax(f, n_vocab);
    same += tc == tf;
    if (top2_margin(c, n_vocab) > kDecisive * range) {
      ++decisive;
      EXPECT_EQ(tf, tc) << GetParam().name << " step " << step << ": GPU " << tf << ", CPU " << tc;
    }
    const int next = tc;
    c = cpu->eval({next});
    f = forced->eval({next});
    g = gpu->eval({next});
    h = graphs->eval({next});
  }
  std::printf("[ %-22s ] decode on the CPU's routing: %d steps, top-1 equal on %d (%d decisive), worst |gpu-cpu| "
              "%.5f of range %.3f; GPU router chose the CPU's experts for %d of %d (token, layer); graphs vs op by "
              "op: max |diff| %g\n",
              GetParam().name, kSteps, same, decisive, worst, range, force.same, force.forced, graph_diff);
  EXPECT_EQ(graph_diff, 0.0f) << "decode as CUDA graphs differs from the same ops run one by one";
  EXPECT_GT(gpu_routing.size(), 0u);
  expect_router_agrees(force, GetParam().name);
}

INSTANTIATE_TEST_SUITE_P(Forged, GpuMoeForward, ::testing::ValuesIn(kModels),
                         [](const ::testing::TestParamInfo<Forged>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace strata
