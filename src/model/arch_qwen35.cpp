// Qwen3.5 (llama.cpp's qwen35 and qwen35moe): gated delta-rule (linear attention) layers, which
// keep a recurrent state instead of a KV cache (model/recurrent_state.h), with a full-attention
// layer every full_attention_interval layers (4 in the released models). Every layer:
//   x += mixer(norm(x));  x += ffn(post_attention_norm(x));  logits = output(norm(x))
// Full attention: one projection gives each head its query and an output gate; QK-norm; neox rope
// over the first n_rot dims (llama.cpp's interleaved M-RoPE, whose sections all carry the text
// position); attention; * sigmoid(gate); output projection.
// Delta rule: [q k v] = silu(conv1d(x W_qkv)) (the conv1d keeps each channel's last d_conv - 1
// inputs); q, k L2-normalized per head; beta = sigmoid(x W_beta); g = softplus(x W_alpha + dt) * a;
// the gated delta rule over the state (ops/delta_rule.h); per value head rms_norm(o) * silu(x W_z);
// W_out.
// FFN: the gated dense FFN (qwen35), or softmax top-k experts, renormalized, plus a sigmoid-gated
// shared expert (qwen35moe), through the shared blocks: the experts stream as qwen3moe's do.
// The delta-rule layers compute on host buffers: CPU backend only (Session refuses the GPU).
#include <algorithm>
#include <cmath>

#include "gguf/gguf.h"
#include "model/architectures.h"
#include "model/blocks.h"
#include "ops/delta_rule.h"
#include "util/error.h"

