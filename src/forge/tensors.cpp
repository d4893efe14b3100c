#include "forge/tensors.h"

#include "util/error.h"

namespace strata::forge {

int64_t TensorSpec::n_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<TensorSpec> tensor_list(const Hparams& h) {
  if (h.n_vocab <= 0) throw Error("forge: n_vocab is not set (no tokenizer loaded)");
  const int64_t embd = h.n_embd, vocab = h.n_vocab, q = h.q_dim(), kv = h.kv_dim();
  const int64_t ff = h.n_ff, ff_exp = h.expert_ff(), n_exp = h.n_expert;
  const bool qk_norm = h.arch == ForgeArch::qwen3 || h.arch == ForgeArch::qwen3moe || h.arch == ForgeArch::gemma3;
  const bool qkv_bias = h.arch == ForgeArch::qwen2;
  const bool post_norms = h.arch == ForgeArch::gemma3;

  std::vector<TensorSpec> t;
  auto add = [&](std::string name, std::vector<int64_t> shape, TensorKind kind, int layer) {
    t.push_back({std::move(name), std::move(shape), kind, layer});
  };

  add("token_embd.weight", {embd, vocab}, TensorKind::embedding, -1);
  for (int l = 0; l < h.n_layer; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    add(b + "attn_norm.weight", {embd}, TensorKind::norm, l);
    add(b + "attn_q.weight", {embd, q}, TensorKind::matrix, l);
    if (qkv_bias) add(b + "attn_q.bias", {q}, TensorKind::bias, l);
    add(b + "attn_k.weight", {embd, kv}, TensorKind::matrix, l);
    if (qkv_bias) add(b + "attn_k.bias", {kv}, TensorKind::bias, l);
    add(b + "attn_v.weight", {embd, kv}, TensorKind::matrix, l);
    if (qkv_bias) add(b + "attn_v.bias", {kv}, TensorKind::bias, l);
    if (qk_norm) {
      add(b + "attn_q_norm.weight", {h.head_dim}, TensorKind::norm, l);
      add(b + "attn_k_norm.weight", {h.head_dim}, TensorKind::norm, l);
    }
    add(b + "attn_output.weight", {q, embd}, TensorKind::matrix, l);
    if (post_norms) add(b + "post_attention_norm.weight", {embd}, TensorKind::norm, l);
    add(b + "ffn_norm.weight", {embd}, TensorKind::norm, l);
    if (h.is_moe()) {
      // One expert = one contiguous [ne0, ne1] slice of each of the three 3-D tensors.
      add(b + "ffn_gate_inp.weight", {embd, n_exp}, TensorKind::router, l);
      add(b + "ffn_gate_exps.weight", {embd, ff_exp, n_exp}, TensorKind::matrix, l);
      add(b + "ffn_up_exps.weight", {embd, ff_exp, n_exp}, TensorKind::matrix, l);
      add(b + "ffn_down_exps.weight", {ff_exp, embd, n_exp}, TensorKind::matrix, l);
    } else {
      add(b + "ffn_gate.weight", {embd, ff}, TensorKind::matrix, l);
      add(b + "ffn_up.weight", {embd, ff}, TensorKind::matrix, l);
      add(b + "ffn_down.weight", {ff, embd}, TensorKind::matrix, l);
    }
    if (post_norms) add(b + "post_ffw_norm.weight", {embd}, TensorKind::norm, l);
  }
  add("output_norm.weight", {embd}, TensorKind::norm, -1);
  if (!h.tied_output) add("output.weight", {embd, vocab}, TensorKind::output, -1);
  return t;
}

}  // namespace strata::forge
