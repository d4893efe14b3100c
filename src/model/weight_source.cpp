#include "model/weight_source.h"

#include "util/error.h"

namespace strata {

ResidentWeights::ResidentWeights(const ModelConfig& config, const ModelWeights& weights)
    : config_(config), weights_(weights) {}

void ResidentWeights::begin_matrix(int layer, FfnPart part) {
  matrix_ = &ffn_weight(weights_.layers[size_t(layer)], part);
  if (matrix_->empty())
    throw Error("layer " + std::to_string(layer) + " has no FFN matrix " + std::to_string(int(part)));
}

bool ResidentWeights::next_piece(WeightView& piece, int64_t& row0) {
  if (!matrix_) return false;
  piece = *matrix_;
  row0 = 0;
  matrix_ = nullptr;
  return true;
}

void ResidentWeights::begin_experts(int layer, const int32_t* experts, int n_experts, const int32_t*, int) {
  layer_ = layer;
  experts_ = experts;
  n_experts_ = n_experts;
  next_ = 0;
}

int ResidentWeights::next_expert(WeightView& gate, WeightView& up, WeightView& down) {
  if (next_ >= n_experts_) return -1;
  const int e = experts_[next_++];
  const LayerWeights& L = weights_.layers[size_t(layer_)];
  const int64_t ff = config_.n_ff_expert;
  gate = L.gate_exps.rows(e * ff, ff);
  up = L.up_exps.rows(e * ff, ff);
  down = L.down_exps.rows(int64_t(e) * config_.n_embd, config_.n_embd);
  return e;
}

}  // namespace strata
