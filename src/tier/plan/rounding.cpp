// Rounding and pool shapes (rounding.h).
#include "tier/plan/rounding.h"

#include <algorithm>
#include <numeric>

#include "tier/stream/dense_ffn_streamer.h"

namespace strata::tier {

std::vector<bool> round_units(const std::vector<PlanUnit>& units, const std::vector<double>* lp, double free_bytes) {
  std::vector<bool> resident(units.size(), false);
  double left = free_bytes;
  std::vector<size_t> order(units.size());
  std::iota(order.begin(), order.end(), size_t(0));
  if (lp) {
    for (size_t i : order) {
      if ((*lp)[i] >= 1 - 1e-7 && double(units[i].memory_bytes) <= left) {
        resident[i] = true;
        left -= double(units[i].memory_bytes);
      }
    }
  }
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (units[a].probability != units[b].probability) return units[a].probability > units[b].probability;
    if (lp && (*lp)[a] != (*lp)[b]) return (*lp)[a] > (*lp)[b];
    return false;
  });
  for (size_t i : order) {
    if (!resident[i] && double(units[i].memory_bytes) <= left) {
      resident[i] = true;
      left -= double(units[i].memory_bytes);
    }
  }
  return resident;
}

void add_units_that_fit(const std::vector<PlanUnit>& units, std::vector<bool>& resident, double left) {
  for (size_t i = 0; i < resident.size(); ++i)
    if (resident[i]) left -= double(units[i].memory_bytes);
  for (size_t i = 0; i < resident.size(); ++i)
    if (!resident[i] && double(units[i].memory_bytes) <= left)
      resident[i] = true, left -= double(units[i].memory_bytes);
}

int streamed_pieces(const UnitTable& table, const std::vector<bool>& resident) {
  int n = 0;
  for (size_t i = 0; i < resident.size(); ++i)
    if (!resident[i]) n += table.unit_pieces[i];
  return n;
}

PlanPool pool_shape(int depth, int dense_pieces, bool experts, uint64_t dense_slot, uint64_t expert_slot, int k) {
  PlanPool s;
  const bool dense = dense_pieces > 0;
  s.dense_slot_bytes = dense_slot;
  s.expert_slot_bytes = expert_slot;
  s.prefetch_depth = (dense || experts) ? depth : 0;
  if (dense) s.n_dense_slots = std::max(2, std::min(dense_pieces, dense_ring_pieces(depth)));
  if (experts) s.n_expert_slots = depth * std::max(1, k);
  // The ring the dense streamer allocates for these pieces (a piece's slot covers its aligned read).
  const uint64_t ring = dense ? DenseFfnStreamer::ring_bytes_for(size_t(s.n_dense_slots) * dense_slot, dense_slot) : 0;
  s.pool_bytes = ring + uint64_t(s.n_expert_slots) * expert_slot;
  return s;
}

}  // namespace strata::tier
