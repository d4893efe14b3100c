#pragma once
// Keys and values of every layer for every position, stored as f16 (as llama.cpp's default
// cache), row p holding position p: [n_ctx x n_head_kv * head_dim].
#include <cstdint>
#include <vector>

#include "model/config.h"

namespace strata {

struct KvCache {
  int n_ctx = 0;
  int64_t k_width = 0;  // n_head_kv * head_dim_k
  int64_t v_width = 0;  // n_head_kv * head_dim_v
  std::vector<std::vector<uint16_t>> k, v;  // per layer

  void init(const ModelConfig& config, int n_ctx);
  size_t bytes() const;
  uint16_t* k_row(int layer, int64_t pos) { return k[size_t(layer)].data() + pos * k_width; }
  uint16_t* v_row(int layer, int64_t pos) { return v[size_t(layer)].data() + pos * v_width; }
};

}  // namespace strata