namespace strata {

namespace {
// Bounds of the ssm.* keys (the released models: conv 4, heads of 128, 16 key and 32 value heads).
constexpr int64_t kMaxSsmConv = ops::kMaxConvWidth;
constexpr int64_t kMaxSsmHeadDim = ops::kMaxDeltaHeadDim;
constexpr int64_t kMaxSsmHeads = 4096;
}  // namespace

void configure_qwen35(const gguf::File& f, ModelConfig& c) {
  const std::string& a = c.arch_name;
  auto key = [&](const std::string& name, int64_t lo, int64_t hi) {
    const int64_t v = f.get_int(a + "." + name);
    if (v < lo || v > hi)
      throw Error(f.path() + ": " + a + "." + name + " " + std::to_string(v) + " is outside " + std::to_string(lo) +
                  ".." + std::to_string(hi));
    return int(v);
  };
  // Multi-token prediction layers (nextn) follow the trunk in the file; the trunk runs alone.
  const int64_t nextn = f.get_int(a + ".nextn_predict_layers", 0);
  if (nextn < 0 || nextn >= c.n_layer)
    throw Error(f.path() + ": " + a + ".nextn_predict_layers " + std::to_string(nextn) + " is out of range");
  c.n_layer -= int(nextn);
  c.n_layer_nextn = int(nextn);
  c.layer_swa.assign(size_t(c.n_layer), false);

  c.ssm_d_conv = key("ssm.conv_kernel", 1, kMaxSsmConv);
  c.ssm_d_state = key("ssm.state_size", 1, kMaxSsmHeadDim);
  c.ssm_n_group = key("ssm.group_count", 1, kMaxSsmHeads);
  c.ssm_dt_rank = key("ssm.time_step_rank", 1, kMaxSsmHeads);
  c.ssm_d_inner = key("ssm.inner_size", 1, kMaxSsmHeads * kMaxSsmHeadDim);
  if (int64_t(c.ssm_d_inner) != int64_t(c.ssm_d_state) * c.ssm_dt_rank)
    throw Error(f.path() + ": " + a + ".ssm.inner_size " + std::to_string(c.ssm_d_inner) + " is not state_size x " +
                "time_step_rank (" + std::to_string(c.ssm_d_state) + " x " + std::to_string(c.ssm_dt_rank) + ")");
  if (c.ssm_dt_rank % c.ssm_n_group != 0)
    throw Error(f.path() + ": " + a + ".ssm.time_step_rank " + std::to_string(c.ssm_dt_rank) +
                " (value heads) is not a multiple of ssm.group_count " + std::to_string(c.ssm_n_group) +
                " (key heads)");
  if (c.head_dim_k != c.head_dim_v)
    throw Error(f.path() + ": " + a + " needs attention.key_length == value_length (" + std::to_string(c.head_dim_k) +
                ", " + std::to_string(c.head_dim_v) + ")");

  // Which layers are recurrent: a per-layer array if the file has one, else all but every
  // full_attention_interval-th (as llama.cpp's load_arch_hparams).
  c.layer_recurrent.assign(size_t(c.n_layer), false);
  const std::string layers_key = a + ".attention.recurrent_layers";
  const gguf::Value* layers = f.find(layers_key);
  if (layers && layers->type == gguf::ValueType::ARRAY) {
    const auto& items = layers->as_array().items;
    if (items.size() != size_t(c.n_layer + nextn))
      throw Error(f.path() + ": " + layers_key + " has " + std::to_string(items.size()) + " entries, expected " +
                  std::to_string(c.n_layer + nextn));
    for (int l = 0; l < c.n_layer; ++l) c.layer_recurrent[size_t(l)] = items[size_t(l)].as_bool();
  } else {
    const int64_t interval = f.get_int(a + ".full_attention_interval", 4);
    if (interval < 1 || interval > c.n_layer + 1)
      throw Error(f.path() + ": " + a + ".full_attention_interval " + std::to_string(interval) + " is out of range");
    for (int l = 0; l < c.n_layer; ++l) c.layer_recurrent[size_t(l)] = (l + 1) % interval != 0;
  }

  // Interleaved M-RoPE (LLAMA_ROPE_TYPE_IMROPE): rotary pair i takes the time, height or width
  // position by (i mod the sections' sum) mod 3 while within 3 x that section, else the fourth
  // (extra) position. Text tokens carry their position in the first three and 0 in the fourth, so
  // where every pair takes one of the three this is neox rope over n_rot dims, which Strata runs.
  const std::string sections_key = a + ".rope.dimension_sections";
  const gguf::Value* sections_value = f.find(sections_key);
  if (!sections_value || sections_value->type != gguf::ValueType::ARRAY)
    throw Error(f.path() + ": missing " + sections_key);
  const auto& items = sections_value->as_array().items;
  int64_t sections[4] = {0, 0, 0, 0};
  for (size_t i = 0; i < items.size() && i < 4; ++i) sections[i] = items[i].as_int();
  const int64_t sect_dims = sections[0] + sections[1] + sections[2] + sections[3];
  if (sect_dims <= 0 || sect_dims > c.head_dim_k)
    throw Error(f.path() + ": " + sections_key + " sums to " + std::to_string(sect_dims) + ", outside 1.." +
                std::to_string(c.head_dim_k));
  for (int pair = 0; pair < c.n_rot / 2; ++pair) {
    const int64_t s = pair % sect_dims;
    const bool text = (s % 3 == 0 && s < 3 * sections[0]) || (s % 3 == 1 && s < 3 * sections[1]) ||
                      (s % 3 == 2 && s < 3 * sections[2]);
    if (!text)
      throw Error(f.path() + ": " + sections_key + " gives rotary pair " + std::to_string(pair) +
                  " the extra (fourth) position, which text-only evaluation does not model");
  }
  if (c.n_expert > 0 && c.n_ff_expert <= 0) throw Error(f.path() + ": " + a + ".expert_feed_forward_length is missing");
}

namespace {

// Full attention with the output gate: the q projection gives per head [query | gate] (head_dim
// each); QK-norm, rope, attention as blocks::attention, then out *= sigmoid(gate) before W_o.
void gated_attention(ForwardPass& p, int layer) {
  const ModelConfig& c = p.config;
  const LayerWeights& L = p.weights.layers[size_t(layer)];
  backend::Backend& be = *p.backend;
  const Activations& a = p.act;
  RecurrentState::Scratch& s = p.kv.recurrent.scratch;
  const int n = p.n_tokens;
  const int hd = c.head_dim_k;
  const int64_t q_dim = int64_t(c.n_head) * hd;
  const int64_t k_dim = int64_t(c.n_head_kv) * hd;

  be.matmul(L.wq, a.h, c.n_embd, n, s.q_gate.data(), 2 * q_dim);
  for (int t = 0; t < n; ++t)
    for (int h = 0; h < c.n_head; ++h) {
      const float* src = s.q_gate.data() + t * 2 * q_dim + int64_t(h) * 2 * hd;
      std::copy_n(src, hd, a.q + t * q_dim + int64_t(h) * hd);
      std::copy_n(src + hd, hd, s.gate.data() + t * q_dim + int64_t(h) * hd);
    }
  be.matmul(L.wk, a.h, c.n_embd, n, a.k, k_dim);
  be.matmul(L.wv, a.h, c.n_embd, n, a.v, k_dim);
  be.rms_norm(a.q, L.q_norm.data(), a.q, hd, n * c.n_head, c.rms_eps);
  be.rms_norm(a.k, L.k_norm.data(), a.k, hd, n * c.n_head_kv, c.rms_eps);

  ops::RopeParams rope{c.n_rot, c.rope_kind, c.rope_base, c.rope_scale};
  rope.ext_factor = c.rope_ext_factor;
  rope.attn_factor = c.rope_attn_factor;
  rope.n_ctx_orig = c.rope_n_ctx_orig;
  be.rope(a.q, q_dim, n, c.n_head, hd, p.pos0, rope);
  be.rope(a.k, k_dim, n, c.n_head_kv, hd, p.pos0, rope);

  const ops::KvLayerView k_cache = p.kv.k_view(layer), v_cache = p.kv.v_view(layer);
  if (k_cache.n_slots < p.pos0 + n)
    throw Error("attention: layer " + std::to_string(layer) + " caches " + std::to_string(k_cache.n_slots) +
                " positions, too few for a batch of " + std::to_string(n) + " at position " + std::to_string(p.pos0));
  be.store_kv(k_cache, v_cache, a.k, a.v, n, p.pos0, c.n_head_kv, hd, hd);
  p.kv.written(layer, p.pos0, n);
  const ops::AttentionShape shape{c.n_head, c.n_head_kv, hd, hd, c.attn_scale, 0, nullptr};
  be.attention(shape, a.q, n, p.pos0, k_cache, v_cache, a.att);
  for (int64_t i = 0; i < n * q_dim; ++i) a.att[i] *= ops::sigmoid(s.gate[size_t(i)]);
  be.matmul(L.wo, a.att, q_dim, n, a.o, c.n_embd);
}

// A gated delta-rule layer reading p.act.h, writing p.act.o, carrying its state in p.kv.recurrent.
void delta_rule_layer(ForwardPass& p, int layer) {
  const ModelConfig& c = p.config;
  const LayerWeights& L = p.weights.layers[size_t(layer)];
  backend::Backend& be = *p.backend;
  const Activations& a = p.act;
  RecurrentState& rs = p.kv.recurrent;
  RecurrentState::Scratch& s = rs.scratch;
  RecurrentState::Layer& state = rs.layers[size_t(layer)];
  const int n = p.n_tokens;
  const int n_v = c.ssm_dt_rank, d = c.ssm_d_state;
  const int64_t conv_dim = c.ssm_conv_dim(), key_dim = c.ssm_key_dim();

  be.matmul(L.ssm_qkv, a.h, c.n_embd, n, s.qkv.data(), conv_dim);
  be.matmul(L.ssm_z, a.h, c.n_embd, n, s.z.data(), c.ssm_d_inner);
  be.matmul(L.ssm_beta, a.h, c.n_embd, n, s.beta.data(), n_v);
  be.matmul(L.ssm_alpha, a.h, c.n_embd, n, s.alpha.data(), n_v);
  for (int t = 0; t < n; ++t)
    for (int h = 0; h < n_v; ++h) {
      const size_t i = size_t(t) * n_v + h;
      s.beta[i] = ops::sigmoid(s.beta[i]);
      s.alpha[i] = ops::softplus(s.alpha[i] + L.ssm_dt[size_t(h)]) * L.ssm_a[size_t(h)];  // g: the log decay
    }

  ops::conv1d_causal(state.conv.data(), s.qkv.data(), conv_dim, n, conv_dim, c.ssm_d_conv, L.ssm_conv1d.data(),
                     s.conv.data(), p.pool);
  float* qkv = s.conv.data();
  static const ops::DotOrder order = ops::ggml_dot_order();  // how this CPU's llama.cpp rounds
  ops::silu_rows(qkv, conv_dim, n, order);
  for (int t = 0; t < n; ++t) {
    float* row = qkv + t * conv_dim;
    ops::l2_norm(row, d, 2 * c.ssm_n_group, c.rms_eps);  // the q heads, then the k heads
  }
  const ops::DeltaRuleShape shape{c.ssm_n_group, n_v, d};
  ops::gated_delta_rule(state.ssm.data(), qkv, qkv + key_dim, conv_dim, qkv + 2 * key_dim, conv_dim, s.alpha.data(),
                        s.beta.data(), n, shape, s.core.data(), p.pool);
  ops::rms_norm_gated(s.core.data(), L.ssm_norm.data(), s.z.data(), s.core.data(), d, n * n_v, c.rms_eps, order);
  be.matmul(L.ssm_out, s.core.data(), c.ssm_d_inner, n, a.o, c.n_embd);
}

}  // namespace

void forward_qwen35(ForwardPass& p) {
  const ModelConfig& c = p.config;
  const Activations& a = p.act;
  RecurrentState& rs = p.kv.recurrent;
  if (p.backend->kind() != backend::DeviceKind::cpu)
    throw Error(c.arch_name + ": the gated delta-rule layers run on the CPU backend only so far");
  if (rs.empty()) throw Error(c.arch_name + ": the KV cache has no recurrent state (internal error)");
  // A new sequence starts from zeros; any other batch must continue where the state stands.
  if (p.pos0 == 0)
    rs.reset();
  else if (rs.pos != p.pos0)
    throw Error(
        c.arch_name + ": the recurrent state holds " +
        (rs.pos < 0 ? std::string("no position (an evaluation failed part-way)") : std::to_string(rs.pos) + " tokens") +
        ", the batch starts at position " + std::to_string(p.pos0) + " (truncate the session first)");
  rs.pos = -1;  // until every layer has absorbed the batch
  blocks::embed(p);
  for (int l = 0; l < c.n_layer; ++l) {
    const LayerWeights& L = p.weights.layers[size_t(l)];
    blocks::norm_rows(p, a.x, a.h, L.attn_norm);
    if (c.is_recurrent_layer(l))
      delta_rule_layer(p, l);
    else
      gated_attention(p, l);
    blocks::add_rows(p, a.x, a.o);
    blocks::norm_rows(p, a.x, a.h, L.post_attn_norm);
    if (c.is_moe_layer(l))
      blocks::moe_ffn(p, l, c.activation);
    else
      blocks::ffn(p, l, c.activation);
    blocks::add_rows(p, a.x, a.o);
    blocks::after_ffn(p, l);
  }
  rs.pos = p.pos0 + p.n_tokens;
  if (p.n_tokens > 1) rs.checkpoint();  // the end of a prompt batch: where a later prompt may resume
  blocks::output_head(p);
}

}  // namespace strata
