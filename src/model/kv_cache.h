#pragma once
// Keys and values of every layer, [slot x n_head_kv * head_dim] in one of the KV types (f16 as
// llama.cpp's default, q8_0, q4_0). A global layer keeps every position (slot = position); a
// sliding-window layer keeps only its window plus one batch, as a ring (slot = position % slots),
// so its memory does not grow with the context.
#include <cstdint>
#include <vector>

#include "model/config.h"
#include "ops/attention.h"
#include "tensor/type.h"

namespace strata {

struct KvCache {
  struct Layer {
    std::vector<uint8_t> k, v;
    int64_t n_slots = 0;
    std::vector<int64_t> slot_pos;  // ring layers: the position each slot holds (-1: none)
  };
  int n_ctx = 0;
  DType type = DType::F16;
  int window = 0;  // sliding window of the ring layers
  size_t k_row_bytes = 0, v_row_bytes = 0, k_head_bytes = 0, v_head_bytes = 0;
  std::vector<Layer> layers;

  // n_batch: the most positions one forward pass adds (a ring holds window + n_batch slots).
  void init(const ModelConfig& config, int n_ctx, DType type = DType::F16, int n_batch = kDefaultBatch);
  // Exactly what init allocates for these arguments (the planner counts it).
  static uint64_t bytes_for(const ModelConfig& config, int n_ctx, DType type = DType::F16,
                            int n_batch = kDefaultBatch);
  size_t bytes() const;

  ops::KvLayerView k_view(int layer);
  ops::KvLayerView v_view(int layer);
  // Records that positions [pos0, pos0 + n) of `layer` were written.
  void written(int layer, int64_t pos0, int n);
  // Whether a context cut back to its first n positions can continue: every ring still holds
  // the window that position n will see.
  bool can_keep(int64_t n) const;

  static constexpr int kDefaultBatch = 512;
};

}  // namespace strata
