// PlanInputs::kv_type_auto: the planner picks the KV cache's type when memory is tight (the widest
// of f16, q8_0, q4_0 with which every weight stays resident, else q4_0), and counts that type's cache.
#include <gtest/gtest.h>

#include "gguf/gguf.h"
#include "model/config.h"
#include "tier/plan/plan.h"

namespace strata::tier {
namespace {

constexpr uint64_t MiB = uint64_t(1) << 20;

// A 4-layer dense model of ~56 MiB whose KV cache at 65,536 positions is 128 MiB in f16.
struct Model {
  ModelConfig c;
  std::vector<gguf::TensorInfo> tensors;
  Model() {
    c.arch_name = "llama";
    c.n_layer = 4;
    c.n_embd = 256;
    c.n_head = 4;
    c.n_head_kv = 2;
    c.head_dim_k = c.head_dim_v = 64;
    c.n_ff = 1024;
    c.n_vocab = 1000;
    uint64_t offset = 0;
    auto add = [&](const std::string& name, std::vector<int64_t> shape, uint64_t n_bytes) {
      gguf::TensorInfo t;
      t.name = name;
      t.shape = std::move(shape);
      t.n_elements = 1;
      for (int64_t d : t.shape) t.n_elements *= d;
      t.n_bytes = n_bytes;
      t.offset = t.file_offset = offset;
      offset += n_bytes;
      tensors.push_back(std::move(t));
    };
    add("token_embd.weight", {c.n_embd, c.n_vocab}, 2 * MiB);
    for (int l = 0; l < c.n_layer; ++l) {
      const std::string b = "blk." + std::to_string(l) + ".";
      add(b + "attn_norm.weight", {c.n_embd}, 1024);
      for (const char* n : {"attn_q", "attn_k", "attn_v", "attn_output"}) add(b + n + ".weight", {c.n_embd, 1024}, MiB);
      add(b + "ffn_norm.weight", {c.n_embd}, 1024);
      for (const char* n : {"ffn_gate", "ffn_up", "ffn_down"}) add(b + n + ".weight", {c.n_embd, 3072}, 3 * MiB);
    }
    add("output_norm.weight", {c.n_embd}, 1024);
    add("output.weight", {c.n_embd, c.n_vocab}, 2 * MiB);
  }
};

PlanInputs inputs(uint64_t budget, DType type, bool automatic) {
  PlanInputs in;
  in.budget_bytes = budget;
  in.n_ctx = 65536;
  in.n_batch = 8;
  in.kv_type = type;
  in.kv_type_auto = automatic;
  return in;
}

TEST(PlanKvType, WidestTypeThatKeepsEveryWeightResident) {
  const Model m;
  // What a plan with every weight resident needs, per cache type.
  auto need = [&](DType t) {
    const Plan p = make_plan(m.tensors, m.c, inputs(uint64_t(1) << 40, t, false));
    EXPECT_FALSE(p.streams());
    return p.resident_weight_bytes + p.kv_bytes + p.scratch_bytes;
  };
  const uint64_t f16 = need(DType::F16), q8 = need(DType::Q8_0), q4 = need(DType::Q4_0);
  ASSERT_GT(f16, q8);
  ASSERT_GT(q8, q4);
  struct Case {
    uint64_t budget;
    DType want;
  };
  for (const Case& cs : {Case{uint64_t(1) << 40, DType::F16}, Case{f16, DType::F16}, Case{f16 - 1, DType::Q8_0},
                         Case{q8, DType::Q8_0}, Case{q8 - 1, DType::Q4_0}, Case{q4, DType::Q4_0}}) {
    const Plan p = make_plan(m.tensors, m.c, inputs(cs.budget, DType::F16, true));
    EXPECT_EQ(p.inputs.kv_type, cs.want) << "budget " << cs.budget;
    EXPECT_EQ(p.kv_bytes, kv_cache_bytes(m.c, 65536, 8, cs.want));
    EXPECT_FALSE(p.streams()) << "budget " << cs.budget;
  }
  // Tighter still: q4_0, and the weights stream.
  const Plan tight = make_plan(m.tensors, m.c, inputs(q4 - 8 * MiB, DType::F16, true));
  EXPECT_EQ(tight.inputs.kv_type, DType::Q4_0);
  EXPECT_TRUE(tight.streams());
  // Without kv_type_auto the asked type stays, whatever the budget.
  EXPECT_EQ(make_plan(m.tensors, m.c, inputs(f16 - 1, DType::F16, false)).inputs.kv_type, DType::F16);
}

}  // namespace
}  // namespace strata::tier
