// qwen3 and qwen3moe: the llama block with per-head RMSNorm of q and k before rope (QK-norm),
// NeoX rope, no biases; qwen3moe replaces the FFN by softmax-routed experts.
#include "gguf/gguf.h"
#include "model/architectures.h"
#include "model/blocks.h"

namespace strata {

void configure_qwen3(const gguf::File&, ModelConfig& c) {
  c.rope_kind = ops::RopeKind::neox;
  c.activation = Activation::silu;
  c.has_qk_norm = true;
  c.expert_weights_norm = true;
}

void forward_qwen3(ForwardPass& p) {
  const ModelConfig& c = p.config;
  blocks::pre_norm_decoder(p, AttentionSpec{c.rope_base, c.rope_scale, /*sliding=*/false, /*scale_q_first=*/false});
}

}  // namespace strata
