// gpt-oss (llama.cpp's LLM_ARCH_OPENAI_MOE, general.architecture "gpt-oss"): pre-norm layers whose
// attention alternates sliding-window (even layers) and full (odd layers), with biases on q, k, v
// and the output and a learned sink logit per head; the FFN input norm is stored as
// post_attention_norm; every layer is a mixture of experts with a biased router (top k of the
// logits, then a softmax over those k), biases on every expert matrix and the clamped SwiGLU
// below. The experts are usually MXFP4.
//   x += attn(norm(x)) + bo;  x += moe(norm'(x));  logits = output(norm(x))
#include <algorithm>
#include <cmath>

#include "gguf/gguf.h"
#include "model/architectures.h"
#include "model/blocks.h"
#include "util/error.h"

namespace strata {

void configure_gptoss(const gguf::File& f, ModelConfig& c) {
  const std::string& a = c.arch_name;
  c.sliding_window = int(f.get_int(a + ".attention.sliding_window"));
  if (c.sliding_window <= 0 || c.sliding_window > (1 << 24))
    throw Error(f.path() + ": " + a + ".attention.sliding_window " + std::to_string(c.sliding_window) +
                " is out of range");
  // As llama.cpp's load_swa_pattern(2): a per-layer array if the file has one, else a period n in
  // which the first n - 1 layers are local (default 2: even layers local, odd layers global).
  const std::string pattern_key = a + ".attention.sliding_window_pattern";
  const gguf::Value* pattern = f.find(pattern_key);
  if (pattern && pattern->type == gguf::ValueType::ARRAY) {
    const auto& items = pattern->as_array().items;
    if (items.size() != size_t(c.n_layer))
      throw Error(f.path() + ": " + pattern_key + " has " + std::to_string(items.size()) + " entries, expected " +
                  std::to_string(c.n_layer));
    for (int l = 0; l < c.n_layer; ++l) c.layer_swa[size_t(l)] = items[size_t(l)].as_bool();
  } else {
    const int64_t n = f.get_int(pattern_key, 2);
    if (n < 0 || n > c.n_layer + 1)
      throw Error(f.path() + ": " + pattern_key + " " + std::to_string(n) + " is out of range");
    for (int l = 0; l < c.n_layer; ++l) c.layer_swa[size_t(l)] = n == 0 || (l % n) < n - 1;
  }
  c.rope_base_swa = float(f.get_float(a + ".rope.freq_base_swa", c.rope_base));
  c.rope_scale_swa = c.rope_scale;
  if (c.n_expert <= 0) throw Error(f.path() + ": gpt-oss needs " + a + ".expert_count");
}

namespace {

// ggml_swiglu_oai with gpt-oss's constants (llama.cpp's build_moe_ffn, LLM_FFN_SWIGLU_OAI_MOE):
// gate clamped above at kLimit, up clamped to [-kLimit, kLimit], gate * sigmoid(kAlpha * gate) * (up + 1).
constexpr float kAlpha = 1.702f;
constexpr float kLimit = 7.0f;

void swiglu_oai(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float x = std::min(gate[i], kLimit);
    const float y = std::clamp(up[i], -kLimit, kLimit);
    gate[i] = x / (1.0f + std::exp(kAlpha * -x)) * (y + 1.0f);
  }
}

// rows[r] += bias for r < n_rows (bias of `width` floats).
void add_bias_rows(float* rows, const float* bias, int64_t width, int n_rows) {
  for (int r = 0; r < n_rows; ++r) ops::add(rows + int64_t(r) * width, bias, width);
}

// The router: logits + bias, the top k logits (best first), then a softmax over those k
// (LLAMA_EXPERT_GATING_FUNC_TYPE_SOFTMAX_WEIGHT, no renormalization).
void route(ForwardPass& p, int layer) {
  const ModelConfig& c = p.config;
  const LayerWeights& L = p.weights.layers[size_t(layer)];
  ForwardBuffers& b = p.buf;
  const int k = c.n_expert_used;
  ops::matmul(L.router, b.h.data(), c.n_embd, p.n_tokens, b.router_logits.data(), c.n_expert, p.pool, b.mm);
  add_bias_rows(b.router_logits.data(), L.router_bias.data(), c.n_expert, p.n_tokens);
  for (int t = 0; t < p.n_tokens; ++t) {
    const float* logits = b.router_logits.data() + size_t(t) * c.n_expert;
    int32_t* chosen = b.chosen.data() + size_t(t) * k;
    float* weight = b.chosen_weight.data() + size_t(t) * k;
    blocks::top_k(logits, c.n_expert, k, chosen);
    for (int j = 0; j < k; ++j) weight[j] = logits[chosen[j]];
    ops::softmax(weight, k);
  }
}

// Expert e over the tokens routed to it, biases after each matrix; its weighted outputs go to the
// (token, rank) slots of expert_results.
void run_expert(ForwardPass& p, int layer, int e, const WeightView& gate, const WeightView& up,
                const WeightView& down) {
  const ModelConfig& c = p.config;
  const LayerWeights& L = p.weights.layers[size_t(layer)];
  ForwardBuffers& b = p.buf;
  const int k = c.n_expert_used;
  const int64_t ff = c.n_ff_expert;
  int n_sel = 0;
  for (int t = 0; t < p.n_tokens; ++t)
    for (int j = 0; j < k; ++j)
      if (b.chosen[size_t(t) * k + j] == e) {
        b.expert_tokens[size_t(n_sel)] = t * k + j;
        std::copy_n(b.h.data() + size_t(t) * c.n_embd, c.n_embd, b.expert_in.data() + size_t(n_sel) * c.n_embd);
        ++n_sel;
      }
  if (n_sel == 0) return;
  ops::matmul(up, b.expert_in.data(), c.n_embd, n_sel, b.up.data(), ff, p.pool, b.mm);
  add_bias_rows(b.up.data(), L.up_exps_bias.data() + e * ff, ff, n_sel);
  ops::matmul(gate, b.expert_in.data(), c.n_embd, n_sel, b.gate.data(), ff, p.pool, b.mm);
  add_bias_rows(b.gate.data(), L.gate_exps_bias.data() + e * ff, ff, n_sel);
  swiglu_oai(b.gate.data(), b.up.data(), int64_t(n_sel) * ff);
  ops::matmul(down, b.gate.data(), ff, n_sel, b.expert_out.data(), c.n_embd, p.pool, b.mm);
  add_bias_rows(b.expert_out.data(), L.down_exps_bias.data() + int64_t(e) * c.n_embd, c.n_embd, n_sel);
  for (int s = 0; s < n_sel; ++s) {
    const int slot = b.expert_tokens[size_t(s)];
    const float w = b.chosen_weight[size_t(slot)];
    float* dst = b.expert_results.data() + size_t(slot) * c.n_embd;
    const float* src = b.expert_out.data() + size_t(s) * c.n_embd;
    for (int i = 0; i < c.n_embd; ++i) dst[i] = src[i] * w;
  }
}

// The MoE FFN of `layer`, reading p.buf.h, writing p.buf.o. The experts come from p.source as
// in blocks::moe_ffn (resident or streamed alike); the hook sees the routing before they run.
void moe(ForwardPass& p, int layer) {
  if (p.backend->kind() != backend::DeviceKind::cpu)
    throw Error("layer " + std::to_string(layer) + ": mixture-of-experts layers run on the CPU backend only so far");
  const ModelConfig& c = p.config;
  ForwardBuffers& b = p.buf;
  const int n = p.n_tokens, k = c.n_expert_used;
  route(p, layer);
  if (p.hook) p.hook->after_router(p, layer);
  if (p.routing_observer) p.routing_observer->routed(layer, p.pos0, b.chosen.data(), n);
  const int n_used = blocks::distinct_experts(b.chosen.data(), n * k, c.n_expert, b.experts_used.data());
  p.source.begin_experts(layer, b.experts_used.data(), n_used, b.chosen.data(), n);
  if (p.hook) p.hook->after_routing(p, layer);
  struct Done {  // hands the expert back even if its compute throws
    WeightSource& source;
    int expert;
    ~Done() { source.expert_done(expert); }
  };
  WeightView gate, up, down;
  for (int e; (e = p.source.next_expert(gate, up, down)) >= 0;) {
    Done done{p.source, e};
    run_expert(p, layer, e, gate, up, down);
  }
  // The weighted outputs summed in routing order, as llama.cpp does.
  for (int t = 0; t < n; ++t) {
    float* out = b.o.data() + size_t(t) * c.n_embd;
    const float* r = b.expert_results.data() + size_t(t) * k * c.n_embd;
    std::copy_n(r, c.n_embd, out);
    for (int j = 1; j < k; ++j) ops::add(out, r + size_t(j) * c.n_embd, c.n_embd);
  }
}

}  // namespace

void forward_gptoss(ForwardPass& p) {
  const ModelConfig& c = p.config;
  const Activations& a = p.act;
  const AttentionSpec global{c.rope_base, c.rope_scale, /*sliding=*/false, /*scale_q_first=*/false};
  const AttentionSpec local{c.rope_base_swa, c.rope_scale_swa, /*sliding=*/true, /*scale_q_first=*/false};
  blocks::embed(p);
  for (int l = 0; l < c.n_layer; ++l) {
    const LayerWeights& L = p.weights.layers[size_t(l)];
    blocks::norm_rows(p, a.x, a.h, L.attn_norm);
    blocks::attention(p, l, c.layer_swa[size_t(l)] ? local : global);  // biases and sinks from L
    blocks::add_rows(p, a.x, a.o);
    blocks::norm_rows(p, a.x, a.h, L.post_attn_norm);
    moe(p, l);  // host buffers: MoE layers run on the CPU backend only (Session refuses them on a GPU)
    blocks::add_rows(p, a.x, a.o);
    blocks::after_ffn(p, l);
  }
  blocks::output_head(p);
}

}  // namespace strata
