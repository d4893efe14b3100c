#pragma once
// Hyperparameters of a model, filled by one function from GGUF metadata.
#include <cstdint>
#include <string>
#include <vector>

#include "ops/ops.h"

namespace strata::gguf { class File; }

namespace strata {

enum class Arch { llama, qwen2, qwen3, qwen3moe, qwen2moe, gemma3, gptoss, qwen35, qwen35moe };
// swiglu_oai: gpt-oss's clamped SwiGLU (its own file, model/arch_gptoss.cpp).
enum class Activation { silu, gelu_tanh, swiglu_oai };
// How router logits become expert weights: softmax over all experts, then the top k (renormalized
// if asked); or softmax_weight (gpt-oss): the top k of the logits, then a softmax over those k.
enum class ExpertGating { softmax, softmax_weight };

struct ModelConfig {
  Arch arch = Arch::llama;
  std::string arch_name;      // general.architecture
  int n_layer = 0;
  // Multi-token-prediction (nextn) layers the file holds after the trunk (qwen35's released files:
  // blk.<n_layer>.*); they draft tokens for speculative decoding, which Strata does not run, so
  // nothing reads them and nothing plans them.
  int n_layer_nextn = 0;
  int n_embd = 0;
  int n_head = 0;
  int n_head_kv = 0;
  // attention.head_count / head_count_kv as the file gives them, per layer (a scalar key on every
  // layer): 0 on a layer without attention (a hybrid's recurrent layers). The attention layers
  // share one count, n_head / n_head_kv.
  std::vector<int> layer_n_head, layer_n_head_kv;
  int head_dim_k = 0;         // key_length (n_embd / n_head unless given)
  int head_dim_v = 0;         // value_length
  int n_ff = 0;               // dense FFN width
  int n_vocab = 0;
  int n_ctx_train = 0;
  float rms_eps = 1e-5f;

  int n_rot = 0;              // rotary dimensions per head
  ops::RopeKind rope_kind = ops::RopeKind::normal;
  float rope_base = 10000.0f;
  float rope_scale = 1.0f;    // frequency scale (1 / the scaling factor, linear or YaRN)
  float rope_ext_factor = 0.0f;   // YaRN: 1 (mix of interpolated and extrapolated angles), else 0
  float rope_attn_factor = 1.0f;  // rope.scaling.attn_factor: magnitude of the rotation
  int rope_n_ctx_orig = 0;        // YaRN: rope.scaling.original_context_length (n_ctx_train if absent)
  float rope_base_swa = 10000.0f;  // gemma3 local layers
  float rope_scale_swa = 1.0f;

  // Mixture of experts (n_expert == 0: dense).
  int n_expert = 0;
  int n_expert_used = 0;
  int n_ff_expert = 0;
  bool expert_weights_norm = true;  // renormalize the top-k routing weights to sum to 1
  int n_layer_dense_lead = 0;       // the first layers have a dense FFN instead of experts
  bool has_shared_expert = false;   // every MoE layer also runs a gated dense FFN (qwen2moe)
  int n_ff_shexp = 0;               // its width
  ExpertGating gating = ExpertGating::softmax;
  bool has_expert_biases = false;   // router and every expert matrix have a bias (gpt-oss)

  // Sliding-window attention: layer_swa[l] says layer l sees only the last `sliding_window` tokens.
  int sliding_window = 0;
  std::vector<bool> layer_swa;

  float attn_scale = 0.0f;    // scale of q·k (1/sqrt(head_dim_k) unless the architecture says otherwise)
  float embd_scale = 1.0f;    // token embeddings are multiplied by this (gemma: sqrt(n_embd))
  Activation activation = Activation::silu;
  bool has_qk_norm = false;   // per-head RMSNorm of q and k (qwen3, gemma3)
  bool has_post_norms = false;  // norms after attention and FFN outputs (gemma3)
  bool has_qkv_bias = false;  // qwen2
  bool has_attn_out_bias = false;  // bias on the attention output projection (gpt-oss)
  bool has_attn_sinks = false;     // a learned logit per head in the attention softmax (gpt-oss)
  // The FFN's input norm is stored as post_attention_norm, not ffn_norm (gpt-oss).
  bool ffn_norm_post_attn = false;
  // The q projection gives each head its query and then an output gate of the same size; the
  // attention's output is multiplied by sigmoid(gate) before the output projection (qwen35).
  bool has_attn_output_gate = false;

  // Gated delta-rule (linear attention) layers, llama.cpp's ssm.* keys (qwen35, qwen35moe): a
  // recurrent state instead of a KV cache. layer_recurrent[l] says layer l is one; the others are
  // full-attention layers. q and k have ssm_n_group heads, v ssm_dt_rank heads, all of ssm_d_state.
  std::vector<bool> layer_recurrent;
  int ssm_d_conv = 0;     // causal conv1d kernel width over the q, k, v channels
  int ssm_d_inner = 0;    // value width: ssm_dt_rank * ssm_d_state
  int ssm_d_state = 0;    // head size of q, k and v
  int ssm_n_group = 0;    // q and k heads
  int ssm_dt_rank = 0;    // v heads (each reads q/k head h % ssm_n_group, as ggml broadcasts)

  bool is_moe_layer(int layer) const { return n_expert > 0 && layer >= n_layer_dense_lead; }
  // The widest FFN any layer runs (dense, expert or shared expert): the gate/up scratch width.
  int max_ff() const;
  bool is_recurrent_layer(int layer) const {
    return size_t(layer) < layer_recurrent.size() && layer_recurrent[size_t(layer)];
  }
  bool has_recurrent_layers() const;
  int64_t ssm_key_dim() const { return int64_t(ssm_n_group) * ssm_d_state; }
  // Channels of the conv1d: q, k and v of one token.
  int64_t ssm_conv_dim() const { return 2 * ssm_key_dim() + ssm_d_inner; }
};

const char* arch_name(Arch arch);
// Reads the config of a supported architecture; throws strata::Error naming an unknown
// architecture or a missing/invalid key.
ModelConfig load_config(const gguf::File& file);

}  // namespace strata
