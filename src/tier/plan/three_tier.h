#pragma once
// The planner with GPUs (DESIGN §1, §2; issue 14): three tiers (VRAM, pinned host RAM, SSD) and
// two processors. The three-tier LP (lp.cpp) decides per unit where its bytes live and, for what
// is not in VRAM, whether the CPU computes it where it is or the GPU after a copy; per layer
// whether attention, norms and router sit in VRAM; rounding here makes whole units of it, and
// the cost model (cost_model.cpp) predicts generation and prompt speeds of the result.
#include "tier/plan/plan.h"
#include "tier/plan/units.h"

namespace strata::tier {

// Fills every part of `plan` but the inputs, config and table (set by the caller, with kv_bytes,
// scratch_bytes, model_bytes, mandatory_bytes and mapped_bytes). `table` is consumed.
// Throws strata::Error when a GPU's memory or the host's is below its minimum (the message names
// the minimum and what it is made of).
void plan_three_tiers(Plan& plan, UnitTable& table);

}  // namespace strata::tier
