#pragma once
// From the LP's fractions to a placement of whole units, and the streaming pool that placement
// needs at a prefetch depth.
#include <cstdint>
#include <vector>

#include "tier/plan/plan.h"
#include "tier/plan/units.h"

namespace strata::tier {

// Whole units within `free_bytes`: those the LP kept whole (when `lp` is given), then the rest by
// probability (seconds saved per byte), the LP's fraction and their order.
std::vector<bool> round_units(const std::vector<PlanUnit>& units, const std::vector<double>* lp, double free_bytes);

// Units not yet resident, in order, while their bytes fit in `left` (bytes a smaller pool freed).
void add_units_that_fit(const std::vector<PlanUnit>& units, std::vector<bool>& resident, double left);

// Pieces the dense matrices not resident stream in.
int streamed_pieces(const UnitTable& table, const std::vector<bool>& resident);

// The pool at prefetch depth d: dense, a ring of dense_ring_pieces(d), never more than the
// streamed matrices have (dense_pieces; 0: nothing dense streams); experts, k slots for the
// current layer's misses and k per layer read ahead (the expert cache is on top of these).
PlanPool pool_shape(int depth, int dense_pieces, bool experts, uint64_t dense_slot, uint64_t expert_slot, int k);

}  // namespace strata::tier
