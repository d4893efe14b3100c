#include "model/blocks.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "ops/vec.h"
#include "tensor/fp16.h"
#include "tensor/kernels.h"
#include "util/error.h"

namespace strata {

namespace {
// The largest attention shape of a model's layers, which the scratch is sized for.
ops::AttentionShape attention_scratch_shape(const ModelConfig& c) {
  return ops::AttentionShape{c.n_head, c.n_head_kv, c.head_dim_k, c.head_dim_v};
}
}  // namespace

ForwardBuffers::Sizes ForwardBuffers::sizes(const ModelConfig& c, int batch, int n_ctx, int n_threads) {
  Sizes s;
  const size_t nb = size_t(batch);
  const size_t ff = size_t(c.max_ff());
  const size_t q_dim = size_t(c.n_head) * c.head_dim_k, o_dim = size_t(c.n_head) * c.head_dim_v;
  s.x = s.h = s.o = nb * c.n_embd;
  s.q = nb * q_dim;
  s.k = nb * c.n_head_kv * c.head_dim_k;
  s.v = nb * c.n_head_kv * c.head_dim_v;
  s.att = nb * o_dim;
  s.gate = s.up = nb * ff;
  s.attn_bytes = ops::AttentionScratch::bytes_for(attention_scratch_shape(c), batch, n_ctx, n_threads);
  if (c.n_expert > 0) {
    const size_t k_used = size_t(c.n_expert_used);
    s.router_logits = nb * c.n_expert;
    s.chosen = s.chosen_weight = s.expert_tokens = nb * k_used;
    s.experts_used = size_t(c.n_expert);
    s.expert_in = s.expert_out = nb * c.n_embd;
    s.expert_results = nb * k_used * c.n_embd;
    if (c.has_shared_expert) s.shexp_scale = nb;
  }
  s.logits = size_t(c.n_vocab);
  // Activations are converted to the weights' vec_dot type before a matmul: at most 2 bytes an
  // element (F16, BF16; the Q8 types take less, F32 dots read the floats in place), n_batch rows
  // of the widest input (n_embd, the attention output, or an FFN's hidden width).
  const size_t widest = std::max({size_t(c.n_embd), o_dim, ff});
  s.mm_bytes = nb * widest * 2;
  return s;
}

size_t ForwardBuffers::bytes_for(const ModelConfig& c, int batch, int n_ctx, int n_threads) {
  const Sizes s = sizes(c, batch, n_ctx, n_threads);
  const size_t floats = s.x + s.h + s.o + s.q + s.k + s.v + s.att + s.gate + s.up + s.router_logits +
                        s.chosen_weight + s.expert_in + s.expert_out + s.expert_results + s.shexp_scale + s.logits;
  const size_t ints = s.chosen + s.expert_tokens + s.experts_used;
  return floats * sizeof(float) + ints * sizeof(int32_t) + s.attn_bytes + s.mm_bytes;
}

void ForwardBuffers::init(const ModelConfig& c, int batch, int n_ctx, int n_threads) {
  const Sizes s = sizes(c, batch, n_ctx, n_threads);
  n_batch = batch;
  auto fit = [](auto& vec, size_t n) {  // exactly n elements, capacity included
    vec.assign(n, {});
    vec.shrink_to_fit();
  };
  fit(x, s.x);
  fit(h, s.h);
  fit(o, s.o);
  fit(q, s.q);
  fit(k, s.k);
  fit(v, s.v);
  fit(att, s.att);
  fit(gate, s.gate);
  fit(up, s.up);
  attn.init(attention_scratch_shape(c), batch, n_ctx, n_threads);
  fit(router_logits, s.router_logits);
  fit(chosen, s.chosen);
  fit(chosen_weight, s.chosen_weight);
  fit(expert_tokens, s.expert_tokens);
  fit(experts_used, s.experts_used);
  fit(expert_in, s.expert_in);
  fit(expert_out, s.expert_out);
  fit(expert_results, s.expert_results);
  fit(shexp_scale, s.shexp_scale);
  fit(logits, s.logits);
  fit(mm.quantized, s.mm_bytes);  // sized once: prepare_input never grows it
}

size_t ForwardBuffers::bytes() const {
  size_t n = 0;
  for (const auto* vec : {&x, &h, &o, &q, &k, &v, &att, &gate, &up, &router_logits, &chosen_weight, &expert_in,
                          &expert_out, &expert_results, &shexp_scale, &logits})
    n += vec->capacity() * sizeof(float);
  for (const auto* vec : {&chosen, &expert_tokens, &experts_used}) n += vec->capacity() * sizeof(int32_t);
  return n + attn.bytes() + mm.quantized.capacity();
}

namespace blocks {

void embed(ForwardPass& p) {
  const ModelConfig& c = p.config;
  for (int t = 0; t < p.n_tokens; ++t) {
    const int32_t tok = p.tokens[t];
    if (tok < 0 || tok >= c.n_vocab)
      throw Error("token id " + std::to_string(tok) + " is outside the vocabulary of " + std::to_string(c.n_vocab));
    float* row = p.buf.x.data() + size_t(t) * c.n_embd;
    ops::get_row(p.weights.token_embd, tok, row);
    if (c.embd_scale != 1.0f) ops::scale(row, c.embd_scale, c.n_embd);
  }
}

void norm_rows(ForwardPass& p, const float* in, float* out, const std::vector<float>& weight) {
  const int64_t n = p.config.n_embd;
  for (int t = 0; t < p.n_tokens; ++t) ops::rms_norm(in + t * n, weight.data(), out + t * n, n, p.config.rms_eps);
}

void add_rows(ForwardPass& p, float* x, const float* y) { ops::add(x, y, int64_t(p.n_tokens) * p.config.n_embd); }

namespace {

void add_bias(float* rows, const std::vector<float>& bias, int n_tokens) {
  if (bias.empty()) return;
  const int64_t n = int64_t(bias.size());
  for (int t = 0; t < n_tokens; ++t) ops::add(rows + t * n, bias.data(), n);
}

void head_norm(float* rows, int n_tokens, int n_heads, int head_dim, const std::vector<float>& weight, float eps) {
  if (weight.empty()) return;
  for (int64_t i = 0; i < int64_t(n_tokens) * n_heads; ++i)
    ops::rms_norm(rows + i * head_dim, weight.data(), rows + i * head_dim, head_dim, eps);
}

}  // namespace

void attention(ForwardPass& p, int layer, const AttentionSpec& spec) {
  const ModelConfig& c = p.config;
  const LayerWeights& L = p.weights.layers[size_t(layer)];
  ForwardBuffers& b = p.buf;
  const int n = p.n_tokens;
  const int64_t q_dim = int64_t(c.n_head) * c.head_dim_k;
  const int64_t k_dim = int64_t(c.n_head_kv) * c.head_dim_k;
  const int64_t v_dim = int64_t(c.n_head_kv) * c.head_dim_v;
  const int64_t o_dim = int64_t(c.n_head) * c.head_dim_v;

  ops::matmul(L.wq, b.h.data(), c.n_embd, n, b.q.data(), q_dim, p.pool, b.mm);
  ops::matmul(L.wk, b.h.data(), c.n_embd, n, b.k.data(), k_dim, p.pool, b.mm);
  ops::matmul(L.wv, b.h.data(), c.n_embd, n, b.v.data(), v_dim, p.pool, b.mm);
  add_bias(b.q.data(), L.bq, n);
  add_bias(b.k.data(), L.bk, n);
  add_bias(b.v.data(), L.bv, n);
  head_norm(b.q.data(), n, c.n_head, c.head_dim_k, L.q_norm, c.rms_eps);
  head_norm(b.k.data(), n, c.n_head_kv, c.head_dim_k, L.k_norm, c.rms_eps);

  ops::RopeParams rope{c.n_rot, c.rope_kind, spec.rope_base, spec.rope_scale};
  rope.ext_factor = c.rope_ext_factor;
  rope.attn_factor = c.rope_attn_factor;
  rope.n_ctx_orig = c.rope_n_ctx_orig;
  rope.freq_factors = p.weights.rope_freqs.empty() ? nullptr : p.weights.rope_freqs.data();
  for (int t = 0; t < n; ++t) {
    ops::rope(b.q.data() + t * q_dim, c.n_head, c.head_dim_k, p.pos0 + t, rope);
    ops::rope(b.k.data() + t * k_dim, c.n_head_kv, c.head_dim_k, p.pos0 + t, rope);
    if (spec.scale_q_first) ops::scale(b.q.data() + t * q_dim, c.attn_scale, q_dim);
  }
  const ops::KvLayerView k_cache = p.kv.k_view(layer), v_cache = p.kv.v_view(layer);
  const int window = spec.sliding ? c.sliding_window : 0;
  if (k_cache.n_slots < p.pos0 + n && (window == 0 || k_cache.n_slots < window + n - 1))
    throw Error("attention: layer " + std::to_string(layer) + " caches " + std::to_string(k_cache.n_slots) +
                " positions, too few for a batch of " + std::to_string(n) + " at position " + std::to_string(p.pos0));
  for (int t = 0; t < n; ++t) {
    ops::kv_store(k_cache, p.pos0 + t, b.k.data() + t * k_dim, c.n_head_kv, c.head_dim_k);
    ops::kv_store(v_cache, p.pos0 + t, b.v.data() + t * v_dim, c.n_head_kv, c.head_dim_v);
  }
  p.kv.written(layer, p.pos0, n);
  const ops::AttentionShape shape{c.n_head, c.n_head_kv, c.head_dim_k, c.head_dim_v,
                                  spec.scale_q_first ? 1.0f : c.attn_scale, window,
                                  L.attn_sinks.empty() ? nullptr : L.attn_sinks.data()};
  ops::attention(shape, b.q.data(), n, p.pos0, k_cache, v_cache, b.att.data(), p.pool, b.attn);
  ops::matmul(L.wo, b.att.data(), o_dim, n, b.o.data(), c.n_embd, p.pool, b.mm);
  add_bias(b.o.data(), L.bo, n);
}

namespace {

void activate(float* gate, const float* up, int64_t n, Activation act) {
  if (act == Activation::silu) ops::silu_mul(gate, up, n);
  else ops::gelu_tanh_mul(gate, up, n);
}

// y = W x for one FFN matrix, piece by piece as the source hands it out (one piece when it is
// resident); the activations are converted once for all pieces. The bound view gives the type
// and shape only.
void ffn_matmul(ForwardPass& p, int layer, FfnPart part, const float* x, float* y) {
  const WeightView& w = ffn_weight(p.weights.layers[size_t(layer)], part);
  const ops::PreparedInput in = ops::prepare_input(w.type, w.n_cols, x, w.n_cols, p.n_tokens, p.pool, p.buf.mm);
  p.source.begin_matrix(layer, part);
  WeightView piece;
  int64_t row0 = 0;
  while (p.source.next_piece(piece, row0)) ops::matmul_prepared(piece, in, y + row0, w.n_rows, p.pool);
}

}  // namespace

void top_k(const float* scores, int n, int k, int32_t* out) {
  for (int j = 0; j < k; ++j) {
    int best = -1;
    for (int e = 0; e < n; ++e) {
      bool taken = false;
      for (int i = 0; i < j; ++i) taken |= out[i] == e;
      if (!taken && (best < 0 || scores[e] > scores[best])) best = e;
    }
    out[j] = best;
  }
}

void ffn(ForwardPass& p, int layer, Activation act) {
  const ModelConfig& c = p.config;
  ForwardBuffers& b = p.buf;
  ffn_matmul(p, layer, FfnPart::gate, b.h.data(), b.gate.data());
  ffn_matmul(p, layer, FfnPart::up, b.h.data(), b.up.data());
  activate(b.gate.data(), b.up.data(), int64_t(p.n_tokens) * c.n_ff, act);
  ffn_matmul(p, layer, FfnPart::down, b.gate.data(), b.o.data());
}

namespace {

// Softmax over the experts, keep the top k, renormalize if asked.
void route(const ModelConfig& c, float* probs_rows, int n, int32_t* chosen_rows, float* weight_rows) {
  const int k_used = c.n_expert_used;
  for (int t = 0; t < n; ++t) {
    float* probs = probs_rows + size_t(t) * c.n_expert;
    ops::softmax(probs, c.n_expert);
    int32_t* chosen = chosen_rows + size_t(t) * k_used;
    float* weight = weight_rows + size_t(t) * k_used;
    top_k(probs, c.n_expert, k_used, chosen);
    for (int j = 0; j < k_used; ++j) weight[j] = probs[chosen[j]];
    if (c.expert_weights_norm) {
      float sum = 0.0f;
      for (int j = 0; j < k_used; ++j) sum += weight[j];
      for (int j = 0; j < k_used; ++j) weight[j] /= sum;
    }
  }
}

// The distinct experts of a routing [n x k], ascending, into out; returns how many.
int distinct_experts(const int32_t* chosen, int n_entries, int n_expert, int32_t* out) {
  int n = 0;
  for (int e = 0; e < n_expert; ++e)
    for (int i = 0; i < n_entries; ++i)
      if (chosen[i] == e) {
        out[n++] = e;
        break;
      }
  return n;
}

// Runs expert e once over the tokens routed to it (a batch reads each expert once) and writes
// its weighted outputs into the (token, rank) slots of expert_results.
void run_expert(ForwardPass& p, int e, const WeightView& gate, const WeightView& up, const WeightView& down,
                Activation act) {
  const ModelConfig& c = p.config;
  ForwardBuffers& b = p.buf;
  const int k_used = c.n_expert_used;
  const int64_t ff = c.n_ff_expert;
  int n_sel = 0;
  for (int t = 0; t < p.n_tokens; ++t)
    for (int j = 0; j < k_used; ++j)
      if (b.chosen[size_t(t) * k_used + j] == e) {
        b.expert_tokens[size_t(n_sel)] = t * k_used + j;  // slot of (token, rank)
        std::copy_n(b.h.data() + size_t(t) * c.n_embd, c.n_embd, b.expert_in.data() + size_t(n_sel) * c.n_embd);
        ++n_sel;
      }
  if (n_sel == 0) return;
  ops::matmul(gate, b.expert_in.data(), c.n_embd, n_sel, b.gate.data(), ff, p.pool, b.mm);
  ops::matmul(up, b.expert_in.data(), c.n_embd, n_sel, b.up.data(), ff, p.pool, b.mm);
  activate(b.gate.data(), b.up.data(), int64_t(n_sel) * ff, act);
  ops::matmul(down, b.gate.data(), ff, n_sel, b.expert_out.data(), c.n_embd, p.pool, b.mm);
  for (int s = 0; s < n_sel; ++s) {
    const int slot = b.expert_tokens[size_t(s)];
    const float w = b.chosen_weight[size_t(slot)];
    float* dst = b.expert_results.data() + size_t(slot) * c.n_embd;
    const float* src = b.expert_out.data() + size_t(s) * c.n_embd;
    for (int i = 0; i < c.n_embd; ++i) dst[i] = src[i] * w;
  }
}

// The shared expert (qwen2moe): a gated FFN every token runs, scaled by sigmoid(gate . x) and
// added to the experts' sum, as llama.cpp does.
void shared_expert(ForwardPass& p, int layer, Activation act) {
  const ModelConfig& c = p.config;
  const LayerWeights& L = p.weights.layers[size_t(layer)];
  ForwardBuffers& b = p.buf;
  const int n = p.n_tokens;
  ffn_matmul(p, layer, FfnPart::shexp_gate, b.h.data(), b.gate.data());
  ffn_matmul(p, layer, FfnPart::shexp_up, b.h.data(), b.up.data());
  activate(b.gate.data(), b.up.data(), int64_t(n) * c.n_ff_shexp, act);
  ffn_matmul(p, layer, FfnPart::shexp_down, b.gate.data(), b.expert_out.data());
  ops::matmul(L.shexp_gate_inp, b.h.data(), c.n_embd, n, b.shexp_scale.data(), 1, p.pool, b.mm);
  for (int t = 0; t < n; ++t) {
    const float scale = 1.0f / (1.0f + std::exp(-b.shexp_scale[size_t(t)]));
    float* out = b.o.data() + size_t(t) * c.n_embd;
    const float* shared = b.expert_out.data() + size_t(t) * c.n_embd;
    for (int i = 0; i < c.n_embd; ++i) out[i] += shared[i] * scale;
  }
}

}  // namespace

void moe_ffn(ForwardPass& p, int layer, Activation act) {
  const ModelConfig& c = p.config;
  const LayerWeights& L = p.weights.layers[size_t(layer)];
  ForwardBuffers& b = p.buf;
  const int n = p.n_tokens;
  const int k_used = c.n_expert_used;

  ops::matmul(L.router, b.h.data(), c.n_embd, n, b.router_logits.data(), c.n_expert, p.pool, b.mm);
  route(c, b.router_logits.data(), n, b.chosen.data(), b.chosen_weight.data());
  if (p.routing_observer) p.routing_observer->routed(layer, p.pos0, b.chosen.data(), n);

  // Every expert routed to is asked for at once; those in memory compute while the rest arrive.
  // The order experts run in does not matter: each writes its own (token, rank) slots.
  const int n_used = distinct_experts(b.chosen.data(), n * k_used, c.n_expert, b.experts_used.data());
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
    run_expert(p, e, gate, up, down, act);
  }
  // Sum the weighted expert outputs in routing order, as llama.cpp does.
  for (int t = 0; t < n; ++t) {
    float* out = b.o.data() + size_t(t) * c.n_embd;
    const float* r = b.expert_results.data() + size_t(t) * k_used * c.n_embd;
    std::copy_n(r, c.n_embd, out);
    for (int j = 1; j < k_used; ++j) ops::add(out, r + size_t(j) * c.n_embd, c.n_embd);
  }
  if (c.has_shared_expert) shared_expert(p, layer, act);
}

void after_ffn(ForwardPass& p, int layer) {
  if (p.hook) p.hook->after_ffn(p, layer);
}

void output_head(ForwardPass& p) {
  const ModelConfig& c = p.config;
  ForwardBuffers& b = p.buf;
  if (p.hidden_only) {
    for (int t = 0; t < p.n_tokens; ++t)
      ops::rms_norm(b.x.data() + size_t(t) * c.n_embd, p.weights.output_norm.data(), b.h.data() + size_t(t) * c.n_embd,
                    c.n_embd, c.rms_eps);
    return;
  }
  const int first = p.all_logits ? 0 : p.n_tokens - 1;
  const int count = p.n_tokens - first;
  const size_t need = size_t(count) * size_t(c.n_vocab);
  if (b.logits.size() < need) b.logits.resize(need);  // all-logits evaluation only, never per token
  for (int t = first; t < p.n_tokens; ++t)
    ops::rms_norm(b.x.data() + size_t(t) * c.n_embd, p.weights.output_norm.data(), b.h.data() + size_t(t - first) * c.n_embd,
                  c.n_embd, c.rms_eps);
  ops::matmul(p.weights.output, b.h.data(), c.n_embd, count, b.logits.data(), c.n_vocab, p.pool, b.mm);
}

}  // namespace blocks
}  // namespace strata
