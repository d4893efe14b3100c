// PlanInputs::kv_type_auto: the planner picks the KV cache's type when memory is tight (the widest
// of f16, q8_0, q4_0 with which every weight stays resident, else q4_0), and counts that type's cache.
#include <gtest/gtest.h>

#include "gguf/gguf.h"
#include "model/config.h"
#include "support/plan_table.h"
#include "tier/plan/plan.h"

namespace strata::tier {
namespace {

constexpr uint64_t MiB = test::kMiB;

// A 4-layer dense model of ~56 MiB (tests/support/plan_table.h) whose KV cache at 65,536
// positions is 128 MiB in f16.
struct Model {
  ModelConfig c = test::small_plan_config(4, 0, 0);
  std::vector<gguf::TensorInfo> tensors = test::small_plan_table(c).tensors;
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
