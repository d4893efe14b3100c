// The planner with GPUs (three_tier.h): each GPU's fixed part, the host's, the LP, whole units
// (cores first, then VRAM, then host RAM, then the processor of each unit not in VRAM), the
// predictions, and the decision carried onto the tensors.
#include "tier/plan/three_tier.h"

#include <algorithm>
#include <array>
#include <numeric>
#include <string>

#include "model/catalogue.h"
#include "tier/plan/cost_model.h"
#include "tier/plan/lp.h"
#include "tier/plan/rounding.h"
#include "util/error.h"

namespace strata::tier {

namespace {

// Whole units: cores into their GPU's VRAM, then units into VRAM, then into host RAM, each in
// order of preference while they fit. guide: the LP, whose whole units go first in each step;
// null: a fixed order (cores by layer; units likelier first, then expert by expert across the
// layers), so that more memory only ever adds units.
template <class HostCost>
GpuAssignment round_units_three_tiers(const GpuCostModel& m, const GpuLpSolution* guide, std::vector<double> vram_left,
                                      double host_left, const HostCost& host_cost) {
  const std::vector<PlanUnit>& units = m.table->units;
  const int L = m.table->n_layer;
  GpuAssignment a;
  a.core_vram.assign(size_t(L), 0.0);
  a.vram.assign(units.size(), 0.0);
  a.host.assign(units.size(), 0.0);
  a.copy.assign(units.size(), 0.0);
  std::vector<int> layers(static_cast<size_t>(L));
  std::iota(layers.begin(), layers.end(), 0);
  if (guide)
    std::stable_sort(layers.begin(), layers.end(), [&](int x, int y) {
      return guide->x.core_vram[size_t(x)] > guide->x.core_vram[size_t(y)] + 1e-9;
    });
  for (int l : layers) {
    double& left = vram_left[size_t(m.layer_gpu[size_t(l)])];
    if (m.cores_in_session)
      a.core_vram[size_t(l)] = 1;  // in the session's bytes
    else if (m.core_bytes[size_t(l)] <= left)
      a.core_vram[size_t(l)] = 1, left -= m.core_bytes[size_t(l)];
  }
  const double free_host = host_left;
  int n_core_host = 0;
  for (int l = 0; l < L; ++l)
    if (a.core_vram[size_t(l)] < 1) host_left -= m.core_bytes[size_t(l)], ++n_core_host;
  if (host_left < 0)
    throw Error("plan: host memory cannot hold the attention, norms and router of the " + std::to_string(n_core_host) +
                " layers that do not fit in VRAM (" + format_bytes(free_host - host_left) + " with their KV cache; " +
                format_bytes(free_host) + " free after scratch and pool)");
  std::vector<size_t> fixed(units.size());
  std::iota(fixed.begin(), fixed.end(), size_t(0));
  auto rank = [&](size_t i) { return units[i].kind == UnitKind::expert ? units[i].expert : units[i].part; };
  std::stable_sort(fixed.begin(), fixed.end(), [&](size_t x, size_t y) {
    if (units[x].probability != units[y].probability) return units[x].probability > units[y].probability;
    if (rank(x) != rank(y)) return rank(x) < rank(y);
    return units[x].layer < units[y].layer;
  });
  auto order = [&](const std::vector<double>* lp) {
    if (!lp) return fixed;
    std::vector<size_t> o = fixed;
    std::stable_sort(o.begin(), o.end(),
                     [&](size_t x, size_t y) { return (*lp)[x] >= 1 - 1e-7 && (*lp)[y] < 1 - 1e-7; });
    return o;
  };
  for (size_t i : order(guide ? &guide->x.vram : nullptr)) {
    double& left = vram_left[size_t(m.layer_gpu[size_t(units[i].layer)])];
    if (m.vram_bytes(units[i]) <= left) a.vram[i] = 1, left -= m.vram_bytes(units[i]);
  }
  for (size_t i : order(guide ? &guide->x.host : nullptr)) {
    // A session's GPU tier keeps every routed expert in pinned host RAM too (its VRAM cache is lfu's
    // and reloads from there); elsewhere a unit in VRAM needs no host copy.
    if (a.vram[i] >= 1 && !(m.cores_in_session && units[i].kind == UnitKind::expert)) continue;
    if (host_cost(units[i]) <= host_left) a.host[i] = 1, host_left -= host_cost(units[i]);
  }
  return a;
}

constexpr double kMinCopyShare = 0.01;

// Per layer, the share of the host-side units' work (those not in VRAM) that the GPU does after
// a copy, the CPU doing the rest: the runtime splits each token's routed misses between the two,
// so the share is continuous. The layer takes max(gpu + share * copied work on the GPU,
// (1 - share) * cpu, share * pcie): the falling term meets the larger rising one.
void choose_processors(const GpuCostModel& m, GpuAssignment& a) {
  const UnitTable& t = *m.table;
  const size_t L = size_t(t.n_layer);
  std::vector<double> gpu(L, 0.0), gpu_host(L, 0.0), cpu(L, 0.0), pcie(L, 0.0);
  for (size_t i = 0; i < t.units.size(); ++i) {
    const PlanUnit& u = t.units[i];
    const size_t l = size_t(u.layer);
    const double on_gpu = u.probability * double(u.n_bytes) / m.gpu_bps(u.layer);
    if (a.vram[i] >= 1) {
      gpu[l] += on_gpu;
    } else {
      gpu_host[l] += on_gpu;
      cpu[l] += u.probability * m.cpu_s(double(u.n_bytes), t.unit_elems[i]);
      pcie[l] += u.probability * double(u.n_bytes) / m.pcie_bps(u.layer);
    }
  }
  std::vector<double> share(L, 0.0);
  for (size_t l = 0; l < L; ++l) {
    if (cpu[l] <= 0) continue;
    const double with_link = cpu[l] / (cpu[l] + pcie[l]);
    const double with_gpu = (cpu[l] - gpu[l]) / (cpu[l] + gpu_host[l]);
    share[l] = std::clamp(std::min(with_link, with_gpu), 0.0, 1.0);
    if (share[l] < kMinCopyShare) share[l] = 0;  // saves under 1% of the CPU's time: not worth a copy stream
  }
  for (size_t i = 0; i < t.units.size(); ++i) a.copy[i] = a.vram[i] >= 1 ? 0.0 : share[size_t(t.units[i].layer)];
}

// A processor for each host-side unit, for the runtime's default: in each layer the likelier and
// larger units go to the GPU until the copied bytes reach the layer's share.
std::vector<Processor> unit_processors(const GpuCostModel& m, const GpuAssignment& a) {
  const UnitTable& t = *m.table;
  std::vector<Processor> out(t.units.size(), Processor::gpu);
  std::vector<std::vector<size_t>> host_side(static_cast<size_t>(t.n_layer));
  std::vector<double> total(static_cast<size_t>(t.n_layer), 0.0);
  for (size_t i = 0; i < t.units.size(); ++i)
    if (a.vram[i] < 1) {
      host_side[size_t(t.units[i].layer)].push_back(i);
      total[size_t(t.units[i].layer)] += t.units[i].probability * double(t.units[i].n_bytes);
    }
  for (size_t l = 0; l < host_side.size(); ++l) {
    auto& ids = host_side[l];
    auto weight = [&](size_t i) { return t.units[i].probability * double(t.units[i].n_bytes); };
    std::stable_sort(ids.begin(), ids.end(), [&](size_t x, size_t y) { return weight(x) > weight(y); });
    double copied = 0;
    for (size_t i : ids) {
      const double target = a.copy[i] * total[l];
      // Copy this one if that leaves the copied bytes nearer the target than not.
      const bool copy = std::abs(copied + weight(i) - target) < std::abs(copied - target);
      out[i] = copy ? Processor::gpu : Processor::cpu;
      if (copy) copied += weight(i);
    }
  }
  return out;
}

}  // namespace

void plan_three_tiers(Plan& plan, UnitTable& table) {
  const PlanInputs& in = plan.inputs;
  const ModelConfig& config = plan.config;
  const GpuCostModel cost = make_gpu_cost_model(table, in, plan.kv_bytes);
  std::vector<PlanUnit>& units = table.units;
  const int L = table.n_layer, k = std::max(1, table.k);
  const size_t n_gpu = in.gpus.size();

  // --- each GPU's fixed part: activations for a batch, buffers copies land in, the output head
  uint64_t largest_expert = 0;
  bool any_dense = false, any_experts = false;
  double units_bytes = 0, cores_bytes = 0;
  for (const auto& u : units) {
    (u.kind == UnitKind::dense_ffn ? any_dense : any_experts) = true;
    if (u.kind == UnitKind::expert) largest_expert = std::max(largest_expert, u.n_bytes);
    units_bytes += double(u.n_bytes);
  }
  for (double b : cost.core_bytes) cores_bytes += b;
  const uint64_t gpu_scratch = scratch_bytes(config, in.n_ctx, in.n_batch, 1);
  // Double-buffered: a token's k experts (or two pieces of a dense matrix) arrive while the
  // previous ones are computed; a prompt's waves use the same buffers.
  const uint64_t staging =
      (any_experts ? 2 * uint64_t(k) * largest_expert : 0) + (any_dense ? 2 * table.dense_piece_bytes : 0);
  std::vector<double> free_vram(n_gpu, 0.0);
  plan.gpus.clear();
  for (size_t g = 0; g < n_gpu; ++g) {
    const GpuDevice& d = in.gpus[g];
    if (d.mem_bytes == 0) continue;
    GpuUse use;
    use.device = d.index;
    use.budget_bytes = d.mem_bytes;
    if (cost.cores_in_session) {
      if (int(g) != cost.head_gpu) continue;  // one session, on the first GPU: the others take no part
      // The session's bytes, then the expert tier's: staging for one expert per routed rank, two
      // per rank (a copy lands while the last one is computed) where the budget has them, and
      // cached experts in the rest, a slot each.
      const uint64_t slot = d.expert_slot_bytes > 0 ? d.expert_slot_bytes : largest_expert;
      const uint64_t one_each = uint64_t(k) * slot;
      use.session_bytes = d.session_bytes;
      use.minimum_bytes = d.session_bytes + (any_experts ? one_each : 0);
      if (d.mem_bytes < use.minimum_bytes)
        throw Error("plan: GPU " + std::to_string(d.index) + " memory budget " + format_bytes(double(d.mem_bytes)) +
                    " is below its minimum of " + format_bytes(double(use.minimum_bytes)) + " (" +
                    format_bytes(double(d.session_bytes)) +
                    " the session: weights without the routed experts, KV cache for " + std::to_string(in.n_ctx) +
                    " tokens, activations and scratch for a batch of " + std::to_string(in.n_batch) + "; " +
                    std::to_string(k) + " expert slots of " + format_bytes(double(slot)) +
                    " to copy into); pass a larger --gpu-mem");
      use.n_staging_slots = !any_experts ? 0 : d.mem_bytes >= d.session_bytes + 2 * one_each ? 2 * k : k;
      use.staging_bytes = uint64_t(use.n_staging_slots) * slot;
      free_vram[g] = double(d.mem_bytes - d.session_bytes - use.staging_bytes);
      use.first_layer = 0;
      use.n_layers = L;
      plan.gpus.push_back(use);
      continue;
    }
    use.scratch_bytes = gpu_scratch;
    use.staging_bytes = staging;
    const uint64_t head = int(g) == cost.head_gpu ? uint64_t(cost.head_bytes) : 0;
    use.minimum_bytes = gpu_scratch + staging + head;
    if (d.mem_bytes < use.minimum_bytes)
      throw Error("plan: GPU " + std::to_string(d.index) + " memory budget " + format_bytes(double(d.mem_bytes)) +
                  " is below its minimum of " + format_bytes(double(use.minimum_bytes)) + " (" +
                  format_bytes(double(gpu_scratch)) + " activations for a batch of " + std::to_string(in.n_batch) +
                  "; " + format_bytes(double(staging)) + " buffers for copies over PCIe" +
                  (head ? "; " + format_bytes(double(head)) + " output head" : "") +
                  "); pass a larger --gpu-mem, or --gpu-mem 0 for no GPU");
    free_vram[g] = double(d.mem_bytes - use.minimum_bytes);
    for (int l = 0; l < L; ++l)
      if (cost.layer_gpu[size_t(l)] == int(g)) {
        if (use.n_layers == 0) use.first_layer = l;
        ++use.n_layers;
      }
    plan.gpus.push_back(use);
  }

  // --- the host's fixed part (the CPU's scratch, and a streaming pool when the bytes do not fit
  // VRAM and host RAM together), the LP, whole units. Should whole units leave some on the SSD
  // where the bytes seemed to fit, once more with the pool.
  const double budget = double(in.budget_bytes);
  const double vram_total = std::accumulate(free_vram.begin(), free_vram.end(), 0.0);
  bool may_stream = units_bytes + cores_bytes > vram_total + budget - double(plan.scratch_bytes);
  const int all_pieces = streamed_pieces(table, std::vector<bool>(units.size(), false));
  // An expert held in host RAM takes a streamer slot while anything streams, its slice otherwise.
  // A session's GPU tier holds each in a slot of its arena (GpuDevice::expert_slot_bytes).
  auto host_cost = [&](const PlanUnit& u) {
    if (cost.cores_in_session && u.kind == UnitKind::expert) return cost.expert_slot_bytes;
    return double(may_stream ? u.memory_bytes : u.n_bytes);
  };
  PlanPool pool;
  GpuLpSolution lp;
  GpuAssignment a;
  for (;;) {
    pool = may_stream
               ? pool_shape(2, all_pieces, any_experts, table.dense_piece_bytes, table.expert_slot_bytes, table.k)
               : PlanPool{};
    plan.minimum_bytes = plan.scratch_bytes + pool.pool_bytes;
    if (budget < double(plan.minimum_bytes))
      throw Error("plan: host memory budget " + format_bytes(budget) + " is below the minimum of " +
                  format_bytes(double(plan.minimum_bytes)) + " (" + format_bytes(double(plan.scratch_bytes)) +
                  " scratch for " + std::to_string(in.n_threads) + " CPU threads" +
                  (pool.pool_bytes ? "; " + format_bytes(double(pool.pool_bytes)) + " streaming pool" : "") +
                  "); the model is " + format_bytes(double(plan.model_bytes)));
    const double free_host = budget - double(plan.minimum_bytes);
    lp = solve_gpu_relaxation(cost, free_vram, free_host);
    // Two roundings, judged by the cost model: a fixed order (likelier units first, spread over
    // the layers; more memory only ever adds units), and the LP's whole units first.
    bool have = false;
    double best = 0;
    const GpuLpSolution* const guides[] = {nullptr, &lp};
    for (const GpuLpSolution* guide : guides) {
      GpuAssignment cand = round_units_three_tiers(cost, guide, free_vram, free_host, host_cost);
      choose_processors(cost, cand);
      const double t = predict_generation(cost, cand).seconds;
      if (!have || t < best * (1 - 1e-9)) have = true, best = t, a = std::move(cand);
    }
    bool streams = false;
    for (size_t i = 0; i < units.size(); ++i) streams |= a.vram[i] + a.host[i] < 1;
    if (!streams || may_stream) break;
    may_stream = true;
  }
  bool experts_streamed = false;
  std::vector<bool> in_memory(units.size());
  for (size_t i = 0; i < units.size(); ++i) {
    in_memory[i] = a.vram[i] + a.host[i] >= 1;
    if (!in_memory[i] && units[i].kind == UnitKind::expert) experts_streamed = true;
  }
  const int streamed = streamed_pieces(table, in_memory);
  pool = streamed > 0 || experts_streamed
             ? pool_shape(2, streamed, experts_streamed, table.dense_piece_bytes, table.expert_slot_bytes, table.k)
             : PlanPool{};

  // --- predictions
  const GpuPrediction gen = predict_generation(cost, a);
  double copy_share = 0;
  const GpuPrediction prompt = best_prompt(cost, a, in.n_batch, &copy_share);

  // --- the plan
  static_cast<PlanPool&>(plan) = pool;
  plan.dense_slot_bytes = table.dense_piece_bytes;
  plan.expert_slot_bytes = table.expert_slot_bytes;
  plan.seconds_per_token = gen.seconds;
  plan.tokens_per_second = gen.seconds > 0 ? 1.0 / gen.seconds : 0.0;
  plan.limit = gen.limit;
  plan.ssd_bytes_per_token = gen.load.ssd_bytes;
  plan.ram_bytes_per_token = gen.load.ram_bytes;
  plan.lp_seconds_per_token = lp.seconds;
  plan.solver_status = "CLP " + lp.status + " (three tiers)";
  plan.generation = gen.load;
  plan.prompt = prompt.load;
  plan.prompt_limit = prompt.limit;
  plan.prompt_copy_share = copy_share;
  plan.prompt_tokens_per_second = prompt.seconds > 0 ? double(in.n_batch) / prompt.seconds : 0.0;

  plan.layers.assign(size_t(L), LayerPlacement{});
  for (int l = 0; l < L; ++l) {
    plan.layers[size_t(l)].layer = l;
    plan.layers[size_t(l)].device = a.core_vram[size_t(l)] >= 1 ? in.gpus[size_t(cost.layer_gpu[size_t(l)])].index : -1;
  }
  uint64_t host_units = 0;
  const std::vector<Processor> processors = unit_processors(cost, a);
  for (size_t i = 0; i < units.size(); ++i) {
    PlanUnit& u = units[i];
    const int gpu = in.gpus[size_t(cost.layer_gpu[size_t(u.layer)])].index;
    u.lp_vram = lp.x.vram[i];
    u.lp_fraction = lp.x.host[i];
    u.tier = a.vram[i] >= 1 ? Tier::vram : a.host[i] >= 1 ? Tier::host : Tier::ssd;
    u.compute = u.tier == Tier::vram ? Processor::gpu : processors[i];
    u.device = u.compute == Processor::gpu ? gpu : -1;
    u.resident = u.tier == Tier::host;  // place_tensors counts host RAM; VRAM is added below
    if (u.tier == Tier::host || (u.tier == Tier::vram && a.host[i] >= 1)) host_units += uint64_t(host_cost(u));
    LayerPlacement& lay = plan.layers[size_t(u.layer)];
    if (u.tier != Tier::vram) {
      (u.compute == Processor::gpu ? lay.n_units_gpu : lay.n_units_cpu) += 1;
    }
  }
  for (size_t i = 0; i < a.copy.size(); ++i)
    if (a.vram[i] < 1) plan.layers[size_t(units[i].layer)].copy_share = a.copy[i];

  // Host: the cores not in VRAM (with their KV) and the units pinned there.
  uint64_t host_core_bytes = 0;
  for (int l = 0; l < L; ++l)
    if (a.core_vram[size_t(l)] < 1) host_core_bytes += uint64_t(cost.core_bytes[size_t(l)]);
  plan.units = std::move(units);
  plan.tensors = std::move(table.tensors);
  place_tensors(config, 0, !may_stream, plan);
  plan.resident_weight_bytes = host_units;  // the host's weights: units here, cores below
  plan.streamed_weight_bytes = 0;
  plan.n_dense_resident = plan.n_expert_resident = 0;  // in memory, VRAM or host
  for (auto& u : plan.units) {
    if (u.tier == Tier::ssd) plan.streamed_weight_bytes += u.n_bytes;
    u.resident = u.tier != Tier::ssd;
    if (u.resident) ++(u.kind == UnitKind::expert ? plan.n_expert_resident : plan.n_dense_resident);
  }
  plan.host_pinned_bytes = host_units + plan.pool_bytes;

  // The tensors: tier and device of each, the experts in VRAM, and the roles by tier.
  std::vector<std::vector<int>> vram_experts(static_cast<size_t>(L));
  std::vector<std::array<Tier, kNumFfnParts>> dense_tier(static_cast<size_t>(L));
  for (const auto& u : plan.units) {
    if (u.kind == UnitKind::expert && u.tier == Tier::vram) vram_experts[size_t(u.layer)].push_back(u.expert);
    if (u.kind == UnitKind::dense_ffn) dense_tier[size_t(u.layer)][size_t(u.part)] = u.tier;
  }
  for (auto& g : plan.gpus)
    g.weight_bytes = g.device == in.gpus[size_t(cost.head_gpu)].index ? uint64_t(cost.head_bytes) : 0;
  auto use_of = [&](int device) -> GpuUse& {
    for (auto& g : plan.gpus)
      if (g.device == device) return g;
    return plan.gpus.front();
  };
  std::vector<RoleSummary> roles(size_t(TensorRole::other) + 1);
  for (size_t r = 0; r < roles.size(); ++r) roles[r].role = TensorRole(r);
  for (auto& t : plan.tensors) {
    RoleSummary& s = roles[size_t(t.role)];
    const int layer_gpu = t.layer >= 0 ? in.gpus[size_t(cost.layer_gpu[size_t(t.layer)])].index : -1;
    if (t.placement == Placement::mapped) {
      t.tier = Tier::ssd;
      s.mapped_bytes += t.n_bytes;
      continue;
    }
    if (t.role == TensorRole::experts) {
      t.vram_experts = vram_experts[size_t(t.layer)];
      t.device = t.vram_experts.empty() ? -1 : layer_gpu;
      const uint64_t vram = t.slice_bytes * t.vram_experts.size(), host = t.slice_bytes * t.resident_experts.size();
      t.placement = t.vram_experts.size() + t.resident_experts.size() == size_t(config.n_expert) ? Placement::resident
                                                                                                 : Placement::streamed;
      t.tier = t.vram_experts.size() == size_t(config.n_expert)       ? Tier::vram
               : t.resident_experts.empty() && t.vram_experts.empty() ? Tier::ssd
                                                                      : Tier::host;
      s.vram_bytes += vram, s.resident_bytes += host, s.streamed_bytes += t.n_bytes - vram - host;
      t.resident_bytes = host;
      if (t.device >= 0) use_of(t.device).weight_bytes += vram, use_of(t.device).expert_cache_bytes += vram;
      continue;
    }
    if (t.role == TensorRole::dense_ffn && t.layer >= 0 && tensor_ffn_part(t.name) >= 0 && t.n_bytes > 0) {
      t.tier = dense_tier[size_t(t.layer)][size_t(tensor_ffn_part(t.name))];
    } else if (t.layer >= 0) {  // a core tensor
      t.tier = a.core_vram[size_t(t.layer)] >= 1 ? Tier::vram : Tier::host;
    } else {  // output head, output norm, tied embedding: on the last layer's GPU
      t.tier = Tier::vram;
    }
    t.device = t.tier == Tier::vram ? (t.layer >= 0 ? layer_gpu : in.gpus[size_t(cost.head_gpu)].index) : -1;
    t.placement = t.tier == Tier::ssd ? Placement::streamed : Placement::resident;
    t.resident_bytes = t.tier == Tier::host ? t.n_bytes : 0;
    if (t.tier == Tier::vram) {
      s.vram_bytes += t.n_bytes;
      if (t.layer >= 0) use_of(t.device).weight_bytes += t.n_bytes;
    } else if (t.tier == Tier::host) {
      s.resident_bytes += t.n_bytes;
    } else {
      s.streamed_bytes += t.n_bytes;
    }
  }
  plan.roles.clear();
  for (const auto& s : roles)
    if (s.vram_bytes + s.resident_bytes + s.streamed_bytes + s.mapped_bytes > 0) plan.roles.push_back(s);
  plan.n_expert_cache = 0;
  plan.expert_cache_bytes = 0;
  for (const auto& u : plan.units)
    if (u.kind == UnitKind::expert && u.tier == Tier::host)
      ++plan.n_expert_cache, plan.expert_cache_bytes += uint64_t(host_cost(u));
  for (auto& g : plan.gpus) {
    for (int l = g.first_layer; l < g.first_layer + g.n_layers; ++l)
      if (a.core_vram[size_t(l)] >= 1) g.kv_bytes += uint64_t(cost.kv_layer_bytes[size_t(l)]);
    for (const auto& u : plan.units)
      if (u.tier == Tier::vram && u.device == g.device && u.kind == UnitKind::expert) ++g.n_expert_vram;
    g.used_bytes = g.weight_bytes + g.kv_bytes + g.scratch_bytes + g.staging_bytes;
    if (g.session_bytes > 0) {  // weights, KV and scratch are in the session's bytes; experts take slots
      g.expert_cache_bytes = uint64_t(g.n_expert_vram) * uint64_t(cost.expert_slot_bytes);
      g.used_bytes = g.session_bytes + g.expert_cache_bytes + g.staging_bytes;
    }
  }
  plan.resident_weight_bytes += host_core_bytes;  // with their KV: the host holds both
  plan.used_bytes = plan.resident_weight_bytes + plan.scratch_bytes + plan.pool_bytes;
}

}  // namespace strata::tier
