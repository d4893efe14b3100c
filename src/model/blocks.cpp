#include "model/blocks.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "model/device_model.h"
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
  // of the widest input (n_embd, the attention output, an FFN's hidden width, or a delta-rule
  // layer's output, ssm_d_inner wide: 0 without such layers).
  const size_t widest = std::max({size_t(c.n_embd), o_dim, ff, size_t(std::max(0, c.ssm_d_inner))});
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

Activations ForwardBuffers::activations() {
  Activations a;
  a.x = x.data(), a.h = h.data(), a.o = o.data();
  a.q = q.data(), a.k = k.data(), a.v = v.data(), a.att = att.data();
  a.gate = gate.data(), a.up = up.data();
  a.router_logits = router_logits.data(), a.chosen = chosen.data(), a.chosen_weight = chosen_weight.data();
  a.expert_results = expert_results.data(), a.shexp_out = expert_out.data(), a.shexp_gate = shexp_scale.data();
  return a;  // logits and tokens null: the host's own
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

namespace {

// A weight or a norm's floats where the pass computes: as bound, or the device's copy.
WeightView weight(const ForwardPass& p, const WeightView& w) { return p.device ? p.device->view(w) : w; }
const float* floats(const ForwardPass& p, const std::vector<float>& v) {
  if (v.empty()) return nullptr;
  return p.device ? p.device->floats(v) : v.data();
}

backend::GatedActivation gated(Activation act) {
  return act == Activation::silu ? backend::GatedActivation::silu : backend::GatedActivation::gelu_tanh;
}

}  // namespace

void embed(ForwardPass& p) {
  const ModelConfig& c = p.config;
  for (int t = 0; t < p.n_tokens; ++t) {
    const int32_t tok = p.tokens[t];
    if (tok < 0 || tok >= c.n_vocab)
      throw Error("token id " + std::to_string(tok) + " is outside the vocabulary of " + std::to_string(c.n_vocab));
  }
  backend::Backend& be = *p.backend;
  be.get_rows(weight(p, p.weights.token_embd), p.act.tokens ? p.act.tokens : p.tokens, p.n_tokens, p.act.x, c.n_embd);
  if (c.embd_scale != 1.0f) be.scale(p.act.x, c.embd_scale, int64_t(p.n_tokens) * c.n_embd);
}

void norm_rows(ForwardPass& p, const float* in, float* out, const std::vector<float>& w) {
  p.backend->rms_norm(in, floats(p, w), out, p.config.n_embd, p.n_tokens, p.config.rms_eps);
}

void add_rows(ForwardPass& p, float* x, const float* y) {
  p.backend->add(x, y, int64_t(p.n_tokens) * p.config.n_embd);
}

namespace {

void add_bias(ForwardPass& p, float* rows, const std::vector<float>& bias) {
  if (bias.empty()) return;
  const int64_t n = int64_t(bias.size());
  p.backend->add_bias(rows, floats(p, bias), n, p.n_tokens);
}

void head_norm(ForwardPass& p, float* rows, int n_heads, int head_dim, const std::vector<float>& w) {
  if (w.empty()) return;
  p.backend->rms_norm(rows, floats(p, w), rows, head_dim, p.n_tokens * n_heads, p.config.rms_eps);
}

}  // namespace

void attention(ForwardPass& p, int layer, const AttentionSpec& spec) {
  const ModelConfig& c = p.config;
  const LayerWeights& L = p.weights.layers[size_t(layer)];
  backend::Backend& be = *p.backend;
  const Activations& a = p.act;
  const int n = p.n_tokens;
  const int64_t q_dim = int64_t(c.n_head) * c.head_dim_k;
  const int64_t k_dim = int64_t(c.n_head_kv) * c.head_dim_k;
  const int64_t v_dim = int64_t(c.n_head_kv) * c.head_dim_v;
  const int64_t o_dim = int64_t(c.n_head) * c.head_dim_v;

  be.matmul(weight(p, L.wq), a.h, c.n_embd, n, a.q, q_dim);
  be.matmul(weight(p, L.wk), a.h, c.n_embd, n, a.k, k_dim);
  be.matmul(weight(p, L.wv), a.h, c.n_embd, n, a.v, v_dim);
  add_bias(p, a.q, L.bq);
  add_bias(p, a.k, L.bk);
  add_bias(p, a.v, L.bv);
  head_norm(p, a.q, c.n_head, c.head_dim_k, L.q_norm);
  head_norm(p, a.k, c.n_head_kv, c.head_dim_k, L.k_norm);

  ops::RopeParams rope{c.n_rot, c.rope_kind, spec.rope_base, spec.rope_scale};
  rope.ext_factor = c.rope_ext_factor;
  rope.attn_factor = c.rope_attn_factor;
  rope.n_ctx_orig = c.rope_n_ctx_orig;
  rope.freq_factors = floats(p, p.weights.rope_freqs);
  be.rope(a.q, q_dim, n, c.n_head, c.head_dim_k, p.pos0, rope);
  be.rope(a.k, k_dim, n, c.n_head_kv, c.head_dim_k, p.pos0, rope);
  if (spec.scale_q_first) be.scale(a.q, c.attn_scale, n * q_dim);

  const ops::KvLayerView k_cache = p.kv.k_view(layer), v_cache = p.kv.v_view(layer);
  const int window = spec.sliding ? c.sliding_window : 0;
  if (k_cache.n_slots < p.pos0 + n && (window == 0 || k_cache.n_slots < window + n - 1))
    throw Error("attention: layer " + std::to_string(layer) + " caches " + std::to_string(k_cache.n_slots) +
                " positions, too few for a batch of " + std::to_string(n) + " at position " + std::to_string(p.pos0));
  be.store_kv(k_cache, v_cache, a.k, a.v, n, p.pos0, c.n_head_kv, c.head_dim_k, c.head_dim_v);
  p.kv.written(layer, p.pos0, n);
  const ops::AttentionShape shape{c.n_head, c.n_head_kv, c.head_dim_k, c.head_dim_v,
                                  spec.scale_q_first ? 1.0f : c.attn_scale, window,
                                  L.attn_sinks.empty() ? nullptr : floats(p, L.attn_sinks)};
  be.attention(shape, a.q, n, p.pos0, k_cache, v_cache, a.att);
  be.matmul(weight(p, L.wo), a.att, o_dim, n, a.o, c.n_embd);
  add_bias(p, a.o, L.bo);
}

namespace {

// y = W x for one FFN matrix, piece by piece as the source hands it out (one piece when it is
// resident); the activations are converted once for all pieces. The bound view gives the type
// and shape only.
void ffn_matmul(ForwardPass& p, int layer, FfnPart part, const float* x, float* y) {
  const WeightView& w = ffn_weight(p.weights.layers[size_t(layer)], part);
  p.backend->prepare_matmul(w.type, w.n_cols, x, w.n_cols, p.n_tokens);
  p.source.begin_matrix(layer, part);
  WeightView piece;
  int64_t row0 = 0;
  while (p.source.next_piece(piece, row0)) p.backend->matmul_prepared(weight(p, piece), y + row0, w.n_rows);
}

}  // namespace

void ffn(ForwardPass& p, int layer, Activation act) {
  const ModelConfig& c = p.config;
  const Activations& a = p.act;
  if (p.source.ffn_resident(layer, FfnPart::gate) && p.source.ffn_resident(layer, FfnPart::up)) {
    // Both whole: one op, which a device may run as one launch.
    const LayerWeights& L = p.weights.layers[size_t(layer)];
    p.backend->ffn_gate_up(weight(p, ffn_weight(L, FfnPart::gate)), weight(p, ffn_weight(L, FfnPart::up)), a.h,
                           p.n_tokens, a.gate, a.up, gated(act));
  } else {
    ffn_matmul(p, layer, FfnPart::gate, a.h, a.gate);
    ffn_matmul(p, layer, FfnPart::up, a.h, a.up);
    p.backend->gated_activation(a.gate, a.up, int64_t(p.n_tokens) * c.n_ff, gated(act));
  }
  ffn_matmul(p, layer, FfnPart::down, a.gate, a.o);
}

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

namespace {

// Every expert of `layer` as bound (the stacked 3-D tensors), where the pass computes.
backend::ExpertWeights stacked_experts(const ForwardPass& p, int layer) {
  const ModelConfig& c = p.config;
  const LayerWeights& L = p.weights.layers[size_t(layer)];
  const WeightView gate = weight(p, L.gate_exps), up = weight(p, L.up_exps), down = weight(p, L.down_exps);
  backend::ExpertWeights w;
  w.gate = gate.rows(0, c.n_ff_expert);
  w.up = up.rows(0, c.n_ff_expert);
  w.down = down.rows(0, c.n_embd);
  w.gate_stride = size_t(c.n_ff_expert) * gate.row_bytes;
  w.up_stride = size_t(c.n_ff_expert) * up.row_bytes;
  w.down_stride = size_t(c.n_embd) * down.row_bytes;
  return w;
}

// Expert e alone, as a source handed it out.
backend::ExpertWeights one_expert(const ForwardPass& p, int e, const WeightView& gate, const WeightView& up,
                                  const WeightView& down) {
  backend::ExpertWeights w;
  w.gate = weight(p, gate);
  w.up = weight(p, up);
  w.down = weight(p, down);
  w.single = e;
  return w;
}

// The shared expert (qwen2moe): a gated FFN every token runs, scaled by sigmoid(gate . x) and
// added to the experts' sum, as llama.cpp does.
void shared_expert(ForwardPass& p, int layer, Activation act) {
  const ModelConfig& c = p.config;
  const LayerWeights& L = p.weights.layers[size_t(layer)];
  const int n = p.n_tokens;
  const Activations& a = p.act;
  ffn_matmul(p, layer, FfnPart::shexp_gate, a.h, a.gate);
  ffn_matmul(p, layer, FfnPart::shexp_up, a.h, a.up);
  p.backend->gated_activation(a.gate, a.up, int64_t(n) * c.n_ff_shexp, gated(act));
  ffn_matmul(p, layer, FfnPart::shexp_down, a.gate, a.shexp_out);
  p.backend->matmul(weight(p, L.shexp_gate_inp), a.h, c.n_embd, n, a.shexp_gate, 1);
  p.backend->add_sigmoid_gated(a.o, a.shexp_out, a.shexp_gate, n, c.n_embd);
}

}  // namespace

void moe_ffn(ForwardPass& p, int layer, Activation act) {
  const ModelConfig& c = p.config;
  const LayerWeights& L = p.weights.layers[size_t(layer)];
  ForwardBuffers& b = p.buf;
  backend::Backend& be = *p.backend;
  const Activations& a = p.act;
  const int n = p.n_tokens;
  const int k_used = c.n_expert_used;

  be.matmul(weight(p, L.router), a.h, c.n_embd, n, a.router_logits, c.n_expert);
  be.route_top_k(a.router_logits, n, c.n_expert, k_used, c.expert_weights_norm, a.chosen, a.chosen_weight);
  // The routing crosses to the host only for what reads it there: the trace, the guesses, and a
  // source that hands the experts out one by one.
  const bool split = p.expert_compute && p.expert_compute->computes(layer);
  const bool resident = !split && p.source.experts_resident(layer);
  if ((p.routing_observer || p.hook || !(resident || split)) && a.chosen != b.chosen.data())
    be.download(b.chosen.data(), a.chosen, size_t(n) * size_t(k_used) * sizeof(int32_t));
  // A hook may rewrite the choice (a benchmark's routing override); it reads and writes the host copy.
  if (p.hook) {
    p.hook->after_router(p, layer);
    if (a.chosen != b.chosen.data()) be.upload(a.chosen, b.chosen.data(), size_t(n) * size_t(k_used) * sizeof(int32_t));
  }
  if (p.routing_observer) p.routing_observer->routed(layer, p.pos0, b.chosen.data(), n);

  backend::ExpertBatch batch;
  batch.x = a.h;
  batch.n_tokens = n;
  batch.n_expert = c.n_expert;
  batch.k = k_used;
  batch.chosen = a.chosen;
  batch.weights = a.chosen_weight;
  batch.act = gated(act);
  batch.out = a.expert_results;
  batch.host = {b.expert_in.data(), b.gate.data(), b.up.data(), b.expert_out.data(), b.expert_tokens.data()};
  if (split) {
    if (p.hook) p.hook->after_routing(p, layer);
    p.expert_compute->compute(p, layer, batch);
  } else if (resident) {
    if (p.hook) p.hook->after_routing(p, layer);
    be.moe_experts(stacked_experts(p, layer), batch);
  } else {
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
      be.moe_experts(one_expert(p, e, gate, up, down), batch);
    }
  }
  // The weighted expert outputs summed in routing order, as llama.cpp does.
  be.moe_sum(a.expert_results, n, k_used, c.n_embd, a.o);
  if (c.has_shared_expert) shared_expert(p, layer, act);
}

