// qwen2: Qwen 2 / 2.5. The llama block with biases on q, k and v, and NeoX rope (split halves).
#include "gguf/gguf.h"
#include "model/architectures.h"
#include "model/blocks.h"

namespace strata {

void configure_qwen2(const gguf::File&, ModelConfig& c) {
  c.rope_kind = ops::RopeKind::neox;
  c.activation = Activation::silu;
  c.has_qkv_bias = true;
}

void forward_qwen2(ForwardPass& p) {
  const ModelConfig& c = p.config;
  blocks::pre_norm_decoder(p, AttentionSpec{c.rope_base, c.rope_scale, /*sliding=*/false, /*scale_q_first=*/false});
}

}  // namespace strata
