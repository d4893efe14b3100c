// The pre-norm decoder family: llama (Llama 2/3, Mistral, SmolLM2, Mixtral), qwen2 (biases on q,
// k, v), qwen3 (QK-norm) and their mixture-of-experts forms (qwen3moe; qwen2moe with a shared
// expert). Their differences are traits in the catalogue (model/catalogue.cpp), read by the
// shared blocks: x += attn(norm(x)); x += ffn_or_moe(norm(x)); output head.
#include "model/architectures.h"
#include "model/blocks.h"

namespace strata {

void forward_pre_norm(ForwardPass& p) {
  const ModelConfig& c = p.config;
  const Activations& a = p.act;
  const AttentionSpec spec{c.rope_base, c.rope_scale, /*sliding=*/false, /*scale_q_first=*/false};
  blocks::embed(p);
  for (int l = 0; l < c.n_layer; ++l) {
    const LayerWeights& L = p.weights.layers[size_t(l)];
    blocks::norm_rows(p, a.x, a.h, L.attn_norm);
    blocks::attention(p, l, spec);
    blocks::add_rows(p, a.x, a.o);
    blocks::norm_rows(p, a.x, a.h, L.ffn_norm);
    if (c.is_moe_layer(l)) blocks::moe_ffn(p, l, c.activation);
    else blocks::ffn(p, l, c.activation);
    blocks::add_rows(p, a.x, a.o);
    blocks::after_ffn(p, l);
  }
  blocks::output_head(p);
}

}  // namespace strata