void after_ffn(ForwardPass& p, int layer) {
  if (p.hook) p.hook->after_ffn(p, layer);
}

void output_head(ForwardPass& p) {
  const ModelConfig& c = p.config;
  backend::Backend& be = *p.backend;
  const Activations& a = p.act;
  const float* norm = floats(p, p.weights.output_norm);
  if (p.hidden_only) {
    be.rms_norm(a.x, norm, a.h, c.n_embd, p.n_tokens, c.rms_eps);
    return;
  }
  const int first = p.all_logits ? 0 : p.n_tokens - 1;
  const int count = p.n_tokens - first;
  float* logits = a.logits;
  if (!logits) {  // the host's buffer: all-logits evaluation grows it, never the token loop
    const size_t need = size_t(count) * size_t(c.n_vocab);
    if (p.buf.logits.size() < need) p.buf.logits.resize(need);
    logits = p.buf.logits.data();
  } else if (count > a.logits_rows) {
    throw Error("output head: " + std::to_string(count) + " rows of logits asked for, the device holds " +
                std::to_string(a.logits_rows));
  }
  be.rms_norm(a.x + size_t(first) * c.n_embd, norm, a.h, c.n_embd, count, c.rms_eps);
  be.matmul(weight(p, p.weights.output), a.h, c.n_embd, count, logits, c.n_vocab);
}

}  // namespace blocks
}  // namespace strata
