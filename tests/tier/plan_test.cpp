// The placement planner on synthetic tensor tables (no data) and, when present, a forged 8B file.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "gguf/gguf.h"
#include "model/config.h"
#include "support/plan_table.h"
#include "tier/plan/plan.h"
#include "util/error.h"

namespace strata::tier {
namespace {

constexpr uint64_t MiB = test::kMiB;
using Table = test::TensorTable;

ModelConfig small_config(int n_layer, int n_expert, int n_expert_used) {
  return test::small_plan_config(n_layer, n_expert, n_expert_used);
}
Table make_table(const ModelConfig& c) { return test::small_plan_table(c); }

PlanInputs inputs(uint64_t budget) {
  PlanInputs in;
  in.budget_bytes = budget;
  in.n_ctx = 256;
  in.n_batch = 8;
  return in;
}

TEST(PlanClassify, RolesFromNames) {
  int layer = 0;
  EXPECT_EQ(classify_tensor("blk.12.attn_q.weight", &layer), TensorRole::attention);
  EXPECT_EQ(layer, 12);
  EXPECT_EQ(classify_tensor("blk.0.attn_norm.weight", &layer), TensorRole::norm);
  EXPECT_EQ(classify_tensor("blk.0.attn_k_norm.weight", &layer), TensorRole::norm);
  EXPECT_EQ(classify_tensor("blk.3.ffn_gate_inp.weight", &layer), TensorRole::router);
  EXPECT_EQ(classify_tensor("blk.3.ffn_down_exps.weight", &layer), TensorRole::experts);
  EXPECT_EQ(classify_tensor("blk.3.ffn_up.weight", &layer), TensorRole::dense_ffn);
  EXPECT_EQ(classify_tensor("blk.3.ffn_up_shexp.weight", &layer), TensorRole::dense_ffn);
  EXPECT_EQ(classify_tensor("token_embd.weight", &layer), TensorRole::embedding);
  EXPECT_EQ(layer, -1);
  EXPECT_EQ(classify_tensor("output.weight", &layer), TensorRole::output);
  EXPECT_EQ(classify_tensor("output_norm.weight", &layer), TensorRole::norm);
  EXPECT_EQ(classify_tensor("rope_freqs.weight", &layer), TensorRole::other);
}

TEST(PlanSizes, ParsesSuffixes) {
  EXPECT_EQ(parse_size("4096"), 4096u);
  EXPECT_EQ(parse_size("8G"), 8ull << 30);
  EXPECT_EQ(parse_size("512m"), 512ull << 20);
  EXPECT_EQ(parse_size("1.5K"), 1536u);
  EXPECT_EQ(parse_size("2TiB"), 2ull << 40);
  EXPECT_EQ(parse_size("3GB"), 3ull << 30);
  EXPECT_THROW(parse_size("lots"), Error);
  EXPECT_THROW(parse_size("8X"), Error);
  EXPECT_GT(detect_memory_budget(), 0u);
}

TEST(PlanSizes, KvCacheFromConfig) {
  ModelConfig c = small_config(4, 0, 0);
  EXPECT_EQ(kv_cache_bytes(c, 256), 2ull * 4 * 256 * 2 * 64 * 2);
}

TEST(Plan, EverythingResidentWhenItFits) {
  for (int n_expert : {0, 8}) {
    ModelConfig c = small_config(4, n_expert, 2);
    Table t = make_table(c);
    Plan p = make_plan(t.tensors, c, inputs(4ull << 30));
    EXPECT_EQ(p.streamed_weight_bytes, 0u);
    EXPECT_EQ(p.pool_bytes, 0u);
    EXPECT_EQ(p.prefetch_depth, 0);
    EXPECT_EQ(p.limit, Limit::ram_bandwidth);
    for (const auto& u : p.units) EXPECT_TRUE(u.resident);
    // Only token_embd's one row per token comes from the file.
    EXPECT_NEAR(p.ssd_bytes_per_token, 2.0 * MiB / c.n_vocab, 1.0);
    EXPECT_NEAR(p.seconds_per_token, p.ram_bytes_per_token / 30e9, 1e-9);
    EXPECT_EQ(p.resident_weight_bytes + p.mapped_bytes, p.model_bytes);
  }
}

// A multi-token-prediction (nextn) block after the trunk, as released Qwen3.5 files carry it
// (blk.<n_layer>.*: attention, experts and its own nextn.* tensors): never read, so never planned
// -- counted in the model's bytes, nothing else. Without n_layer_nextn it is a layer too many.
TEST(Plan, NextnLayersAfterTheTrunkAreNotPlanned) {
  ModelConfig c = small_config(4, 8, 2);
  Table t = make_table(c);
  const Plan base = make_plan(t.tensors, c, inputs(4ull << 30));
  const uint64_t before = t.offset;
  const std::string b = "blk.4.";
  t.add(b + "attn_norm.weight", {c.n_embd}, 1024);
  for (const char* n : {"attn_q", "attn_k", "attn_v", "attn_output"}) t.add(b + n + ".weight", {c.n_embd, 1024}, MiB);
  t.add(b + "ffn_gate_inp.weight", {c.n_embd, c.n_expert}, 4096);
  for (const char* n : {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"})
    t.add(b + n + ".weight", {c.n_embd, 1024, c.n_expert}, uint64_t(c.n_expert) * MiB);
  t.add(b + "nextn.eh_proj.weight", {2 * c.n_embd, c.n_embd}, 2 * MiB);
  for (const char* n : {"nextn.enorm", "nextn.hnorm", "nextn.shared_head_norm"}) t.add(b + n + ".weight", {c.n_embd}, 1024);
  const uint64_t nextn = t.offset - before;
  EXPECT_THROW(make_plan(t.tensors, c, inputs(4ull << 30)), Error);
  c.n_layer_nextn = 1;
  for (uint64_t budget : {uint64_t(4) << 30, base.minimum_bytes}) {
    const Plan p = make_plan(t.tensors, c, inputs(budget));
    EXPECT_EQ(p.model_bytes, base.model_bytes + nextn);
    EXPECT_EQ(p.minimum_bytes, base.minimum_bytes);
    EXPECT_EQ(p.tensors.size(), base.tensors.size());
    for (const auto& tp : p.tensors) EXPECT_NE(tp.name.rfind(b, 0), 0u) << tp.name;
  }
  t.add("blk.5.attn_q.weight", {c.n_embd, 1024}, MiB);  // past the nextn layers: still an error
  EXPECT_THROW(make_plan(t.tensors, c, inputs(4ull << 30)), Error);
}

TEST(Plan, BelowMinimumNamesTheMinimum) {
  for (int n_expert : {0, 8}) {
    ModelConfig c = small_config(4, n_expert, 2);
    Table t = make_table(c);
    uint64_t minimum = make_plan(t.tensors, c, inputs(4ull << 30)).minimum_bytes;
    EXPECT_NO_THROW(make_plan(t.tensors, c, inputs(minimum)));
    try {
      make_plan(t.tensors, c, inputs(minimum - 1));
      FAIL() << "expected an error";
    } catch (const Error& e) {
      std::string what = e.what();
      EXPECT_NE(what.find("minimum of " + format_bytes(double(minimum))), std::string::npos) << what;
      EXPECT_NE(what.find("always resident"), std::string::npos) << what;
      EXPECT_NE(what.find("KV cache"), std::string::npos) << what;
    }
  }
}

TEST(Plan, MoreMemoryNeverPredictsSlower) {
  for (int n_expert : {0, 8}) {
    for (double recall : {0.0, 0.8}) {
      ModelConfig c = small_config(6, n_expert, 2);
      Table t = make_table(c);
      PlanInputs in = inputs(4ull << 30);
      in.expert_prefetch_recall = recall;
      Plan full = make_plan(t.tensors, c, in);
      double previous = 1e30;
      const uint64_t lo = full.minimum_bytes, hi = full.model_bytes + full.kv_bytes + full.scratch_bytes + 4 * MiB;
      for (int i = 0; i <= 200; ++i) {
        in.budget_bytes = lo + (hi - lo) * uint64_t(i) / 200;
        Plan p = make_plan(t.tensors, c, in);
        EXPECT_LE(p.used_bytes, in.budget_bytes);
        EXPECT_LE(p.seconds_per_token, previous * (1 + 1e-9))
            << "experts " << n_expert << " recall " << recall << " budget " << in.budget_bytes;
        EXPECT_GE(p.seconds_per_token, p.lp_seconds_per_token * (1 - 1e-6));
        previous = p.seconds_per_token;
      }
      EXPECT_NEAR(previous, full.seconds_per_token, 1e-12);
    }
  }
}

TEST(Plan, DenseKeepsAsManyFfnMatricesAsFit) {
  ModelConfig c = small_config(8, 0, 0);
  Table t = make_table(c);
  const uint64_t matrix = 3 * MiB;
  const uint64_t piece = matrix + 4096;  // a whole 3 MiB matrix is one piece, plus alignment
  Plan full = make_plan(t.tensors, c, inputs(4ull << 30));
  uint64_t fixed = full.mandatory_bytes + full.kv_bytes + full.scratch_bytes;
  // Room for 16.5 matrices, pool included.
  const uint64_t budget = fixed + matrix * 33 / 2;
  Plan p = make_plan(t.tensors, c, inputs(budget));
  EXPECT_EQ(p.n_dense_units, 8 * 3);
  EXPECT_EQ(p.dense_slot_bytes, piece);
  EXPECT_EQ(p.pool_bytes, uint64_t(p.n_dense_slots) * piece);
  EXPECT_EQ(uint64_t(p.n_dense_resident), (budget - fixed - p.pool_bytes) / matrix);
  EXPECT_LT(budget - p.used_bytes, matrix);
  // SSD-bound with little compute to hide reads behind: a ring of two pieces and more resident
  // matrices beat a deep ring (14 resident, 10 streamed rather than fewer streamed overlapped).
  EXPECT_EQ(p.prefetch_depth, 1);
  EXPECT_EQ(p.n_dense_slots, 2);
  EXPECT_EQ(p.n_dense_resident, 14);
  EXPECT_EQ(p.limit, Limit::ssd_bandwidth);
  EXPECT_NEAR(p.ssd_bytes_per_token, 10.0 * matrix + 2.0 * MiB / c.n_vocab, 1.0);
  int streamed = 0;
  for (const auto& tp : p.tensors)
    if (tp.role == TensorRole::dense_ffn && tp.placement == Placement::streamed) ++streamed;
  EXPECT_EQ(streamed, 10);
  for (const auto& tp : p.tensors)
    if (tp.role == TensorRole::attention || tp.role == TensorRole::norm || tp.role == TensorRole::output) {
      EXPECT_EQ(tp.placement, Placement::resident) << tp.name;
    }

  // When compute is slower than the reads, reading ahead hides them: a deeper ring, never
  // more pieces than stream, and the plan is compute-bound.
  PlanInputs slow = inputs(budget);
  slow.compute_gflops = 0.2;
  Plan overlapped = make_plan(t.tensors, c, slow);
  EXPECT_GE(overlapped.prefetch_depth, 2);
  EXPECT_GT(overlapped.n_dense_slots, 2);
  EXPECT_LE(overlapped.n_dense_slots, overlapped.n_dense_units - overlapped.n_dense_resident);
  EXPECT_EQ(overlapped.pool_bytes, uint64_t(overlapped.n_dense_slots) * piece);
  EXPECT_LE(overlapped.used_bytes, budget);
  EXPECT_EQ(overlapped.limit, Limit::compute);
}

TEST(Plan, ObservedHotExpertsStayResident) {
  ModelConfig c = small_config(4, 8, 2);
  Table t = make_table(c);
  Plan full = make_plan(t.tensors, c, inputs(4ull << 30));
  uint64_t fixed = full.mandatory_bytes + full.kv_bytes + full.scratch_bytes;
  // A slot holds the page-aligned ranges of one expert's three 1 MiB slices: a little more.
  const uint64_t slot = full.expert_slot_bytes;
  EXPECT_GE(slot, 3 * MiB);
  EXPECT_LE(slot, 3 * MiB + 3 * 8192);
  // Pool for depth 2 (2k slots: the current layer's misses and the next layer's guesses) plus
  // room for 2 experts in each of the 4 layers.
  Plan prior = make_plan(t.tensors, c, inputs(fixed + 4 * slot + 8 * slot));
  EXPECT_EQ(prior.n_expert_resident, 8);
  for (const auto& u : prior.units) EXPECT_DOUBLE_EQ(u.probability, 0.25);

  // Layer l's hot experts are l and l+4; the others are rarely chosen.
  std::vector<std::vector<double>> counts(4, std::vector<double>(8, 10.0));
  for (int l = 0; l < 4; ++l) counts[size_t(l)][size_t(l)] = counts[size_t(l)][size_t(l + 4)] = 1000.0;
  Plan revised = revise(prior, counts);
  EXPECT_EQ(revised.n_expert_resident, 8);
  for (const auto& u : revised.units) {
    bool hot = u.expert == u.layer || u.expert == u.layer + 4;
    EXPECT_EQ(u.resident, hot) << "layer " << u.layer << " expert " << u.expert;
  }
  for (const auto& tp : revised.tensors)
    if (tp.role == TensorRole::experts) {
      EXPECT_EQ(tp.resident_experts, (std::vector<int>{tp.layer, tp.layer + 4}));
    }
  EXPECT_LT(revised.ssd_bytes_per_token, prior.ssd_bytes_per_token);
  EXPECT_GT(revised.tokens_per_second, prior.tokens_per_second);
}

TEST(Plan, JsonParses) {
  ModelConfig c = small_config(4, 8, 2);
  Table t = make_table(c);
  Plan full = make_plan(t.tensors, c, inputs(4ull << 30));
  Plan p = make_plan(t.tensors, c, inputs(full.minimum_bytes + 20 * MiB));
  auto j = nlohmann::json::parse(to_json(p));
  EXPECT_EQ(j["tensors"].size(), t.tensors.size());
  EXPECT_EQ(j["memory"]["pool_bytes"].get<uint64_t>(), p.pool_bytes);
  EXPECT_EQ(j["per_token"]["limit"].get<std::string>(), limit_name(p.limit));
  bool saw_experts = false;
  for (const auto& e : j["tensors"]) {
    if (e["role"] == "experts") {
      saw_experts = true;
      EXPECT_TRUE(e.contains("resident_experts"));
      EXPECT_EQ(e["slice_bytes"].get<uint64_t>(), 8 * MiB / 8);
    }
  }
  EXPECT_TRUE(saw_experts);
  std::string text = describe(p);
  EXPECT_NE(text.find("tok/s"), std::string::npos);
  EXPECT_NE(text.find("expert cache"), std::string::npos);
}

TEST(Plan, TiedEmbeddingIsTheResidentHead) {
  ModelConfig c = small_config(2, 0, 0);
  Table t = make_table(c);
  std::erase_if(t.tensors, [](const gguf::TensorInfo& ti) { return ti.name == "output.weight"; });
  Plan p = make_plan(t.tensors, c, inputs(4ull << 30));
  EXPECT_EQ(p.mapped_bytes, 0u);
  EXPECT_EQ(p.tensors.front().name, "token_embd.weight");
  EXPECT_EQ(p.tensors.front().placement, Placement::resident);
  EXPECT_NEAR(p.ssd_bytes_per_token, 0.0, 1e-9);
}

TEST(Plan, ReviseChecksTheShapeOfCounts) {
  ModelConfig c = small_config(2, 8, 2);
  Table t = make_table(c);
  Plan p = make_plan(t.tensors, c, inputs(4ull << 30));
  EXPECT_THROW(revise(p, std::vector<std::vector<double>>(3, std::vector<double>(8, 1.0))), Error);
  EXPECT_THROW(revise(p, std::vector<std::vector<double>>(2, std::vector<double>(7, 1.0))), Error);
  Plan r = revise(p, std::vector<std::vector<double>>(2, std::vector<double>(8, 0.0)));  // no counts: the prior
  for (const auto& u : r.units) EXPECT_DOUBLE_EQ(u.probability, 0.25);
}

// Mixtral 8x7B's table at Q4_K (144 bytes per 256 weights), head at Q6_K, from shapes alone
// (DESIGN 5: ~6 GB of experts per token; ~0.28 tok/s at 1.7 GB/s with no cache hits).
TEST(Plan, MixtralShapedTable) {
  ModelConfig c = small_config(32, 8, 2);
  c.n_embd = 4096, c.n_head = 32, c.n_head_kv = 8, c.head_dim_k = c.head_dim_v = 128;
  c.n_ff = c.n_ff_expert = 14336, c.n_vocab = 32000;
  auto q4k = [](int64_t n) { return uint64_t(n / 256 * 144); };
  Table t;
  t.add("token_embd.weight", {4096, 32000}, q4k(4096LL * 32000));
  for (int l = 0; l < 32; ++l) {
    std::string b = "blk." + std::to_string(l) + ".";
    t.add(b + "attn_norm.weight", {4096}, 4096 * 4);
    t.add(b + "attn_q.weight", {4096, 4096}, q4k(4096LL * 4096));
    t.add(b + "attn_k.weight", {4096, 1024}, q4k(4096LL * 1024));
    t.add(b + "attn_v.weight", {4096, 1024}, q4k(4096LL * 1024));
    t.add(b + "attn_output.weight", {4096, 4096}, q4k(4096LL * 4096));
    t.add(b + "ffn_norm.weight", {4096}, 4096 * 4);
    t.add(b + "ffn_gate_inp.weight", {4096, 8}, 4096 * 8 * 4);
    t.add(b + "ffn_gate_exps.weight", {4096, 14336, 8}, q4k(4096LL * 14336 * 8));
    t.add(b + "ffn_up_exps.weight", {4096, 14336, 8}, q4k(4096LL * 14336 * 8));
    t.add(b + "ffn_down_exps.weight", {14336, 4096, 8}, q4k(4096LL * 14336 * 8));
  }
  t.add("output_norm.weight", {4096}, 4096 * 4);
  t.add("output.weight", {4096, 32000}, uint64_t(4096LL * 32000 / 256 * 210));
  PlanInputs in;
  in.budget_bytes = 3ull << 30;
  Plan tight = make_plan(t.tensors, c, in);
  EXPECT_GT(tight.tokens_per_second, 0.2);
  EXPECT_LT(tight.tokens_per_second, 0.35);
  EXPECT_GT(tight.ssd_bytes_per_token, 5e9);
  in.budget_bytes = 32ull << 30;
  Plan roomy = make_plan(t.tensors, c, in);
  EXPECT_EQ(roomy.streamed_weight_bytes, 0u);
  EXPECT_EQ(roomy.n_expert_resident, 256);
  EXPECT_GT(roomy.tokens_per_second, 10 * tight.tokens_per_second);
}

TEST(Plan, ForgedLlama8B) {
  const char* home = std::getenv("HOME");
  std::string path = std::string(home ? home : "") + "/.cache/strata/models/forged-llama-3-8b-Q4_K_M.gguf";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not present";
  auto file = gguf::File::open(path);
  ModelConfig c = load_config(*file);
  PlanInputs in;
  in.budget_bytes = 64ull << 30;
  Plan full = make_plan(*file, c, in);
  EXPECT_EQ(full.streamed_weight_bytes, 0u);
  EXPECT_EQ(full.n_dense_units, 3 * c.n_layer);
  EXPECT_EQ(full.limit, Limit::ram_bandwidth);

  in.budget_bytes = 3ull << 30;
  Plan tight = make_plan(*file, c, in);
  EXPECT_GT(tight.n_dense_resident, 0);
  EXPECT_LT(tight.n_dense_resident, 3 * c.n_layer);
  EXPECT_LE(tight.used_bytes, in.budget_bytes);
  EXPECT_EQ(tight.limit, Limit::ssd_bandwidth);
  EXPECT_LT(tight.tokens_per_second, full.tokens_per_second);
  EXPECT_EQ(tight.tensors.size(), file->tensors().size());
}

}  // namespace
}  // namespace strata::tier
