#include "forge/tensors.h"

#include "model/architectures.h"
#include "model/catalogue.h"
#include "util/error.h"

namespace strata::forge {

int64_t TensorSpec::n_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

ModelConfig model_config(const Hparams& h) {
  ModelConfig c;
  apply_traits(require_architecture(arch_name(h.arch), "forge"), c);
  c.arch_name = arch_name(h.arch);
  c.n_layer = h.n_layer;
  c.n_embd = h.n_embd;
  c.n_head = h.n_head;
  c.n_head_kv = h.n_head_kv;
  c.head_dim_k = c.head_dim_v = h.head_dim;
  c.n_rot = h.rot_dims();
  c.n_ff = h.n_ff;
  c.n_vocab = h.n_vocab;
  c.n_ctx_train = h.n_ctx;
  c.n_expert = h.n_expert;
  c.n_expert_used = h.n_expert_used;
  c.n_ff_expert = h.expert_ff();
  c.n_ff_shexp = h.n_ff_shexp > 0 ? h.n_ff_shexp : h.n_ff;
  c.layer_swa.assign(size_t(h.n_layer), false);
  c.layer_recurrent.assign(size_t(h.n_layer), false);
  if (h.is_hybrid()) {
    c.ssm_d_conv = h.ssm_d_conv;
    c.ssm_d_state = h.ssm_d_state;
    c.ssm_n_group = h.ssm_n_group;
    c.ssm_dt_rank = h.ssm_dt_rank;
    c.ssm_d_inner = h.ssm_d_state * h.ssm_dt_rank;
    // As configure_qwen35 reads full_attention_interval: every interval-th layer is full attention.
    for (int l = 0; l < h.n_layer; ++l) c.layer_recurrent[size_t(l)] = (l + 1) % h.full_attn_interval != 0;
  }
  return c;
}

std::vector<TensorSpec> tensor_list(const Hparams& h) {
  if (h.n_vocab <= 0) throw Error("forge: n_vocab is not set (no tokenizer loaded)");
  std::vector<TensorSpec> t;
  for (const ExpectedTensor& e : expected_tensors(model_config(h))) {
    // Optional tensors: the output head unless tied; never rope_freqs.
    if (!e.required && !(e.entry->role == TensorRole::output && !h.tied_output)) continue;
    TensorKind kind = TensorKind::matrix;
    switch (e.entry->role) {
      case TensorRole::embedding: kind = TensorKind::embedding; break;
      case TensorRole::output: kind = TensorKind::output; break;
      case TensorRole::norm: kind = TensorKind::norm; break;
      case TensorRole::router: kind = TensorKind::router; break;
      default: kind = e.entry->is_vector ? TensorKind::bias : TensorKind::matrix; break;
    }
    t.push_back({e.name, e.shape(), kind, e.layer});
  }
  return t;
}

}  // namespace strata::forge
