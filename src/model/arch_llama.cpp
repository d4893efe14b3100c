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
  ForwardBuffers& b = p.buf;
  const AttentionSpec spec{c.rope_base, c.rope_scale, /*sliding=*/false, /*scale_q_first=*/false};
  blocks::embed(p);
  for (int l = 0; l < c.n_layer; ++l) {
    const LayerWeights& L = p.weights.layers[size_t(l)];
    blocks::norm_rows(p, b.x.data(), b.h.data(), L.attn_norm);
    blocks::attention(p, l, spec);
    blocks::add_rows(p, b.x.data(), b.o.data());
    blocks::norm_rows(p, b.x.data(), b.h.data(), L.ffn_norm);
    if (c.n_expert > 0) blocks::moe_ffn(p, L, c.activation);
    else blocks::ffn(p, l, c.activation);
    blocks::add_rows(p, b.x.data(), b.o.data());
  }
  blocks::output_head(p);
}

}  // namespace strata
