#pragma once
// The recurrent state of gated delta-rule (linear attention) layers (qwen35), which keep no KV
// cache: per such layer a conv1d history and the delta rule's state, f32 as llama.cpp keeps
// them, for one sequence. It describes the tokens before `pos`; unlike a KV cache it cannot be
// cut back, so a checkpoint keeps a copy at one earlier position (the end of the last batch of
// several tokens: a prompt) that a later prompt sharing that prefix resumes from. The scratch
// of one batch of these layers (and of their gated full-attention layers) lives here too, so
// KvCache::bytes_for counts everything a hybrid model adds.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "model/config.h"

namespace strata {

struct RecurrentState {
  struct Layer {
    std::vector<float> conv;  // [conv_dim x (d_conv - 1)]: each channel's last inputs, oldest first
    std::vector<float> ssm;   // [n_v_heads x d_state x d_state]: head h's S[i][j] at [h * d * d + j * d + i]
  };
  std::vector<Layer> layers;  // per model layer; empty vectors for attention layers
  int64_t pos = 0;            // tokens the state has absorbed; -1 while a batch is under way
  std::vector<Layer> saved;   // the checkpoint
  int64_t saved_pos = -1;     // its position, -1: none

  // Scratch of one batch of n_batch tokens.
  struct Scratch {
    std::vector<float> qkv;          // [n_batch x conv_dim] projections before the conv1d
    std::vector<float> conv;         // [n_batch x conv_dim] after it: q | k | v per token
    std::vector<float> z;            // [n_batch x d_inner] the output norm's gate
    std::vector<float> beta, alpha;  // [n_batch x n_v_heads]
    std::vector<float> core;         // [n_batch x d_inner] the delta rule's output
    std::vector<float> q_gate;       // [n_batch x 2 * q_dim] gated attention's q projection
    std::vector<float> gate;         // [n_batch x q_dim] its output gate
  } scratch;

  // Sized for the config (nothing for a model without delta-rule layers); n_batch: the most
  // tokens one forward pass adds.
  void init(const ModelConfig& config, int n_batch);
  // Exactly what init allocates (the planner counts it through KvCache::bytes_for).
  static uint64_t bytes_for(const ModelConfig& config, int n_batch);
  size_t bytes() const;

  bool empty() const { return layers.empty(); }
  void reset();       // zeros: the state before any token; drops the checkpoint
  void checkpoint();  // copies the state at pos
  // Whether the state can continue after the first n tokens: n == pos, or the checkpoint's
  // position (restored). Anything else drops the state and the checkpoint (the history before it
  // may change): only a batch at position 0 continues.
  bool rewind(int64_t n);
};

}  // namespace strata
