// llama: Llama 2/3, Mistral, SmolLM2, and its mixture-of-experts form (Mixtral).
// Pre-norm blocks: x += attn(norm(x)); x += ffn(norm(x)); rope "normal" (adjacent pairs).
#include "gguf/gguf.h"
#include "model/architectures.h"
#include "model/blocks.h"

namespace strata {

void configure_llama(const gguf::File&, ModelConfig& c) {
  c.rope_kind = ops::RopeKind::normal;
  c.activation = Activation::silu;
  c.expert_weights_norm = true;
}

void forward_llama(ForwardPass& p) {
  const ModelConfig& c = p.config;
  blocks::pre_norm_decoder(p, AttentionSpec{c.rope_base, c.rope_scale, /*sliding=*/false, /*scale_q_first=*/false});
}

}  // namespace strata
