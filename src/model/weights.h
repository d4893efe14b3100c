#pragma once
// Every tensor of a model with its role; compute code takes WeightViews from here and never
// cares where the bytes live.
#include <string>
#include <vector>

#include "model/config.h"
#include "ops/weight.h"

namespace strata::gguf { class File; }

namespace strata {

enum class TensorRole { embedding, output, norm, attention, router, dense_ffn, experts, other };
const char* role_name(TensorRole role);

struct LayerWeights {
  std::vector<float> attn_norm;      // [n_embd]
  WeightView wq;                     // [n_embd] -> [n_head * head_dim_k]
  WeightView wk;                     // [n_embd] -> [n_head_kv * head_dim_k]
  WeightView wv;                     // [n_embd] -> [n_head_kv * head_dim_v]
  WeightView wo;                     // [n_head * head_dim_v] -> [n_embd]
  std::vector<float> bq, bk, bv;     // qwen2 biases, or empty
  std::vector<float> q_norm, k_norm; // [head_dim_k], or empty
  std::vector<float> post_attn_norm; // [n_embd] (gemma3), or empty
  std::vector<float> ffn_norm;       // [n_embd]
  WeightView w_gate, w_up;           // [n_embd] -> [n_ff]
  WeightView w_down;                 // [n_ff] -> [n_embd]
  std::vector<float> post_ffn_norm;  // [n_embd] (gemma3), or empty
  // MoE: router [n_embd] -> [n_expert]; experts stacked: expert e = rows [e*n_ff_expert, (e+1)*n_ff_expert)
  // of gate/up ([n_embd] -> [n_expert * n_ff_expert]) and rows [e*n_embd, (e+1)*n_embd) of down.
  WeightView router;
  WeightView gate_exps, up_exps, down_exps;
};

// The three matrices of a dense FFN block, in the order a forward pass uses them.
enum class FfnPart { gate, up, down };
inline constexpr FfnPart kFfnParts[] = {FfnPart::gate, FfnPart::up, FfnPart::down};
inline const WeightView& ffn_weight(const LayerWeights& L, FfnPart part) {
  return part == FfnPart::gate ? L.w_gate : part == FfnPart::up ? L.w_up : L.w_down;
}

struct ModelWeights {
  WeightView token_embd;             // [n_embd] x n_vocab rows
  std::vector<float> output_norm;    // [n_embd]
  WeightView output;                 // [n_embd] -> [n_vocab] (token_embd when tied)
  std::vector<float> rope_freqs;     // llama 3.1 frequency factors, or empty
  std::vector<LayerWeights> layers;
};

// Binds every tensor of the file to its place; throws strata::Error naming a missing tensor or
// a tensor whose shape or type does not fit the config.
ModelWeights bind_weights(const gguf::File& file, const ModelConfig& config);

}  // namespace strata
