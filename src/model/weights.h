#pragma once
// Every tensor of a model with its role, as plain data; which tensors an architecture has, their
// names, shapes and roles are the catalogue's (model/catalogue.h). Compute code does not read
// these structs for the matrices that may stream: it asks a WeightSource (model/weight_source.h).
#include <string>
#include <vector>

#include "model/config.h"
#include "ops/weight.h"

namespace strata::gguf { class File; }

namespace strata {

enum class TensorRole { embedding, output, norm, attention, router, dense_ffn, experts, other };
const char* role_name(TensorRole role);

// The dense FFN matrices of a layer, in the order a forward pass uses them: its own FFN (dense
// layers) and a MoE layer's shared expert. Streamers and the planner handle each as a unit.
enum class FfnPart { gate, up, down, shexp_gate, shexp_up, shexp_down };
inline constexpr int kNumFfnParts = 6;
inline constexpr FfnPart kFfnParts[] = {FfnPart::gate, FfnPart::up, FfnPart::down};
inline constexpr FfnPart kSharedExpertParts[] = {FfnPart::shexp_gate, FfnPart::shexp_up, FfnPart::shexp_down};

struct LayerWeights {
  std::vector<float> attn_norm;      // [n_embd]
  WeightView wq;                     // [n_embd] -> [n_head * head_dim_k]
  WeightView wk;                     // [n_embd] -> [n_head_kv * head_dim_k]
  WeightView wv;                     // [n_embd] -> [n_head_kv * head_dim_v]
  WeightView wo;                     // [n_head * head_dim_v] -> [n_embd]
  std::vector<float> bq, bk, bv;     // qwen2 and gpt-oss biases, or empty
  std::vector<float> bo;             // [n_embd] output projection bias (gpt-oss), or empty
  std::vector<float> attn_sinks;     // [n_head] sink logit per query head (gpt-oss), or empty
  std::vector<float> q_norm, k_norm; // [head_dim_k], or empty
  std::vector<float> post_attn_norm; // [n_embd] (gemma3), or empty
  std::vector<float> ffn_norm;       // [n_embd]
  WeightView w_gate, w_up;           // [n_embd] -> [n_ff] (dense layers)
  WeightView w_down;                 // [n_ff] -> [n_embd]
  std::vector<float> post_ffn_norm;  // [n_embd] (gemma3), or empty
  // MoE: router [n_embd] -> [n_expert]; experts stacked: expert e = rows [e*n_ff_expert, (e+1)*n_ff_expert)
  // of gate/up ([n_embd] -> [n_expert * n_ff_expert]) and rows [e*n_embd, (e+1)*n_embd) of down.
  WeightView router;
  WeightView gate_exps, up_exps, down_exps;
  // gpt-oss: router bias [n_expert]; expert biases, expert e at [e * n_ff_expert] of gate/up
  // ([n_ff_expert x n_expert]) and at [e * n_embd] of down ([n_embd x n_expert]). Empty otherwise.
  std::vector<float> router_bias, gate_exps_bias, up_exps_bias, down_exps_bias;
  // Shared expert (qwen2moe): a dense FFN every token runs, scaled by sigmoid(shexp_gate . x).
  WeightView shexp_gate_inp;         // [n_embd] -> [1]
  WeightView w_gate_shexp, w_up_shexp;  // [n_embd] -> [n_ff_shexp]
  WeightView w_down_shexp;           // [n_ff_shexp] -> [n_embd]
  // Gated delta-rule layers (qwen35), instead of wq, wk, wv, wo. conv_dim = 2 * key_dim + d_inner.
  WeightView ssm_qkv;                // attn_qkv: [n_embd] -> [conv_dim] (q, k, v before the conv1d)
  WeightView ssm_z;                  // attn_gate: [n_embd] -> [d_inner] (the output norm's gate)
  std::vector<float> ssm_conv1d;     // [conv_dim x d_conv]: channel c's kernel at [c * d_conv]
  std::vector<float> ssm_dt;         // [n_v_heads] bias of alpha before the softplus
  std::vector<float> ssm_a;          // [n_v_heads] -exp(A_log): decay rate per value head
  WeightView ssm_beta, ssm_alpha;    // [n_embd] -> [n_v_heads]
  std::vector<float> ssm_norm;       // [d_state] RMSNorm of each value head's output
  WeightView ssm_out;                // [d_inner] -> [n_embd]
};

inline const WeightView& ffn_weight(const LayerWeights& L, FfnPart part) {
  switch (part) {
    case FfnPart::gate: return L.w_gate;
    case FfnPart::up: return L.w_up;
    case FfnPart::down: return L.w_down;
    case FfnPart::shexp_gate: return L.w_gate_shexp;
    case FfnPart::shexp_up: return L.w_up_shexp;
    case FfnPart::shexp_down: return L.w_down_shexp;
  }
  return L.w_gate;
}

struct ModelWeights {
  WeightView token_embd;             // [n_embd] x n_vocab rows
  std::vector<float> output_norm;    // [n_embd]
  WeightView output;                 // [n_embd] -> [n_vocab] (token_embd when tied)
  std::vector<float> rope_freqs;     // llama 3.1 frequency factors, or empty
  std::vector<LayerWeights> layers;
};

// Binds every tensor the catalogue lists for the config to its place; throws strata::Error
// naming a missing tensor or a tensor whose shape or type does not fit the config.
ModelWeights bind_weights(const gguf::File& file, const ModelConfig& config);

}  // namespace strata
