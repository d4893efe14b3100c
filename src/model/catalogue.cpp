#include "model/catalogue.h"

#include "gguf/gguf.h"
#include "model/architectures.h"
#include "util/error.h"

namespace strata {

// --- Architectures: one entry each. A forward pass of its own only where the shared one does not do.

void configure_gemma3(const gguf::File&, ModelConfig&);
void forward_pre_norm(ForwardPass&);  // arch_llama.cpp: llama, qwen2, qwen3 and their MoE forms
void forward_gemma3(ForwardPass&);
void configure_gptoss(const gguf::File&, ModelConfig&);
void forward_gptoss(ForwardPass&);
void configure_qwen35(const gguf::File&, ModelConfig&);
void forward_qwen35(ForwardPass&);  // arch_qwen35.cpp: qwen35 and qwen35moe

namespace {

using ops::RopeKind;
constexpr ArchitectureEntry kArchitectures[] = {
    {"llama", Arch::llama, {.rope_kind = RopeKind::normal}, nullptr, forward_pre_norm},
    {"qwen2", Arch::qwen2, {.rope_kind = RopeKind::neox, .qkv_bias = true}, nullptr, forward_pre_norm},
    {"qwen3", Arch::qwen3, {.rope_kind = RopeKind::neox, .qk_norm = true}, nullptr, forward_pre_norm},
    {"qwen3moe", Arch::qwen3moe, {.rope_kind = RopeKind::neox, .qk_norm = true}, nullptr, forward_pre_norm},
    {"qwen2moe",
     Arch::qwen2moe,
     {.rope_kind = RopeKind::neox, .qkv_bias = true, .shared_expert = true, .expert_weights_norm = false},
     nullptr,
     forward_pre_norm},
    {"gemma3",
     Arch::gemma3,
     {.rope_kind = RopeKind::neox, .activation = Activation::gelu_tanh, .qk_norm = true, .post_norms = true},
     configure_gemma3,
     forward_gemma3},
    // llama.cpp's LLM_ARCH_OPENAI_MOE.
    {"gpt-oss",
     Arch::gptoss,
     {.rope_kind = RopeKind::neox,
      .activation = Activation::swiglu_oai,
      .qkv_bias = true,
      .expert_weights_norm = false,
      .gating = ExpertGating::softmax_weight,
      .expert_biases = true,
      .attn_out_bias = true,
      .attn_sinks = true,
      .ffn_norm_post_attn = true},
     configure_gptoss,
     forward_gptoss},
    // Qwen3.5 (llama.cpp's qwen35, qwen35moe): gated delta-rule layers between gated full-attention
    // layers; the MoE form adds a sigmoid-gated shared expert (as qwen2moe) to softmax top-k routing.
    {"qwen35",
     Arch::qwen35,
     {.rope_kind = RopeKind::neox, .qk_norm = true, .ffn_norm_post_attn = true, .attn_output_gate = true},
     configure_qwen35,
     forward_qwen35},
    {"qwen35moe",
     Arch::qwen35moe,
     {.rope_kind = RopeKind::neox,
      .qk_norm = true,
      .shared_expert = true,
      .ffn_norm_post_attn = true,
      .attn_output_gate = true},
     configure_qwen35,
     forward_qwen35},
};

// --- Tensors.

using L = LayerWeights;
using M = ModelWeights;
using W = TensorWhen;
using R = TensorRole;

constexpr TensorEntry layer_matrix(const char* name, R role, W when, Dim cols, Dim rows, WeightView L::*field,
                                   int part = -1, bool stacked = false) {
  return {name, true, role, part, when, cols, rows, stacked, false, field, nullptr, nullptr, nullptr};
}
constexpr TensorEntry layer_vector(const char* name, R role, W when, Dim n, std::vector<float> L::*field,
                                   Dim rows = Dim::one) {
  return {name, true, role, -1, when, n, rows, false, true, nullptr, field, nullptr, nullptr};
}
constexpr TensorEntry model_matrix(const char* name, R role, W when, Dim cols, Dim rows, WeightView M::*field) {
  return {name, false, role, -1, when, cols, rows, false, false, nullptr, nullptr, field, nullptr};
}
constexpr TensorEntry model_vector(const char* name, R role, W when, Dim n, std::vector<float> M::*field) {
  return {name, false, role, -1, when, n, Dim::one, false, true, nullptr, nullptr, nullptr, field};
}
constexpr int part(FfnPart p) { return int(p); }

// Per-layer tensors in llama.cpp's file order, then the global ones.
constexpr TensorEntry kTensors[] = {
    model_matrix("token_embd.weight", R::embedding, W::always, Dim::n_embd, Dim::n_vocab, &M::token_embd),
    layer_vector("attn_norm.weight", R::norm, W::always, Dim::n_embd, &L::attn_norm),
    layer_matrix("attn_q.weight", R::attention, W::attention, Dim::n_embd, Dim::q_proj, &L::wq),
    layer_vector("attn_q.bias", R::attention, W::qkv_bias, Dim::q_dim, &L::bq),
    layer_matrix("attn_k.weight", R::attention, W::attention, Dim::n_embd, Dim::k_dim, &L::wk),
    layer_vector("attn_k.bias", R::attention, W::qkv_bias, Dim::k_dim, &L::bk),
    layer_matrix("attn_v.weight", R::attention, W::attention, Dim::n_embd, Dim::v_dim, &L::wv),
    layer_vector("attn_v.bias", R::attention, W::qkv_bias, Dim::v_dim, &L::bv),
    layer_vector("attn_q_norm.weight", R::norm, W::qk_norm, Dim::head_dim_k, &L::q_norm),
    layer_vector("attn_k_norm.weight", R::norm, W::qk_norm, Dim::head_dim_k, &L::k_norm),
    layer_matrix("attn_output.weight", R::attention, W::attention, Dim::o_dim, Dim::n_embd, &L::wo),
    // Gated delta-rule layers (qwen35): their own projections in place of q, k, v and output.
    layer_matrix("attn_qkv.weight", R::attention, W::recurrent, Dim::n_embd, Dim::ssm_conv_dim, &L::ssm_qkv),
    layer_matrix("attn_gate.weight", R::attention, W::recurrent, Dim::n_embd, Dim::ssm_d_inner, &L::ssm_z),
    layer_vector("ssm_conv1d.weight", R::attention, W::recurrent, Dim::ssm_d_conv, &L::ssm_conv1d, Dim::ssm_conv_dim),
    layer_vector("ssm_dt.bias", R::attention, W::recurrent, Dim::ssm_v_heads, &L::ssm_dt),
    layer_vector("ssm_a", R::attention, W::recurrent, Dim::ssm_v_heads, &L::ssm_a),
    layer_matrix("ssm_beta.weight", R::attention, W::recurrent, Dim::n_embd, Dim::ssm_v_heads, &L::ssm_beta),
    layer_matrix("ssm_alpha.weight", R::attention, W::recurrent, Dim::n_embd, Dim::ssm_v_heads, &L::ssm_alpha),
    layer_vector("ssm_norm.weight", R::norm, W::recurrent, Dim::ssm_d_state, &L::ssm_norm),
    layer_matrix("ssm_out.weight", R::attention, W::recurrent, Dim::ssm_d_inner, Dim::n_embd, &L::ssm_out),
    layer_vector("attn_output.bias", R::attention, W::attn_out_bias, Dim::n_embd, &L::bo),
    layer_vector("attn_sinks.weight", R::attention, W::attn_sinks, Dim::n_head, &L::attn_sinks),
    layer_vector("post_attention_norm.weight", R::norm, W::post_attn_norm, Dim::n_embd, &L::post_attn_norm),
    layer_vector("ffn_norm.weight", R::norm, W::ffn_norm, Dim::n_embd, &L::ffn_norm),
    layer_matrix("ffn_gate_inp.weight", R::router, W::moe_layer, Dim::n_embd, Dim::n_expert, &L::router),
    layer_vector("ffn_gate_inp.bias", R::router, W::expert_bias, Dim::n_expert, &L::router_bias),
    layer_matrix("ffn_gate_exps.weight", R::experts, W::moe_layer, Dim::n_embd, Dim::n_ff_expert, &L::gate_exps, -1,
                 true),
    layer_matrix("ffn_up_exps.weight", R::experts, W::moe_layer, Dim::n_embd, Dim::n_ff_expert, &L::up_exps, -1, true),
    layer_matrix("ffn_down_exps.weight", R::experts, W::moe_layer, Dim::n_ff_expert, Dim::n_embd, &L::down_exps, -1,
                 true),
    // Expert biases are small and read for every routed token: resident (role other), one row per expert.
    layer_vector("ffn_gate_exps.bias", R::other, W::expert_bias, Dim::n_ff_expert, &L::gate_exps_bias, Dim::n_expert),
    layer_vector("ffn_up_exps.bias", R::other, W::expert_bias, Dim::n_ff_expert, &L::up_exps_bias, Dim::n_expert),
    layer_vector("ffn_down_exps.bias", R::other, W::expert_bias, Dim::n_embd, &L::down_exps_bias, Dim::n_expert),
    layer_matrix("ffn_gate_inp_shexp.weight", R::router, W::shared_expert, Dim::n_embd, Dim::one, &L::shexp_gate_inp),
    layer_matrix("ffn_gate_shexp.weight", R::dense_ffn, W::shared_expert, Dim::n_embd, Dim::n_ff_shexp,
                 &L::w_gate_shexp, part(FfnPart::shexp_gate)),
    layer_matrix("ffn_up_shexp.weight", R::dense_ffn, W::shared_expert, Dim::n_embd, Dim::n_ff_shexp, &L::w_up_shexp,
                 part(FfnPart::shexp_up)),
    layer_matrix("ffn_down_shexp.weight", R::dense_ffn, W::shared_expert, Dim::n_ff_shexp, Dim::n_embd,
                 &L::w_down_shexp, part(FfnPart::shexp_down)),
    layer_matrix("ffn_gate.weight", R::dense_ffn, W::dense_layer, Dim::n_embd, Dim::n_ff, &L::w_gate,
                 part(FfnPart::gate)),
    layer_matrix("ffn_up.weight", R::dense_ffn, W::dense_layer, Dim::n_embd, Dim::n_ff, &L::w_up, part(FfnPart::up)),
    layer_matrix("ffn_down.weight", R::dense_ffn, W::dense_layer, Dim::n_ff, Dim::n_embd, &L::w_down,
                 part(FfnPart::down)),
    layer_vector("post_ffw_norm.weight", R::norm, W::post_norms, Dim::n_embd, &L::post_ffn_norm),
    model_vector("output_norm.weight", R::norm, W::always, Dim::n_embd, &M::output_norm),
    model_matrix("output.weight", R::output, W::optional, Dim::n_embd, Dim::n_vocab, &M::output),
    model_vector("rope_freqs.weight", R::other, W::optional, Dim::n_rot_half, &M::rope_freqs),
};

bool has(const ModelConfig& c, TensorWhen when, int layer) {
  const bool attention = !c.is_recurrent_layer(layer);  // a global tensor has layer -1: never recurrent
  switch (when) {
    case W::always:
    case W::optional:
      return true;
    case W::attention:
      return attention;
    case W::recurrent:
      return !attention;
    case W::qkv_bias:
      return c.has_qkv_bias && attention;
    case W::qk_norm:
      return c.has_qk_norm && attention;
    case W::post_norms:
      return c.has_post_norms;
    case W::dense_layer:
      return !c.is_moe_layer(layer);
    case W::moe_layer:
      return c.is_moe_layer(layer);
    case W::shared_expert:
      return c.has_shared_expert && c.is_moe_layer(layer);
    case W::attn_out_bias:
      return c.has_attn_out_bias && attention;
    case W::attn_sinks:
      return c.has_attn_sinks && attention;
    case W::expert_bias:
      return c.has_expert_biases && c.is_moe_layer(layer);
    case W::ffn_norm:
      return !c.ffn_norm_post_attn;
    case W::post_attn_norm:
      return c.has_post_norms || c.ffn_norm_post_attn;
  }
  return false;
}

}  // namespace

// --- Architecture registry.

const ArchitectureEntry* find_architecture(const std::string& name) {
  for (const auto& a : kArchitectures)
    if (name == a.name) return &a;
  return nullptr;
}

const ArchitectureEntry& architecture(Arch arch) {
  for (const auto& a : kArchitectures)
    if (a.arch == arch) return a;
  throw Error(std::string("architecture ") + std::to_string(int(arch)) + " has no registry entry (internal error)");
}

std::string supported_architectures() {
  std::string s;
  for (const auto& a : kArchitectures) s += (s.empty() ? "" : ", ") + std::string(a.name);
  return s;
}

namespace {
// Architectures Strata knows of but cannot compute yet: refused by name with what is missing,
// never run with another architecture's forward pass.
struct NotYet {
  const char* name;
  const char* missing;
};
constexpr NotYet kNotYet[] = {
    {"qwen3next", "Qwen3-Next: the fused ssm_in (q, k, v, z) and ssm_ba projections of its delta-rule layers"},
};
}  // namespace

const ArchitectureEntry& require_architecture(const std::string& name, const std::string& where) {
  const ArchitectureEntry* entry = find_architecture(name);
  if (entry) return *entry;
  for (const NotYet& n : kNotYet)
    if (name == n.name)
      throw Error(where + ": architecture '" + name + "' is not supported yet (" + n.missing +
                  " are not implemented; supported: " + supported_architectures() + ")");
  throw Error(where + ": unknown architecture '" + name + "' (supported: " + supported_architectures() + ")");
}

void apply_traits(const ArchitectureEntry& entry, ModelConfig& c) {
  const ArchTraits& t = entry.traits;
  c.arch = entry.arch;
  c.rope_kind = t.rope_kind;
  c.activation = t.activation;
  c.has_qkv_bias = t.qkv_bias;
  c.has_qk_norm = t.qk_norm;
  c.has_post_norms = t.post_norms;
  c.has_shared_expert = t.shared_expert;
  c.expert_weights_norm = t.expert_weights_norm;
  c.gating = t.gating;
  c.has_expert_biases = t.expert_biases;
  c.has_attn_out_bias = t.attn_out_bias;
  c.has_attn_sinks = t.attn_sinks;
  c.ffn_norm_post_attn = t.ffn_norm_post_attn;
  c.has_attn_output_gate = t.attn_output_gate;
}

// --- Tensor catalogue.

std::span<const TensorEntry> tensor_catalogue() { return kTensors; }

int64_t dim_value(const ModelConfig& c, Dim dim) {
  switch (dim) {
    case Dim::one:
      return 1;
    case Dim::n_embd:
      return c.n_embd;
    case Dim::n_vocab:
      return c.n_vocab;
    case Dim::q_dim:
      return int64_t(c.n_head) * c.head_dim_k;
    case Dim::k_dim:
      return int64_t(c.n_head_kv) * c.head_dim_k;
    case Dim::v_dim:
      return int64_t(c.n_head_kv) * c.head_dim_v;
    case Dim::o_dim:
      return int64_t(c.n_head) * c.head_dim_v;
    case Dim::head_dim_k:
      return c.head_dim_k;
    case Dim::n_ff:
      return c.n_ff;
    case Dim::n_ff_expert:
      return c.n_ff_expert;
    case Dim::n_ff_shexp:
      return c.n_ff_shexp;
    case Dim::n_expert:
      return c.n_expert;
    case Dim::n_rot_half:
      return c.n_rot / 2;
    case Dim::n_head:
      return c.n_head;
    case Dim::q_proj:
      return int64_t(c.n_head) * c.head_dim_k * (c.has_attn_output_gate ? 2 : 1);
    case Dim::ssm_conv_dim:
      return c.ssm_conv_dim();
    case Dim::ssm_d_inner:
      return c.ssm_d_inner;
    case Dim::ssm_d_state:
      return c.ssm_d_state;
    case Dim::ssm_d_conv:
      return c.ssm_d_conv;
    case Dim::ssm_v_heads:
      return c.ssm_dt_rank;
  }
  return 0;
}

std::vector<int64_t> ExpectedTensor::shape() const {
  if (n_stack > 1) return {n_cols, n_rows / n_stack, n_stack};
  if (entry && entry->rows == Dim::one) return {n_cols};  // vectors (and llama.cpp's 1-D shared-expert gate)
  return {n_cols, n_rows};
}

std::vector<ExpectedTensor> expected_tensors(const ModelConfig& c) {
  std::vector<ExpectedTensor> out;
  auto add = [&](const TensorEntry& e, int layer) {
    ExpectedTensor t;
    t.entry = &e;
    t.layer = layer;
    t.name = layer >= 0 ? "blk." + std::to_string(layer) + "." + e.name : std::string(e.name);
    t.n_cols = dim_value(c, e.cols);
    t.n_stack = e.stacked ? c.n_expert : 1;
    t.n_rows = dim_value(c, e.rows) * t.n_stack;
    t.required = e.when != W::optional;
    out.push_back(std::move(t));
  };
  const TensorEntry* first_global_after = nullptr;  // token_embd comes before the layers, the rest after
  for (const TensorEntry& e : kTensors)
    if (!e.per_layer && !first_global_after) {
      add(e, -1);
      first_global_after = &e;
    }
  for (int l = 0; l < c.n_layer; ++l)
    for (const TensorEntry& e : kTensors)
      if (e.per_layer && has(c, e.when, l)) add(e, l);
  for (const TensorEntry& e : kTensors)
    if (!e.per_layer && &e != first_global_after) add(e, -1);
  return out;
}

const TensorEntry* find_tensor_entry(std::string_view name, int* layer) {
  if (layer) *layer = -1;
  std::string_view rest = name;
  int l = -1;
  if (name.starts_with("blk.")) {
    rest = name.substr(4);
    const size_t dot = rest.find('.');
    if (dot == 0 || dot == std::string_view::npos || dot > 7) return nullptr;
    l = 0;
    for (char ch : rest.substr(0, dot)) {
      if (ch < '0' || ch > '9') return nullptr;
      l = l * 10 + (ch - '0');
    }
    rest = rest.substr(dot + 1);
  }
  for (const TensorEntry& e : kTensors)
    if (e.per_layer == (l >= 0) && rest == e.name) {
      if (layer) *layer = l;
      return &e;
    }
  return nullptr;
}

TensorRole tensor_role(std::string_view name, int* layer) {
  const TensorEntry* e = find_tensor_entry(name, layer);
  return e ? e->role : TensorRole::other;
}

int tensor_ffn_part(std::string_view name) {
  const TensorEntry* e = find_tensor_entry(name);
  return e ? e->part : -1;
}

}  // namespace strata
