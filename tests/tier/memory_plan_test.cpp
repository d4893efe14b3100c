// The memory model, the planner's side: the KV cache and scratch a plan counts are what a session
// allocates (measured by the allocator, within page rounding), for every architecture and for
// batches of 1 and 512; the streaming pool and expert cache it counts are what the streamers
// allocate.
#include <gtest/gtest.h>
#include <malloc.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <memory>

#include "model/model.h"
#include "runtime/session.h"
#include "support/forge.h"
#include "support/paths.h"
#include "tier/plan/plan.h"
#include "tier/tiering.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

// Bytes the allocator has handed out and not taken back (heap and mmapped chunks, all arenas).
uint64_t heap_in_use() {
  const struct mallinfo2 m = mallinfo2();
  return uint64_t(m.uordblks) + uint64_t(m.hblkhd);
}

class PlanMemoryTest : public ::testing::TestWithParam<std::vector<std::string>> {
 protected:
  void SetUp() override {
    const std::string tokenizer = test::model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
    if (!fs::exists(tokenizer)) GTEST_SKIP() << "SmolLM2 (the forge's tokenizer source) is not fetched";
    // On the real filesystem next to the model cache: O_DIRECT does not work on tmpfs.
    dir_ = fs::path(test::models_dir()).parent_path() / ("plan_memory_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    path_ = (dir_ / "m.gguf").string();
    std::vector<std::string> args = GetParam();
    args.insert(args.end(), {"--type", "Q8_0", "--seed", "9"});
    ASSERT_TRUE(test::forge(args, tokenizer, path_)) << test::strata_bin();
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  fs::path dir_;
  std::string path_;
};

TEST_P(PlanMemoryTest, SessionAllocatesWhatThePlanCounts) {
  auto model = Model::load(path_);
  const ModelConfig& c = model->config();
  constexpr int kThreads = 2, kCtx = 1024;
  for (int n_batch : {1, 512}) {
    tier::PlanInputs in;
    in.budget_bytes = uint64_t(1) << 40;
    in.n_ctx = kCtx;
    in.n_batch = n_batch;
    in.n_threads = kThreads;
    const tier::Plan plan = tier::make_plan(model->file(), c, in);
    const uint64_t counted = plan.kv_bytes + plan.scratch_bytes;

    SessionParams sp;
    sp.n_ctx = kCtx;
    sp.n_batch = n_batch;
    sp.n_threads = kThreads;
    const uint64_t before = heap_in_use();
    auto session = std::make_unique<Session>(*model, sp);
    const uint64_t allocated = heap_in_use() - before;
    EXPECT_EQ(counted, session->memory_bytes()) << c.arch_name << " batch " << n_batch;
    // Each buffer is one allocation, which the allocator rounds up to a page at most (a chunk
    // header, or the page an mmapped chunk ends in); the session's own bookkeeping (thread pool,
    // vectors of per-layer and per-thread buffers) is a few KiB. The other way, small chunks freed
    // earlier and held in the allocator's per-thread cache count as in use before and are reused.
    const uint64_t n_allocations = 2 * uint64_t(c.n_layer) + 32 + 3 * kThreads;
    const uint64_t slack = n_allocations * 4096 + (uint64_t(64) << 10);
    EXPECT_GE(allocated + slack, counted)
        << c.arch_name << " batch " << n_batch << ": allocated " << allocated << ", the plan counts " << counted;
    EXPECT_LE(allocated, counted + slack)
        << c.arch_name << " batch " << n_batch << ": allocated " << allocated << ", the plan counts " << counted;
    std::printf("%s batch %d: the plan counts %llu bytes, the session allocated %llu (slack %llu)\n",
                c.arch_name.c_str(), n_batch, (unsigned long long)counted, (unsigned long long)allocated,
                (unsigned long long)slack);
    // Evaluating allocates nothing more.
    std::vector<int32_t> prompt;
    for (int i = 0; i < 40; ++i) prompt.push_back(7 + 13 * i);
    session->eval(prompt);
    session->eval({42});
    EXPECT_EQ(session->memory_bytes(), counted) << c.arch_name << " batch " << n_batch;
  }
}

TEST_P(PlanMemoryTest, StreamersAllocateWhatThePlanCounts) {
  auto model = Model::load(path_);
  const ModelConfig& c = model->config();
  tier::PlanInputs in;
  in.budget_bytes = uint64_t(1) << 40;
  in.n_ctx = 64;
  in.n_threads = 2;
  const tier::Plan full = tier::make_plan(model->file(), c, in);
  tier::TieringOptions t;
  t.n_ctx = in.n_ctx;
  t.n_threads = in.n_threads;
  t.ram_gbps = 30;  // the plan must not depend on how fast this machine's disk is today
  t.ssd_gbps = 1.7;
  t.persist_routing = false;
  t.revise_every = 0;
  ASSERT_GT(full.used_bytes, full.minimum_bytes);
  t.budget_bytes = full.minimum_bytes + (full.used_bytes - full.minimum_bytes) / 2;
  tier::Tiering tiering(*model, t);
  ASSERT_TRUE(tiering.streaming()) << c.arch_name;
  const tier::Plan& plan = tiering.plan();
  EXPECT_LE(plan.used_bytes, t.budget_bytes);
  const tier::TierStats s = tiering.stats();
  // Pinned experts live in the expert streamer's slots; when every expert is resident they stay
  // in the mapping and only the dense ring is allocated.
  const bool experts_stream = plan.n_expert_resident < plan.n_expert_units;
  EXPECT_EQ(s.has_experts, experts_stream) << c.arch_name;
  EXPECT_EQ(s.has_dense, plan.n_dense_resident < plan.n_dense_units) << c.arch_name;
  EXPECT_EQ(s.pool_bytes, plan.pool_bytes + (experts_stream ? plan.expert_cache_bytes : 0)) << c.arch_name;
}

INSTANTIATE_TEST_SUITE_P(EveryArchitecture, PlanMemoryTest,
                         ::testing::Values(std::vector<std::string>{"--arch", "llama", "--preset", "tiny"},
                                           std::vector<std::string>{"--arch", "llama", "--preset", "tiny-moe"},
                                           std::vector<std::string>{"--arch", "qwen2", "--preset", "tiny"},
                                           std::vector<std::string>{"--arch", "qwen3", "--preset", "tiny"},
                                           std::vector<std::string>{"--arch", "qwen3moe", "--preset", "tiny"},
                                           std::vector<std::string>{"--arch", "qwen2moe", "--preset", "tiny"},
                                           std::vector<std::string>{"--arch", "gemma3", "--preset", "tiny"}));

}  // namespace
}  // namespace strata
