#pragma once
// The tensors of an architecture, named and shaped as llama.cpp's loader expects them.
#include <cstdint>
#include <string>
#include <vector>

#include "forge/presets.h"
#include "model/config.h"

namespace strata::forge {

enum class TensorKind {
  embedding,  // token_embd: requested type
  output,     // output head: requested type (Q6_K in the Q4_K_M mixture)
  matrix,     // projections and experts: requested type
  router,     // ffn_gate_inp: F32, as llama.cpp's quantizer keeps it
  norm,       // F32, values near 1
  bias,       // F32, values near 0
};

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;  // ne[0] first
  TensorKind kind = TensorKind::matrix;
  int layer = -1;              // -1: not in a block
  int64_t n_elements() const;
};

// The model config a forge of these hyperparameters describes (what the catalogue reads).
ModelConfig model_config(const Hparams& h);
// In file order: token_embd, blk.0.* ... blk.{n-1}.*, output_norm, output.
std::vector<TensorSpec> tensor_list(const Hparams& h);

}  // namespace strata::forge
