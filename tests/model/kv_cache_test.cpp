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

}  // namespace
}  // namespace strata
