// The KV cache's layout: bytes per type (what the planner counts is what init allocates),
// sliding-window layers as rings of window + batch slots, and when a cut-back context can keep
// what its rings hold.
#include <gtest/gtest.h>

#include "model/kv_cache.h"

namespace strata {
namespace {

ModelConfig gemma_like() {
  ModelConfig c;
  c.n_layer = 6;
  c.n_head_kv = 1;
  c.head_dim_k = c.head_dim_v = 256;
  c.sliding_window = 512;
  c.layer_swa = {true, true, true, true, true, false};
  return c;
}

TEST(KvCache, BytesForIsWhatInitAllocates) {
  const ModelConfig c = gemma_like();
  for (DType t : {DType::F16, DType::Q8_0, DType::Q4_0})
    for (int ctx : {256, 1024, 8192}) {
      KvCache kv;
      kv.init(c, ctx, t, 128);
      EXPECT_EQ(kv.bytes(), KvCache::bytes_for(c, ctx, t, 128)) << type_name(t) << " ctx " << ctx;
    }
  // f16: 2 bytes per element; q8_0: 34 per 32; q4_0: 18 per 32. One global layer of 8192 slots and
  // five rings of 512 + 128.
  const uint64_t slots = 8192 + 5 * (512 + 128);
  EXPECT_EQ(KvCache::bytes_for(c, 8192, DType::F16, 128), slots * 2 * 256 * 2);
  EXPECT_EQ(KvCache::bytes_for(c, 8192, DType::Q8_0, 128), slots * 2 * 8 * 34);
  EXPECT_EQ(KvCache::bytes_for(c, 8192, DType::Q4_0, 128), slots * 2 * 8 * 18);
  // A context within the window: no ring.
  EXPECT_EQ(KvCache::bytes_for(c, 256, DType::F16, 128), uint64_t(6) * 256 * 2 * 256 * 2);
}

TEST(KvCache, RingsKeepOnlyTheirWindowAndKnowWhatTheyLost) {
  const ModelConfig c = gemma_like();
  KvCache kv;
  kv.init(c, 4096, DType::F16, 64);
  EXPECT_EQ(kv.layers[0].n_slots, 512 + 64);
  EXPECT_EQ(kv.layers[5].n_slots, 4096);
  for (int64_t p = 0; p < 1000; p += 50)
    for (int l = 0; l < c.n_layer; ++l) kv.written(l, p, 50);
  EXPECT_TRUE(kv.can_keep(1000));  // continue where it stopped
  EXPECT_TRUE(kv.can_keep(990));   // positions 479..989 are all still in the ring of 576
  EXPECT_FALSE(kv.can_keep(600));  // position 600 needs 89..599: 89..423 were overwritten
  EXPECT_TRUE(kv.can_keep(0));
}

// Qwen3.5: delta-rule layers keep no keys and values but a conv history and a state (twice: the
// checkpoint), plus one batch of their scratch; the planner's figure is what init allocates.
ModelConfig hybrid_like() {
  ModelConfig c;
  c.n_layer = 4;
  c.n_head = 4;
  c.n_head_kv = 2;
  c.head_dim_k = c.head_dim_v = 32;
  c.layer_recurrent = {true, false, true, false};
  c.has_attn_output_gate = true;
  c.ssm_d_conv = 4;
  c.ssm_d_state = 16;
  c.ssm_n_group = 2;
  c.ssm_dt_rank = 4;
  c.ssm_d_inner = 64;
  return c;
}

TEST(KvCache, RecurrentLayersKeepAStateNotKeysAndValues) {
  const ModelConfig c = hybrid_like();
  for (int n_batch : {1, 64}) {
    KvCache kv;
    kv.init(c, 256, DType::F16, n_batch);
    EXPECT_EQ(kv.bytes(), KvCache::bytes_for(c, 256, DType::F16, n_batch)) << "batch " << n_batch;
    EXPECT_EQ(kv.layers[0].n_slots, 0);
    EXPECT_EQ(kv.layers[1].n_slots, 256);
    // conv_dim = 2 * 2 * 16 + 64 = 128 channels of 3 inputs; 4 heads of 16 x 16.
    EXPECT_EQ(kv.recurrent.layers[0].conv.size(), 128u * 3);
    EXPECT_EQ(kv.recurrent.layers[0].ssm.size(), 4u * 16 * 16);
    EXPECT_TRUE(kv.recurrent.layers[1].ssm.empty());
    const uint64_t kv_rows = uint64_t(2) * 256 * 2 * (2 * 32 * 2);  // two attention layers, f16 k and v
    const uint64_t state = uint64_t(2) * 2 * (128 * 3 + 4 * 16 * 16) * 4;
    const uint64_t scratch = uint64_t(n_batch) * (2 * 128 + 2 * 64 + 2 * 4 + 3 * 4 * 32) * 4;
    EXPECT_EQ(KvCache::bytes_for(c, 256, DType::F16, n_batch), kv_rows + state + scratch);
  }
}

TEST(KvCache, RecurrentStateRewindsOnlyToItsPositionOrCheckpoint) {
  KvCache kv;
  kv.init(hybrid_like(), 256, DType::F16, 8);
  RecurrentState& rs = kv.recurrent;
  rs.layers[0].ssm[5] = 1.5f;
  rs.pos = 10;
  rs.checkpoint();
  rs.layers[0].ssm[5] = 2.5f;
  rs.pos = 12;
  EXPECT_TRUE(kv.rewind(12));  // where it stands: kept as is
  EXPECT_EQ(rs.layers[0].ssm[5], 2.5f);
  EXPECT_TRUE(kv.rewind(10));  // the checkpoint: restored
  EXPECT_EQ(rs.layers[0].ssm[5], 1.5f);
  EXPECT_EQ(rs.pos, 10);
  EXPECT_FALSE(kv.rewind(7));  // neither: start over, and the checkpoint goes with it
  EXPECT_EQ(rs.saved_pos, -1);
  EXPECT_FALSE(kv.rewind(10));
  rs.reset();
  EXPECT_EQ(rs.layers[0].ssm[5], 0.0f);
  EXPECT_EQ(rs.pos, 0);
}

}  // namespace
}  // namespace strata
