// The planner's search (DESIGN §2): for each prefetch depth whose pool fits, solve the LP
// relaxation (lp.cpp), round it to whole units two ways (rounding.cpp), judge each with the cost
// model (cost_model.cpp) and keep the fastest; deepen the pool with what bytes are left; carry
// the decision back onto the tensors (units.cpp). Unit extraction and the engine's allocations
// (memory.cpp) are the inputs.
#include <algorithm>
#include <string>

#include "tier/plan/cost_model.h"
#include "tier/plan/lp.h"
#include "tier/plan/plan.h"
#include "tier/plan/rounding.h"
#include "tier/plan/three_tier.h"
#include "tier/plan/units.h"
#include "util/error.h"

namespace strata::tier {

const char* placement_name(Placement p) {
  switch (p) {
    case Placement::resident:
      return "resident";
    case Placement::streamed:
      return "streamed";
    case Placement::mapped:
      return "mapped";
  }
  return "?";
}

const char* limit_name(Limit limit) {
  switch (limit) {
    case Limit::ram_bandwidth:
      return "RAM bandwidth";
    case Limit::compute:
      return "compute";
    case Limit::ssd_bandwidth:
      return "SSD bandwidth";
    case Limit::ssd_expert_misses:
      return "SSD reads of unpredicted expert misses";
    case Limit::vram_bandwidth:
      return "VRAM bandwidth";
    case Limit::pcie_bandwidth:
      return "PCIe";
    case Limit::gpu_compute:
      return "GPU compute";
    case Limit::cpu_compute:
      return "CPU compute";
  }
  return "?";
}

namespace {

// PlanInputs::kv_type_auto: the widest cache type whose plan keeps every weight resident, else
// the narrowest (types the head size does not allow are skipped).
DType choose_kv_type(const UnitTable& table, const ModelConfig& config, const PlanInputs& in) {
  uint64_t rest = table.mandatory_bytes + scratch_bytes(config, in.n_ctx, in.n_batch, in.n_threads);
  for (const PlanUnit& u : table.units) rest += u.n_bytes;
  DType narrowest = DType::F16;
  for (DType t : {DType::F16, DType::Q8_0, DType::Q4_0}) {
    uint64_t kv = 0;
    try {
      kv = kv_cache_bytes(config, in.n_ctx, in.n_batch, t);
    } catch (const Error&) {
      continue;
    }
    if (rest + kv <= in.budget_bytes) return t;
    narrowest = t;
  }
  return narrowest;
}

Plan solve(std::span<const gguf::TensorInfo> tensors, const ModelConfig& config, const PlanInputs& inputs,
           uint64_t file_bytes) {
  Plan plan;
  plan.file_bytes = file_bytes;
  plan.inputs = inputs;
  if (plan.inputs.budget_bytes == 0) plan.inputs.budget_bytes = detect_memory_budget();
  plan.inputs.max_prefetch_depth = std::max(1, plan.inputs.max_prefetch_depth);
  if (plan.inputs.n_ctx <= 0 || plan.inputs.n_batch <= 0) throw Error("plan: context and batch must be positive");
  if (config.n_ctx_train > 0)
    plan.inputs.n_ctx = std::min(plan.inputs.n_ctx, config.n_ctx_train);   // as the session does
  plan.inputs.n_batch = std::min(plan.inputs.n_batch, plan.inputs.n_ctx);  // a batch never exceeds the context
  plan.config = config;
  plan.table.assign(tensors.begin(), tensors.end());
  const PlanInputs& in = plan.inputs;

  // --- inputs: the units, what the engine allocates, the prices
  UnitTable table = extract_units(tensors, config, in.expert_probability, file_bytes);
  plan.model_bytes = table.model_bytes;
  plan.mandatory_bytes = table.mandatory_bytes;
  plan.mapped_bytes = table.mapped_bytes;
  if (in.kv_type_auto) plan.inputs.kv_type = choose_kv_type(table, config, in);
  plan.kv_bytes = kv_cache_bytes(config, in.n_ctx, in.n_batch, in.kv_type);
  plan.scratch_bytes = scratch_bytes(config, in.n_ctx, in.n_batch, in.n_threads);
  if (in.uses_gpu()) {  // three tiers and two processors (three_tier.cpp)
    plan_three_tiers(plan, table);
    return plan;
  }
  const CostModel cost = make_cost_model(table, in, plan.kv_bytes);
  std::vector<PlanUnit>& units = table.units;
  const double budget = double(in.budget_bytes);
  const uint64_t fixed = plan.mandatory_bytes + plan.kv_bytes + plan.scratch_bytes;

  uint64_t units_bytes = 0;
  const uint64_t dense_slot = table.dense_piece_bytes, expert_slot = table.expert_slot_bytes;
  bool any_dense = false, any_experts = false;
  for (const auto& u : units) {
    units_bytes += u.n_bytes;
    (u.kind == UnitKind::dense_ffn ? any_dense : any_experts) = true;
  }
  plan.minimum_bytes =
      fixed + (any_dense ? 2 * dense_slot : 0) + (any_experts ? expert_slot * uint64_t(std::max(1, table.k)) : 0);
  if (units_bytes == 0) plan.minimum_bytes = fixed;

  // --- placement and pool
  std::vector<bool> resident(units.size(), true);
  PlanPool pool;
  PlanPrediction best;
  double lp_seconds = 0;
  std::string solver_status;
  // Everything fits: the plain mapping serves every weight, experts included, with no slots.
  const bool fits = double(fixed + units_bytes) <= budget;
  if (fits) {
    best = predict(cost, resident, true, 0);
    lp_seconds = best.seconds_per_token;
    solver_status = "not needed: everything fits";
  } else {
    if (budget < double(plan.minimum_bytes)) {
      throw Error("plan: memory budget " + format_bytes(budget) + " is below the minimum of " +
                  format_bytes(double(plan.minimum_bytes)) + " (" + format_bytes(double(plan.mandatory_bytes)) +
                  " attention, norms, router and output head, always resident; " + format_bytes(double(plan.kv_bytes)) +
                  " KV cache for " + std::to_string(in.n_ctx) + " tokens; " + format_bytes(double(plan.scratch_bytes)) +
                  " scratch" +
                  (any_dense ? "; two " + format_bytes(double(dense_slot)) + " streaming pieces of FFN rows" : "") +
                  (any_experts ? "; " + std::to_string(std::max(1, table.k)) + " streaming slots of " +
                                     format_bytes(double(expert_slot)) + " for the experts of a token"
                               : "") +
                  "); the model is " + format_bytes(double(plan.model_bytes)));
    }
    bool have = false;
    const int all_pieces = streamed_pieces(table, std::vector<bool>(units.size(), false));
    // Bytes too few for another unit still buy read-ahead, and expert slots that cache (lfu):
    // deepen the pool while they last. Each candidate is judged deepened, since its pool's
    // expert slots hold experts too.
    auto deepen = [&](PlanPool pool, const std::vector<bool>& cand) {
      if (pool.prefetch_depth == 0) return pool;
      double left = budget - double(fixed + pool.pool_bytes);
      for (size_t i = 0; i < cand.size(); ++i)
        if (cand[i]) left -= double(units[i].memory_bytes);
      const int dense_pieces = streamed_pieces(table, cand);
      const bool experts_streamed = pool.n_expert_slots > 0;
      while (pool.prefetch_depth < in.max_prefetch_depth) {
        const PlanPool deeper =
            pool_shape(pool.prefetch_depth + 1, dense_pieces, experts_streamed, dense_slot, expert_slot, table.k);
        if (double(deeper.pool_bytes - pool.pool_bytes) > left) break;
        left -= double(deeper.pool_bytes - pool.pool_bytes);
        pool = deeper;
      }
      return pool;
    };
    for (int depth = 1; depth <= std::min(2, in.max_prefetch_depth); ++depth) {
      const PlanPool shape = pool_shape(depth, all_pieces, any_experts, dense_slot, expert_slot, table.k);
      if (double(fixed + shape.pool_bytes) > budget) break;
      const double free_bytes = budget - double(fixed + shape.pool_bytes);
      const bool overlap = depth >= 2;
      const LpSolution lp = solve_relaxation(cost, free_bytes, overlap);
      // The pool's expert slots are cache too (lfu, cost_model.h): a relaxation that may fill
      // them is the lower bound of every rounding's prediction (the one above places the units).
      const double pool_expert_bytes = double(shape.n_expert_slots) * double(expert_slot);
      const double bound =
          pool_expert_bytes > 0 ? solve_relaxation(cost, free_bytes + pool_expert_bytes, overlap).seconds : lp.seconds;
      // Two roundings: from the LP's whole units, and by probability alone.
      for (const std::vector<double>* cand_lp : {&lp.x, static_cast<const std::vector<double>*>(nullptr)}) {
        std::vector<bool> cand = round_units(units, cand_lp, free_bytes);
        // Slots for a type that ended fully resident are not needed: give their bytes to units.
        bool experts_streamed = false;
        for (size_t i = 0; i < cand.size(); ++i)
          if (!cand[i] && units[i].kind == UnitKind::expert) experts_streamed = true;
        const PlanPool used =
            pool_shape(depth, streamed_pieces(table, cand), experts_streamed, dense_slot, expert_slot, table.k);
        if (used.pool_bytes < shape.pool_bytes)
          add_units_that_fit(units, cand, budget - double(fixed + used.pool_bytes));
        const PlanPool deep = deepen(used, cand);
        const PlanPrediction ev = predict(cost, cand, deep.prefetch_depth >= 2, deep.n_expert_slots);
        if (!have || ev.seconds_per_token < best.seconds_per_token * (1 - 1e-9)) {
          have = true;
          best = ev;
          resident = cand;
          pool = deep;
          lp_seconds = bound;
          solver_status = "CLP " + lp.status;
          for (size_t i = 0; i < units.size(); ++i) units[i].lp_fraction = lp.x[i];
        }
      }
    }
  }

  // --- the plan: pool, prediction, placement in detail
  static_cast<PlanPool&>(plan) = pool;
  plan.dense_slot_bytes = dense_slot;  // what a slot would take, streamed or not
  plan.expert_slot_bytes = expert_slot;
  static_cast<PlanPrediction&>(plan) = best;
  plan.lp_seconds_per_token = lp_seconds;
  plan.solver_status = solver_status;
  for (size_t i = 0; i < units.size(); ++i) {
    units[i].resident = resident[i];
    units[i].tier = resident[i] ? Tier::host : Tier::ssd;
  }
  plan.units = std::move(units);
  plan.tensors = std::move(table.tensors);
  place_tensors(config, plan.mandatory_bytes, fits, plan);
  plan.used_bytes = plan.resident_weight_bytes + plan.kv_bytes + plan.scratch_bytes + plan.pool_bytes;
  return plan;
}

}  // namespace

Plan make_plan(const gguf::File& file, const ModelConfig& config, const PlanInputs& inputs) {
  return solve(file.tensors(), config, inputs, file.file_size());
}

Plan make_plan(std::span<const gguf::TensorInfo> tensors, const ModelConfig& config, const PlanInputs& inputs) {
  return solve(tensors, config, inputs, 0);
}

Plan revise(const Plan& plan, const std::vector<std::vector<double>>& expert_counts) {
  const ModelConfig& c = plan.config;
  if (c.n_expert <= 0) return solve(plan.table, c, plan.inputs, plan.file_bytes);
  if (expert_counts.size() != size_t(c.n_layer))
    throw Error("plan revise: expert counts for " + std::to_string(expert_counts.size()) + " layers, the model has " +
                std::to_string(c.n_layer));
  PlanInputs in = plan.inputs;
  in.expert_probability.assign(size_t(c.n_layer), std::vector<double>(size_t(c.n_expert), 0.0));
  const double k = c.n_expert_used, prior = k / c.n_expert;
  for (size_t l = 0; l < expert_counts.size(); ++l) {
    const auto& counts = expert_counts[l];
    if (counts.size() != size_t(c.n_expert))
      throw Error("plan revise: layer " + std::to_string(l) + " has " + std::to_string(counts.size()) +
                  " expert counts, expected " + std::to_string(c.n_expert));
    double total = 0;
    for (double v : counts) total += std::max(0.0, v);
    for (size_t e = 0; e < counts.size(); ++e) {
      // One pseudo-count per expert keeps a barely observed layer near the prior.
      in.expert_probability[l][e] =
          total > 0 ? std::min(1.0, k * (std::max(0.0, counts[e]) + 1.0) / (total + c.n_expert)) : prior;
    }
  }
  return solve(plan.table, c, in, plan.file_bytes);
}

}  // namespace strata::tier
