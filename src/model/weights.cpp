#include "model/weights.h"

#include "gguf/gguf.h"
#include "ops/ops.h"
#include "tensor/kernels.h"
#include "util/error.h"

namespace strata {

const char* role_name(TensorRole role) {
  switch (role) {
    case TensorRole::embedding: return "embedding";
    case TensorRole::output: return "output";
    case TensorRole::norm: return "norm";
    case TensorRole::attention: return "attention";
    case TensorRole::router: return "router";
    case TensorRole::dense_ffn: return "dense_ffn";
    case TensorRole::experts: return "experts";
    case TensorRole::other: return "other";
  }
  return "other";
}

namespace {

class Binder {
 public:
  Binder(const gguf::File& file) : file_(file) {}

  // A matrix with rows of n_cols elements and n_rows rows in all (ne1 * ne2 for 3-D tensors).
  WeightView matrix(const std::string& name, int64_t n_cols, int64_t n_rows, bool required = true) const {
    const gguf::TensorInfo* t = file_.find_tensor(name);
    if (!t) {
      if (required) throw Error(file_.path() + ": missing tensor '" + name + "'");
      return {};
    }
    if (!kernels::has_kernels(t->type))
      throw Error(file_.path() + ": tensor '" + name + "' has type " + type_name(t->type) +
                  ", which Strata cannot compute with yet");
    if (t->shape[0] != n_cols || t->n_rows() != n_rows)
      throw Error(file_.path() + ": tensor '" + name + "' has shape " + shape_string(*t) + ", expected " +
                  std::to_string(n_cols) + " x " + std::to_string(n_rows) + " elements");
    WeightView v;
    v.type = t->type;
    v.data = file_.tensor_data(*t);
    v.n_cols = n_cols;
    v.n_rows = n_rows;
    v.row_bytes = row_bytes(t->type, n_cols);
    return v;
  }

  std::vector<float> vector(const std::string& name, int64_t n, bool required = true) const {
    WeightView v = matrix(name, n, 1, required);
    if (v.empty()) return {};
    return ops::to_floats(v);
  }

 private:
  static std::string shape_string(const gguf::TensorInfo& t) {
    std::string s;
    for (size_t i = 0; i < t.shape.size(); ++i) s += (i ? " x " : "") + std::to_string(t.shape[i]);
    return s;
  }
  const gguf::File& file_;
};

}  // namespace

ModelWeights bind_weights(const gguf::File& file, const ModelConfig& c) {
  Binder b(file);
  ModelWeights w;
  w.token_embd = b.matrix("token_embd.weight", c.n_embd, c.n_vocab);
  w.output_norm = b.vector("output_norm.weight", c.n_embd);
  w.output = b.matrix("output.weight", c.n_embd, c.n_vocab, /*required=*/false);
  if (w.output.empty()) w.output = w.token_embd;  // tied embeddings
  w.rope_freqs = b.vector("rope_freqs.weight", c.n_rot / 2, /*required=*/false);

  const int64_t q_dim = int64_t(c.n_head) * c.head_dim_k;
  const int64_t k_dim = int64_t(c.n_head_kv) * c.head_dim_k;
  const int64_t v_dim = int64_t(c.n_head_kv) * c.head_dim_v;
  const int64_t o_dim = int64_t(c.n_head) * c.head_dim_v;
  w.layers.resize(size_t(c.n_layer));
  for (int l = 0; l < c.n_layer; ++l) {
    LayerWeights& L = w.layers[size_t(l)];
    const std::string p = "blk." + std::to_string(l) + ".";
    L.attn_norm = b.vector(p + "attn_norm.weight", c.n_embd);
    L.wq = b.matrix(p + "attn_q.weight", c.n_embd, q_dim);
    L.wk = b.matrix(p + "attn_k.weight", c.n_embd, k_dim);
    L.wv = b.matrix(p + "attn_v.weight", c.n_embd, v_dim);
    L.wo = b.matrix(p + "attn_output.weight", o_dim, c.n_embd);
    if (c.has_qkv_bias) {
      L.bq = b.vector(p + "attn_q.bias", q_dim);
      L.bk = b.vector(p + "attn_k.bias", k_dim);
      L.bv = b.vector(p + "attn_v.bias", v_dim);
    }
    if (c.has_qk_norm) {
      L.q_norm = b.vector(p + "attn_q_norm.weight", c.head_dim_k);
      L.k_norm = b.vector(p + "attn_k_norm.weight", c.head_dim_k);
    }
    if (c.has_post_norms) {
      L.post_attn_norm = b.vector(p + "post_attention_norm.weight", c.n_embd);
      L.post_ffn_norm = b.vector(p + "post_ffw_norm.weight", c.n_embd);
    }
    L.ffn_norm = b.vector(p + "ffn_norm.weight", c.n_embd);
    if (c.n_expert > 0) {
      L.router = b.matrix(p + "ffn_gate_inp.weight", c.n_embd, c.n_expert);
      L.gate_exps = b.matrix(p + "ffn_gate_exps.weight", c.n_embd, int64_t(c.n_expert) * c.n_ff_expert);
      L.up_exps = b.matrix(p + "ffn_up_exps.weight", c.n_embd, int64_t(c.n_expert) * c.n_ff_expert);
      L.down_exps = b.matrix(p + "ffn_down_exps.weight", c.n_ff_expert, int64_t(c.n_expert) * c.n_embd);
    } else {
      L.w_gate = b.matrix(p + "ffn_gate.weight", c.n_embd, c.n_ff);
      L.w_up = b.matrix(p + "ffn_up.weight", c.n_embd, c.n_ff);
      L.w_down = b.matrix(p + "ffn_down.weight", c.n_ff, c.n_embd);
    }
  }
  return w;
}

}  // namespace strata
