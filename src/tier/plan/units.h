#pragma once
// Unit extraction: the tensor table read once into the units of placement (each dense FFN
// matrix, each expert of a layer) and the bytes and weights every token touches, layer by layer.
// Nothing here knows a speed; the cost model prices what this finds.
#include <cstdint>
#include <span>
#include <vector>

#include "tier/plan/plan.h"

namespace strata::tier {

struct UnitTable {
  int n_layer = 0;
  int k = 0;  // experts used per token
  std::vector<PlanUnit> units;
  std::vector<int> unit_pieces;    // per unit: pieces a dense matrix streams in (0: experts)
  std::vector<double> unit_elems;  // per unit: weights (an expert: one slice of each matrix)
  // Per layer, the always-resident part alone (attention, norms, router: a GPU plan's core).
  std::vector<double> core_bytes, core_elems;
  // Per layer, read by every token: the always-resident tensors and the dense FFN matrices.
  std::vector<double> layer_bytes, layer_elems;
  // Per layer, expected per token: sum over experts of probability x slice.
  std::vector<double> expert_bytes, expert_elems;
  std::vector<double> head_bytes;  // output norm and head (or the tied embedding), in file order
  double head_flops = 0;           // 2 x their weights
  double embd_row_bytes = 0;       // read from the mapped file per token (untied)
  uint64_t dense_piece_bytes = 0;  // largest streamed piece of a dense FFN matrix
  uint64_t expert_slot_bytes = 0;  // largest slot an expert of any layer needs (ExpertStreamer's)
  uint64_t mandatory_bytes = 0, mapped_bytes = 0, model_bytes = 0;
  uint64_t nextn_bytes = 0;  // of model_bytes, the multi-token-prediction layers' (never read, not in tensors)
  std::vector<TensorPlacement> tensors;  // resident, mapped or (units) streamed, before any decision
};

// Throws strata::Error for a table that does not fit the config (a layer beyond n_layer, expert
// tensors without expert_count, probabilities of the wrong shape).
// file_bytes: the model file's size, where the last aligned read range ends (0: unknown).
UnitTable extract_units(std::span<const gguf::TensorInfo> tensors, const ModelConfig& config,
                        const std::vector<std::vector<double>>& expert_probability, uint64_t file_bytes);

// The decision (units[i].resident) carried back onto the tensors, their roles and the counts.
// `fits`: the plain mapping serves every weight, so a resident expert costs its slice, not a slot.
void place_tensors(const ModelConfig& config, uint64_t mandatory_bytes, bool fits, PlanPlacement& placement);

}  // namespace strata::tier
