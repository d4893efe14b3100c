// gemma3: embeddings scaled by sqrt(n_embd); five sliding-window layers (local rope base 10000)
// for each global layer (the model's rope base); QK-norm; norms after the attention and FFN
// outputs as well as before; GELU(tanh)-gated FFN; q scaled before q·k; tied output head.
#include <cmath>

#include "gguf/gguf.h"
#include "model/architectures.h"
#include "model/blocks.h"
#include "util/error.h"

namespace strata {

void configure_gemma3(const gguf::File& f, ModelConfig& c) {
  c.embd_scale = std::sqrt(float(c.n_embd));
  c.sliding_window = int(f.get_int("gemma3.attention.sliding_window", 4096));
  if (c.sliding_window <= 0) throw Error(f.path() + ": gemma3.attention.sliding_window must be positive");
  // Every sixth layer is global; the others see the last sliding_window tokens.
  constexpr int kPattern = 6;
  for (int l = 0; l < c.n_layer; ++l) c.layer_swa[size_t(l)] = (l % kPattern) < kPattern - 1;
  // The local layers keep the unscaled base 10000; linear scaling applies to global layers only.
  c.rope_base_swa = 10000.0f;
  c.rope_scale_swa = 1.0f;
  // 27B scales by n_embd / n_head (its query_pre_attn_scalar), the smaller models by head size.
  const bool is_27b = c.n_layer == 62;
  c.attn_scale = is_27b ? 1.0f / std::sqrt(float(c.n_embd / c.n_head)) : 1.0f / std::sqrt(float(c.head_dim_k));
}

void forward_gemma3(ForwardPass& p) {
  const ModelConfig& c = p.config;
  const Activations& a = p.act;
  const AttentionSpec global{c.rope_base, c.rope_scale, /*sliding=*/false, /*scale_q_first=*/true};
  const AttentionSpec local{c.rope_base_swa, c.rope_scale_swa, /*sliding=*/true, /*scale_q_first=*/true};
  blocks::embed(p);
  for (int l = 0; l < c.n_layer; ++l) {
    const LayerWeights& L = p.weights.layers[size_t(l)];
    blocks::norm_rows(p, a.x, a.h, L.attn_norm);
    blocks::attention(p, l, c.layer_swa[size_t(l)] ? local : global);
    blocks::norm_rows(p, a.o, a.o, L.post_attn_norm);
    blocks::add_rows(p, a.x, a.o);
    blocks::norm_rows(p, a.x, a.h, L.ffn_norm);
    blocks::ffn(p, l, c.activation);
    blocks::norm_rows(p, a.o, a.o, L.post_ffn_norm);
    blocks::add_rows(p, a.x, a.o);
    blocks::after_ffn(p, l);
  }
  blocks::output_head(p);
}

}  // namespace strata
