// The memory model: what a session allocates for its scratch and its KV cache (with a hybrid
// model's recurrent state) is what ForwardBuffers::bytes_for and KvCache::bytes_for say (the
// functions the planner asks), for every architecture and for batches of 1 and 512, and
// evaluating tokens does not grow it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "model/blocks.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "ops/ops.h"
#include "ops/thread_pool.h"
#include "runtime/session.h"
#include "support/forge.h"
#include "support/paths.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

class MemoryModelTest : public ::testing::TestWithParam<std::vector<std::string>> {
 protected:
  void SetUp() override {
    tokenizer_ = test::model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
    if (!fs::exists(tokenizer_)) GTEST_SKIP() << "SmolLM2 (the forge's tokenizer source) is not fetched";
    dir_ = fs::temp_directory_path() / ("strata_memory_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  std::string tokenizer_;
  fs::path dir_;
};

TEST_P(MemoryModelTest, SessionScratchIsWhatBytesForSays) {
  const std::string path = (dir_ / "m.gguf").string();
  std::vector<std::string> args = GetParam();
  args.insert(args.end(), {"--type", "Q8_0", "--seed", "5"});
  ASSERT_TRUE(test::forge(args, tokenizer_, path)) << test::strata_bin();
  auto model = Model::load(path);
  const ModelConfig& c = model->config();
  for (int n_batch : {1, 512}) {
    SessionParams sp;
    sp.n_ctx = 1024;
    sp.n_batch = n_batch;
    sp.n_threads = 2;
    Session s(*model, sp);
    KvCache kv;
    kv.init(c, sp.n_ctx, sp.kv_type, n_batch);
    // The planner's two figures (tier/plan/memory.cpp): scratch and KV cache, recurrent state included.
    EXPECT_EQ(kv.bytes(), KvCache::bytes_for(c, sp.n_ctx, sp.kv_type, n_batch)) << c.arch_name;
    const size_t expected = ForwardBuffers::bytes_for(c, n_batch, sp.n_ctx, sp.n_threads) + kv.bytes();
    EXPECT_EQ(s.memory_bytes(), expected) << c.arch_name << " batch " << n_batch;
    std::vector<int32_t> prompt;
    for (int i = 0; i < 40; ++i) prompt.push_back(7 + 13 * i);
    s.eval(prompt);
    s.eval({42});
    EXPECT_EQ(s.memory_bytes(), expected) << c.arch_name << " batch " << n_batch << ": evaluation grew the scratch";
  }
}

INSTANTIATE_TEST_SUITE_P(EveryArchitecture, MemoryModelTest,
                         ::testing::Values(std::vector<std::string>{"--arch", "llama", "--preset", "tiny"},
                                           std::vector<std::string>{"--arch", "llama", "--preset", "tiny-moe"},
                                           std::vector<std::string>{"--arch", "qwen2", "--preset", "tiny"},
                                           std::vector<std::string>{"--arch", "qwen3", "--preset", "tiny"},
                                           std::vector<std::string>{"--arch", "qwen3moe", "--preset", "tiny"},
                                           std::vector<std::string>{"--arch", "qwen2moe", "--preset", "tiny"},
                                           std::vector<std::string>{"--arch", "gemma3", "--preset", "tiny"},
                                           std::vector<std::string>{"--arch", "gpt-oss", "--preset", "tiny"},
                                           std::vector<std::string>{"--arch", "qwen35", "--preset", "tiny"},
                                           std::vector<std::string>{"--arch", "qwen35moe", "--preset", "tiny"}));

// The bytes are what the buffers hold: a larger batch or context costs what its buffers add.
TEST(ForwardBuffersTest, BytesForCountsEveryBuffer) {
  ModelConfig c;
  c.n_layer = 2;
  c.n_embd = 64;
  c.n_head = 4;
  c.n_head_kv = 2;
  c.head_dim_k = c.head_dim_v = 16;
  c.n_ff = 128;
  c.n_vocab = 300;
  for (int experts : {0, 4}) {
    c.n_expert = experts;
    c.n_expert_used = experts ? 2 : 0;
    c.n_ff_expert = 64;
    for (int n_batch : {1, 7, 512})
      for (int n_threads : {1, 3}) {
        ForwardBuffers b;
        b.init(c, n_batch, 100, n_threads);
        EXPECT_EQ(b.bytes(), ForwardBuffers::bytes_for(c, n_batch, 100, n_threads))
            << experts << " experts, batch " << n_batch << ", " << n_threads << " threads";
      }
  }
}

// The matmul scratch holds a batch of the widest matmul input converted to its vec_dot type (at
// most 2 bytes an element): in a delta-rule model that may be the layer's output, ssm_d_inner
// wide, which the output projection reads. Sized for it up front, the scratch never grows.
TEST(ForwardBuffersTest, MatmulScratchCoversTheDeltaRuleOutput) {
  ModelConfig c;
  c.n_layer = 2;
  c.n_embd = 64;
  c.n_head = 4;
  c.n_head_kv = 2;
  c.head_dim_k = c.head_dim_v = 16;
  c.n_ff = 128;
  c.n_vocab = 300;
  c.ssm_d_state = 32;
  c.ssm_dt_rank = 16;
  c.ssm_n_group = 4;
  c.ssm_d_conv = 4;
  c.ssm_d_inner = c.ssm_d_state * c.ssm_dt_rank;  // 512: wider than n_embd, the heads and the FFN
  c.layer_recurrent = {true, false};
  ThreadPool pool(1);
  for (int n_batch : {1, 7, 512}) {
    const ForwardBuffers::Sizes s = ForwardBuffers::sizes(c, n_batch, 100, 1);
    EXPECT_GE(s.mm_bytes, size_t(n_batch) * size_t(c.ssm_d_inner) * 2) << "batch " << n_batch;
    ForwardBuffers b;
    b.init(c, n_batch, 100, 1);
    const size_t before = b.mm.quantized.capacity();
    std::vector<float> x(size_t(n_batch) * size_t(c.ssm_d_inner), 0.5f);
    // An F16 output projection: 2 bytes an element, the most any vec_dot type takes.
    ops::prepare_input(DType::F16, c.ssm_d_inner, x.data(), c.ssm_d_inner, n_batch, pool, b.mm);
    EXPECT_EQ(b.mm.quantized.capacity(), before) << "batch " << n_batch << ": the scratch grew";
  }
}

}  // namespace
}  // namespace strata
