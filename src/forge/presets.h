#pragma once
// Hyperparameters of the models `strata forge` can write: a small `tiny` and `small` shape for
// every architecture, and the real shapes of a few published models.
#include <cstdint>
#include <string>
#include <vector>

namespace strata::forge {

enum class ForgeArch { llama, qwen2, qwen3, qwen3moe, qwen2moe, gemma3, gptoss, qwen35, qwen35moe };

const char* arch_name(ForgeArch arch);
// Throws strata::Error listing the known architectures.
ForgeArch parse_arch(const std::string& name);
std::string known_archs();

struct Hparams {
  std::string preset;  // "tiny", "llama-3-8b", ...
  ForgeArch arch = ForgeArch::llama;
  int n_layer = 0;
  int n_embd = 0;
  int n_head = 0;
  int n_head_kv = 0;
  int head_dim = 0;  // key and value length per head (may differ from n_embd / n_head)
  int n_ff = 0;      // dense FFN width (llama MoE: also the expert width)
  int n_ctx = 0;     // context_length
  float rope_base = 10000.0f;
  float rope_base_swa = 0.0f;  // gemma3 local (sliding-window) layers; 0: none
  float rms_eps = 1e-5f;
  float rope_yarn_factor = 0.0f;  // > 0: YaRN scaling (gpt-oss: 32 over an original 4096)
  int rope_yarn_orig_ctx = 0;
  int sliding_window = 0;      // gemma3, gpt-oss
  int n_expert = 0;            // 0: dense
  int n_expert_used = 0;
  int n_ff_exp = 0;            // qwen3moe/qwen2moe expert width (expert_feed_forward_length)
  int n_ff_shexp = 0;          // qwen2moe shared expert width (expert_shared_feed_forward_length)
  bool tied_output = false;    // no output.weight: the head reuses token_embd
  int n_vocab = 0;             // set from the tokenizer at forge time
  // Hybrid models (qwen35, qwen35moe): gated delta-rule layers with every full_attn_interval-th
  // layer full attention, whose rope covers n_rot dims in M-RoPE sections (time, height, width).
  int n_rot = 0;               // 0: head_dim
  int full_attn_interval = 0;
  int rope_sections[3] = {0, 0, 0};
  int ssm_d_conv = 0, ssm_d_state = 0, ssm_n_group = 0, ssm_dt_rank = 0;  // conv width, head size, q/k and v heads

  int q_dim() const { return n_head * head_dim; }
  int kv_dim() const { return n_head_kv * head_dim; }
  int expert_ff() const { return n_ff_exp > 0 ? n_ff_exp : n_ff; }
  bool is_moe() const { return n_expert > 0; }
  bool is_hybrid() const { return ssm_d_state > 0; }
  int rot_dims() const { return n_rot > 0 ? n_rot : head_dim; }
};

// A preset by name. Per-architecture presets (tiny, tiny-moe, small) need `arch`; a named model
// preset implies its architecture and throws when `arch` names another. Throws strata::Error
// listing the presets when the name is unknown.
Hparams find_preset(const std::string& preset, const std::string& arch);
// One line per preset, for `strata forge --list`.
std::string list_presets();

}  // namespace strata::forge
