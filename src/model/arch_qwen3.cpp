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
