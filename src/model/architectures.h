#pragma once
// The registry of architectures (its table is in model/catalogue.cpp, beside the tensor table):
// each names its static traits, which select its tensors from the catalogue, an optional
// function for keys only it has, and its forward pass. Architectures whose forward differs live
// in their own file (arch_*.cpp), built from the shared blocks (model/blocks.h).
#include <string>

#include "model/config.h"

namespace strata::gguf { class File; }

namespace strata {

struct ForwardPass;  // model/blocks.h

// What an architecture is, before any key of a file is read.
struct ArchTraits {
  ops::RopeKind rope_kind = ops::RopeKind::normal;
  Activation activation = Activation::silu;
  bool qkv_bias = false;       // biases on q, k, v (qwen2)
  bool qk_norm = false;        // per-head RMSNorm of q and k (qwen3, gemma3)
  bool post_norms = false;     // norms after the attention and FFN outputs (gemma3)
  bool shared_expert = false;  // MoE layers add a gated shared expert (qwen2moe)
  bool expert_weights_norm = true;  // renormalize the top-k routing weights
  ExpertGating gating = ExpertGating::softmax;
  bool expert_biases = false;       // biases on the router and the experts (gpt-oss)
  bool attn_out_bias = false;       // bias on the attention output (gpt-oss)
  bool attn_sinks = false;          // per-head sink logits in the attention softmax (gpt-oss)
  bool ffn_norm_post_attn = false;  // the FFN input norm is named post_attention_norm (gpt-oss, qwen35)
  bool attn_output_gate = false;    // q projection carries a per-head output gate (qwen35)
};

struct ArchitectureEntry {
  const char* name;  // general.architecture
  Arch arch;
  ArchTraits traits;
  void (*configure)(const gguf::File& file, ModelConfig& config);  // keys only it has, or null
  void (*forward)(ForwardPass& pass);                               // all layers of one batch
};

const ArchitectureEntry* find_architecture(const std::string& name);
const ArchitectureEntry& architecture(Arch arch);
std::string supported_architectures();
// The entry for `name`, or strata::Error "<where>: unknown architecture 'name' (supported: ...)";
// one Strata knows but cannot compute yet (qwen3next) is refused by name with what is missing.
const ArchitectureEntry& require_architecture(const std::string& name, const std::string& where);
// Sets the config's flags from the traits (load_config and the forge share it).
void apply_traits(const ArchitectureEntry& entry, ModelConfig& config);

// Shared by load_config and the architecture files.
void read_common_config(const gguf::File& file, ModelConfig& config);

}  // namespace strata
