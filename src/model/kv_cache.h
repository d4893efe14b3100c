#pragma once
// Keys and values of every layer, [slot x n_head_kv * head_dim] in one of the KV types (f16 as
// llama.cpp's default, q8_0, q4_0). A global layer keeps every position (slot = position); a
// sliding-window layer keeps only its window plus one batch, as a ring (slot = position % slots),
// so its memory does not grow with the context. A gated delta-rule layer (qwen35) keeps no keys
// and values: its recurrent state instead (model/recurrent_state.h).
#include <cstdint>
#include <memory>
#include <vector>

#include "model/config.h"
#include "model/recurrent_state.h"
#include "ops/attention.h"
#include "tensor/type.h"

namespace strata::backend {
class Backend;
}

namespace strata {

struct KvCache {
  struct Layer {
    std::vector<uint8_t> k, v;
    int64_t n_slots = 0;
    std::vector<int64_t> slot_pos;  // ring layers: the position each slot holds (-1: none)
    uint8_t* device_k = nullptr;    // init on a device: the rows there (k and v stay empty)
    uint8_t* device_v = nullptr;
  };
  int n_ctx = 0;
  DType type = DType::F16;
  int window = 0;  // sliding window of the ring layers
  size_t k_row_bytes = 0, v_row_bytes = 0, k_head_bytes = 0, v_head_bytes = 0;
  std::vector<Layer> layers;
  RecurrentState recurrent;  // the delta-rule layers' state (empty without such layers)

  // n_batch: the most positions one forward pass adds (a ring holds window + n_batch slots).
  // device: the rows live in that backend's memory (the bookkeeping stays here), else in RAM.
  void init(const ModelConfig& config, int n_ctx, DType type = DType::F16, int n_batch = kDefaultBatch,
            backend::Backend* device = nullptr);
  // Exactly what init allocates for these arguments, the recurrent state included (the planner
  // counts it).
  static uint64_t bytes_for(const ModelConfig& config, int n_ctx, DType type = DType::F16,
                            int n_batch = kDefaultBatch);
  size_t bytes() const;         // in RAM
  size_t device_bytes() const;  // in the device's memory

  ops::KvLayerView k_view(int layer);
  ops::KvLayerView v_view(int layer);
  // Records that positions [pos0, pos0 + n) of `layer` were written.
  void written(int layer, int64_t pos0, int n);
  // Whether a context cut back to its first n positions can continue: every ring still holds
  // the window that position n will see.
  bool can_keep(int64_t n) const;
  // Cuts the context back to its first n positions if it can continue from there (can_keep, and
  // a recurrent state at n or checkpointed there, which is then restored); false: start over.
  bool rewind(int64_t n);

  static constexpr int kDefaultBatch = 512;

 private:
  std::shared_ptr<uint8_t> device_memory_;  // every layer's device rows, freed by the device
  size_t device_bytes_ = 0;
};

}  // namespace strata
