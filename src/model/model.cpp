#include "model/model.h"

#include "model/architectures.h"
#include "model/blocks.h"

namespace strata {

std::unique_ptr<Model> Model::load(const std::string& path) {
  auto m = std::unique_ptr<Model>(new Model());
  m->file_ = gguf::File::open(path);
  m->config_ = load_config(*m->file_);
  // Binding copies the small tensors (norms, biases) scattered through the file: read just their
  // pages, not megabytes of read-ahead around each (weights the budget may stream, never use).
  m->file_->advise_random_access(true);
  m->weights_ = bind_weights(*m->file_, m->config_);
  m->file_->advise_random_access(false);
  return m;
}

void Model::forward(ForwardPass& pass) const { architecture(config_.arch).forward(pass); }

double Model::weight_bytes_per_token() const {
  const ModelConfig& c = config_;
  auto bytes = [](const WeightView& w) { return w.empty() ? 0.0 : double(w.row_bytes) * double(w.n_rows); };
  double total = bytes(weights_.output) + double(weights_.token_embd.row_bytes);  // one embedding row
  for (const LayerWeights& L : weights_.layers) {
    total += bytes(L.wq) + bytes(L.wk) + bytes(L.wv) + bytes(L.wo);
    total += bytes(L.w_gate) + bytes(L.w_up) + bytes(L.w_down) + bytes(L.router);
    total += bytes(L.w_gate_shexp) + bytes(L.w_up_shexp) + bytes(L.w_down_shexp) + bytes(L.shexp_gate_inp);
    total += bytes(L.ssm_qkv) + bytes(L.ssm_z) + bytes(L.ssm_beta) + bytes(L.ssm_alpha) + bytes(L.ssm_out);
    if (c.n_expert > 0)
      total += (bytes(L.gate_exps) + bytes(L.up_exps) + bytes(L.down_exps)) * c.n_expert_used / c.n_expert;
  }
  return total;
}

}  // namespace strata
