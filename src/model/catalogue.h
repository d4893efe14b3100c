#pragma once
// The tensor catalogue: one table of every tensor Strata knows, with its GGUF name, role, the
// FFN part it is (for the streamers and the planner), when an architecture has it, its shape as
// a function of the config, and where bind_weights puts it. Weight binding, the planner's units,
// the resident copy, the streamers and the forge all read it; nothing else parses tensor names.
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "model/config.h"
#include "model/weights.h"

namespace strata {

// When a config has the tensor.
enum class TensorWhen : uint8_t {
  always,
  optional,       // bound when present (output.weight: tied embeddings; rope_freqs)
  qkv_bias,       // config.has_qkv_bias
  qk_norm,        // config.has_qk_norm
  post_norms,     // config.has_post_norms
  dense_layer,    // a layer with a dense FFN
  moe_layer,      // a layer with experts
  shared_expert,  // a MoE layer of a model with a shared expert
  attn_out_bias,  // config.has_attn_out_bias
  attn_sinks,     // config.has_attn_sinks
  expert_bias,    // a MoE layer of a model with expert biases
  ffn_norm,       // the FFN input norm under its usual name (all but gpt-oss)
  post_attn_norm, // post_attention_norm: gemma3's post-norm, gpt-oss's and qwen35's FFN input norm
  attention,      // a full-attention layer (every layer but the recurrent ones)
  recurrent,      // a gated delta-rule (linear attention) layer (qwen35)
};

// A size taken from the config.
enum class Dim : uint8_t {
  one,
  n_embd,
  n_vocab,
  q_dim,
  k_dim,
  v_dim,
  o_dim,
  head_dim_k,
  n_ff,
  n_ff_expert,
  n_ff_shexp,
  n_expert,
  n_rot_half,
  n_head,
  q_proj,        // q_dim, doubled where the projection also gives the output gate (qwen35)
  ssm_conv_dim,  // q, k and v channels of a delta-rule layer
  ssm_d_inner,   // its value width
  ssm_d_state,   // its head size
  ssm_d_conv,    // its conv1d kernel width
  ssm_v_heads,   // its value heads
};

struct TensorEntry {
  const char* name;  // after "blk.N." for per-layer tensors, else the whole name
  bool per_layer;
  TensorRole role;
  int part;  // FfnPart for the dense FFN matrices, else -1
  TensorWhen when;
  Dim cols, rows;  // ne[0] and ne[1]
  bool stacked;    // 3-D: n_expert matrices of [cols x rows], one per expert
  bool is_vector;  // bound as floats (norms, biases; rows > 1 for per-expert biases), else a matrix view
  // Where it is bound (exactly one is set).
  WeightView LayerWeights::*layer_matrix;
  std::vector<float> LayerWeights::*layer_vector;
  WeightView ModelWeights::*model_matrix;
  std::vector<float> ModelWeights::*model_vector;
};

// Every entry, in the order llama.cpp's converters write tensors (the forge writes that order).
std::span<const TensorEntry> tensor_catalogue();

int64_t dim_value(const ModelConfig& config, Dim dim);

// One tensor a config expects.
struct ExpectedTensor {
  const TensorEntry* entry = nullptr;
  int layer = -1;  // -1: not per layer
  std::string name;
  int64_t n_cols = 0;
  int64_t n_rows = 0;   // all rows (n_expert * rows per expert for stacked tensors)
  int64_t n_stack = 1;  // n_expert for stacked tensors
  bool required = true;
  std::vector<int64_t> shape() const;  // GGUF ne: {cols, rows} or {cols, rows per expert, n_expert}; {cols} for vectors
};

// The tensors of a config, in file order: token_embd, blk.0.* ... blk.{n-1}.*, output_norm,
// output, rope_freqs (optional ones included, marked not required).
std::vector<ExpectedTensor> expected_tensors(const ModelConfig& config);

// A GGUF tensor name's entry (and layer, -1 for a global tensor); null for a name the catalogue
// does not know.
const TensorEntry* find_tensor_entry(std::string_view name, int* layer = nullptr);
// Its role: the entry's, or `other` for a name the catalogue does not know.
TensorRole tensor_role(std::string_view name, int* layer = nullptr);
// Its FfnPart as an int, or -1 when it is not a dense FFN matrix.
int tensor_ffn_part(std::string_view name);

}  // namespace strata
