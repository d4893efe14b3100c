// The placement LP: minimise expected seconds per token over which units stay resident.
//
// Time model, per token (c_l: compute of layer l = bytes it touches / RAM bandwidth, or FLOPs /
// rate when that is larger; io: bytes streamed / SSD bandwidth, weighted by access probability):
//   prefetch depth 1 (one slot per streamed type: nothing is read ahead)
//     t_l = c_l + io_dense_l + io_experts_l
//   prefetch depth >= 2 (reads run ahead of compute into further slots)
//     t_l >= c_l,  t_l >= (1 - recall) * io_experts_l   (misses nobody predicted are read after
//                                                         routing, hidden only by hit experts)
//     sum_l t_l + head >= sum_l io_l + embedding rows    (the SSD is busy the whole token at most)
// Memory: sum_u bytes_u * x_u + mandatory + kv + scratch + pool <= budget.
// CLP solves the relaxation x_u in [0, 1] for each depth that fits; whole units are then chosen
// greedily (LP-integral units first, then by probability, i.e. seconds saved per byte) and the
// integral placement is evaluated with the same model. The best depth wins.
#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>
#include <string>

#include <coin/ClpSimplex.hpp>

#include "tier/plan/plan.h"
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
  }
  return "?";
}

int64_t stream_piece_rows(uint64_t row_bytes, int64_t n_rows, uint64_t piece_bytes) {
  constexpr uint64_t kPage = 4096;
  constexpr int64_t kRowBlock = 16;
  const uint64_t room = piece_bytes > 2 * kPage ? piece_bytes - 2 * kPage : piece_bytes;
  int64_t rows = std::max<int64_t>(1, int64_t(room / std::max<uint64_t>(1, row_bytes)));
  if (rows >= kRowBlock) rows = rows / kRowBlock * kRowBlock;
  return std::max<int64_t>(1, std::min(rows, n_rows));
}

TensorRole classify_tensor(std::string_view name, int* layer) {
  if (layer) *layer = -1;
  std::string_view base = name;
  if (base.ends_with(".weight"))
    base.remove_suffix(7);
  else if (base.ends_with(".bias"))
    base.remove_suffix(5);
  if (base.starts_with("blk.")) {
    std::string_view rest = base.substr(4);
    size_t dot = rest.find('.');
    if (dot == std::string_view::npos) return TensorRole::other;
    if (layer) {
      int l = 0;
      for (char c : rest.substr(0, dot)) {
        if (c < '0' || c > '9') return TensorRole::other;
        l = l * 10 + (c - '0');
      }
      *layer = l;
    }
    std::string_view part = rest.substr(dot + 1);
    if (part.find("norm") != std::string_view::npos) return TensorRole::norm;
    if (part.starts_with("ffn_gate_inp") || part.starts_with("exp_probs")) return TensorRole::router;
    if (part.find("_exps") != std::string_view::npos) return TensorRole::experts;
    if (part.starts_with("ffn_")) return TensorRole::dense_ffn;  // incl. shared experts (_shexp)
    if (part.starts_with("attn_")) return TensorRole::attention;
    return TensorRole::other;
  }
  if (base == "token_embd") return TensorRole::embedding;
  if (base == "output") return TensorRole::output;
  if (base.find("norm") != std::string_view::npos) return TensorRole::norm;
  return TensorRole::other;
}

namespace {

constexpr double kGB = 1e9;

// The dense FFN matrix a tensor is (blk.N.ffn_gate/up/down.weight), or -1 for any other.
int ffn_part_of(std::string_view name) {
  const size_t dot = name.find('.', 4);
  if (!name.starts_with("blk.") || dot == std::string_view::npos) return -1;
  const std::string_view part = name.substr(dot + 1);
  if (part == "ffn_gate.weight") return int(FfnPart::gate);
  if (part == "ffn_up.weight") return int(FfnPart::up);
  if (part == "ffn_down.weight") return int(FfnPart::down);
  return -1;
}

uint64_t tensor_row_bytes(const gguf::TensorInfo& t) { return t.n_bytes / uint64_t(std::max<int64_t>(1, t.n_rows())); }
// The largest read of one streamed piece of a matrix, and how many pieces it streams in.
uint64_t stream_piece_bytes(const gguf::TensorInfo& t) {
  const uint64_t rows = uint64_t(stream_piece_rows(tensor_row_bytes(t), t.n_rows()));
  return (rows * tensor_row_bytes(t) + 4095) / 4096 * 4096 + 4096;
}
int stream_pieces(const gguf::TensorInfo& t) {
  const int64_t rows = stream_piece_rows(tensor_row_bytes(t), t.n_rows());
  return int((std::max<int64_t>(1, t.n_rows()) + rows - 1) / rows);
}

// Everything the solver and the evaluation need, derived once from the table.
struct Problem {
  const PlanInputs* in = nullptr;
  int n_layer = 0;
  int k = 0;  // experts used per token
  std::vector<PlanUnit> units;
  std::vector<double> compute_ram_s;        // per layer: touched bytes / RAM bandwidth
  std::vector<double> compute_flops_s;      // per layer: FLOPs / rate (0 when no rate given)
  double head_ram_s = 0, head_flops_s = 0;  // output norm + head
  double embd_row_bytes = 0;                // read from the mapped file per token (untied)
  uint64_t dense_piece_bytes = 0;           // largest streamed piece of a dense FFN matrix
  std::vector<int> unit_pieces;             // per unit: pieces a dense matrix streams in (0: experts)
  double ram_bytes_per_token = 0;
  uint64_t mandatory_bytes = 0, mapped_bytes = 0, model_bytes = 0;

  double compute_s(int l) const { return std::max(compute_ram_s[size_t(l)], compute_flops_s[size_t(l)]); }
  double head_s() const { return std::max(head_ram_s, head_flops_s); }
  double io_s(const PlanUnit& u) const { return u.probability * double(u.n_bytes) / (in->ssd_gbps * kGB); }
};

struct Evaluation {
  double seconds = 0;
  double ssd_bytes = 0;
  Limit limit = Limit::ram_bandwidth;
};

Evaluation evaluate(const Problem& p, const std::vector<bool>& resident, bool overlap) {
  std::vector<double> io_dense(size_t(p.n_layer)), io_exp(size_t(p.n_layer));
  Evaluation ev;
  ev.ssd_bytes = p.embd_row_bytes;
  for (size_t i = 0; i < p.units.size(); ++i) {
    if (resident[i]) continue;
    const PlanUnit& u = p.units[i];
    (u.kind == UnitKind::expert ? io_exp : io_dense)[size_t(u.layer)] += p.io_s(u);
    ev.ssd_bytes += u.probability * double(u.n_bytes);
  }
  double ram = p.head_ram_s, flops = p.head_flops_s;
  for (int l = 0; l < p.n_layer; ++l) ram += p.compute_ram_s[size_t(l)], flops += p.compute_flops_s[size_t(l)];
  Limit compute_limit = flops > ram ? Limit::compute : Limit::ram_bandwidth;
  double io_total = ev.ssd_bytes / (p.in->ssd_gbps * kGB);
  double compute_total = p.head_s(), layers = p.head_s();
  double recall = std::clamp(p.in->expert_prefetch_recall, 0.0, 1.0);
  for (int l = 0; l < p.n_layer; ++l) {
    double c = p.compute_s(l);
    compute_total += c;
    if (overlap)
      layers += std::max(c, (1 - recall) * io_exp[size_t(l)]);
    else
      layers += c + io_dense[size_t(l)] + io_exp[size_t(l)];
  }
  if (!overlap) layers += p.embd_row_bytes / (p.in->ssd_gbps * kGB);
  ev.seconds = overlap ? std::max(layers, io_total) : layers;
  if (io_total <= 0 || io_total < 0.05 * compute_total)
    ev.limit = compute_limit;
  else if (!overlap)
    ev.limit = io_total >= compute_total ? Limit::ssd_bandwidth : compute_limit;
  else if (io_total >= layers)
    ev.limit = Limit::ssd_bandwidth;
  else if (layers - compute_total > 0.05 * compute_total)
    ev.limit = Limit::ssd_expert_misses;
  else
    ev.limit = compute_limit;
  return ev;
}

struct LpResult {
  std::vector<double> x;
  double seconds = 0;
  std::string status;
};

// The relaxation with `free_bytes` for units. Times in milliseconds and sizes in GB keep the
// coefficients near 1.
LpResult solve_lp(const Problem& p, double free_bytes, bool overlap) {
  const size_t n_units = p.units.size(), n_layer = size_t(p.n_layer);
  const size_t n_cols = n_units + n_layer;
  const double ms_per_byte = 1e3 / (p.in->ssd_gbps * kGB);
  const double recall = std::clamp(p.in->expert_prefetch_recall, 0.0, 1.0);
  // Rows: 0 budget; 1..L per layer; L+1 the SSD total (overlap only).
  const int row_budget = 0, row_total = int(n_layer) + 1;
  const size_t n_rows = overlap ? n_layer + 2 : n_layer + 1;
  std::vector<double> row_lo(n_rows, -COIN_DBL_MAX), row_hi(n_rows, COIN_DBL_MAX);
  row_hi[row_budget] = free_bytes / kGB;

  std::vector<std::vector<std::pair<int, double>>> cols(n_cols);
  std::vector<double> col_lo(n_cols, 0.0), col_hi(n_cols, 1.0), obj(n_cols, 0.0);
  std::vector<double> layer_rhs(n_layer, 0.0);
  double total_rhs = p.embd_row_bytes * ms_per_byte - p.head_s() * 1e3;
  double total_value = 0;
  for (const PlanUnit& u : p.units) total_value += u.probability * double(u.n_bytes) * ms_per_byte;
  for (size_t i = 0; i < n_units; ++i) {
    const PlanUnit& u = p.units[i];
    double io_ms = u.probability * double(u.n_bytes) * ms_per_byte;
    cols[i].push_back({row_budget, double(u.memory_bytes) / kGB});
    if (overlap) {
      if (u.kind == UnitKind::expert && recall < 1) {
        cols[i].push_back({1 + u.layer, (1 - recall) * io_ms});
        layer_rhs[size_t(u.layer)] += (1 - recall) * io_ms;
      }
      cols[i].push_back({row_total, io_ms});
      total_rhs += io_ms;
    } else {
      cols[i].push_back({1 + u.layer, io_ms});
      layer_rhs[size_t(u.layer)] += io_ms;
    }
    // A tie-break far below any real difference: among equal times, keep the likelier units.
    obj[i] = total_value > 0 ? -1e-7 * io_ms / total_value : 0;
  }
  for (size_t l = 0; l < n_layer; ++l) {
    size_t c = n_units + l;
    obj[c] = 1.0;
    col_hi[c] = COIN_DBL_MAX;
    double compute_ms = p.compute_s(int(l)) * 1e3;
    cols[c].push_back({int(1 + l), 1.0});
    if (overlap) {
      col_lo[c] = compute_ms;
      row_lo[1 + l] = layer_rhs[l];
      cols[c].push_back({row_total, 1.0});
    } else {
      row_lo[1 + l] = compute_ms + layer_rhs[l];
    }
  }
  if (overlap) row_lo[size_t(row_total)] = total_rhs;

  std::vector<CoinBigIndex> start{0};
  std::vector<int> index;
  std::vector<double> value;
  for (const auto& col : cols) {
    for (auto [r, v] : col) index.push_back(r), value.push_back(v);
    start.push_back(CoinBigIndex(index.size()));
  }
  ClpSimplex model;
  model.setLogLevel(0);
  model.loadProblem(int(n_cols), int(n_rows), start.data(), index.data(), value.data(), col_lo.data(), col_hi.data(),
                    obj.data(), row_lo.data(), row_hi.data());
  model.setOptimizationDirection(1);
  model.dual();
  LpResult r;
  if (!model.isProvenOptimal()) {
    model.primal();
  }
  r.status = model.isProvenOptimal() ? "optimal" : "status " + std::to_string(model.status());
  const double* sol = model.primalColumnSolution();
  r.x.assign(sol, sol + n_units);
  for (auto& v : r.x) v = std::clamp(v, 0.0, 1.0);
  double t = p.head_s();
  for (size_t l = 0; l < n_layer; ++l) t += sol[n_units + l] / 1e3;
  r.seconds = t;
  return r;
}

// Whole units within `free_bytes`: those the LP kept whole (when `lp` is given), then the rest by
// probability (seconds saved per byte), the LP's fraction and their order.
std::vector<bool> round_units(const Problem& p, const std::vector<double>* lp, double free_bytes) {
  std::vector<bool> resident(p.units.size(), false);
  double left = free_bytes;
  std::vector<size_t> order(p.units.size());
  std::iota(order.begin(), order.end(), size_t(0));
  if (lp) {
    for (size_t i : order) {
      if ((*lp)[i] >= 1 - 1e-7 && double(p.units[i].memory_bytes) <= left) {
        resident[i] = true;
        left -= double(p.units[i].memory_bytes);
      }
    }
  }
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (p.units[a].probability != p.units[b].probability) return p.units[a].probability > p.units[b].probability;
    if (lp && (*lp)[a] != (*lp)[b]) return (*lp)[a] > (*lp)[b];
    return false;
  });
  for (size_t i : order) {
    if (!resident[i] && double(p.units[i].memory_bytes) <= left) {
      resident[i] = true;
      left -= double(p.units[i].memory_bytes);
    }
  }
  return resident;
}

struct PoolShape {
  int depth = 0;
  int n_dense_slots = 0, n_expert_slots = 0;
  uint64_t bytes = 0;
};

// Depth d: dense, a ring of dense_ring_pieces(d), never more than the streamed matrices have
// (dense_pieces; 0: nothing dense streams); experts, k slots for the current layer's misses and
// k per layer read ahead (the expert cache is on top of these).
PoolShape pool_shape(int depth, int dense_pieces, bool experts, uint64_t dense_slot, uint64_t expert_slot, int k) {
  PoolShape s;
  const bool dense = dense_pieces > 0;
  s.depth = (dense || experts) ? depth : 0;
  if (dense) s.n_dense_slots = std::max(2, std::min(dense_pieces, dense_ring_pieces(depth)));
  if (experts) s.n_expert_slots = depth * std::max(1, k);
  s.bytes = uint64_t(s.n_dense_slots) * dense_slot + uint64_t(s.n_expert_slots) * expert_slot;
  return s;
}

Problem build_problem(std::span<const gguf::TensorInfo> tensors, const ModelConfig& config, const PlanInputs& in,
                      std::vector<TensorPlacement>& placements) {
  if (!(in.ram_gbps > 0) || !(in.ssd_gbps > 0)) throw Error("plan: bandwidths must be positive");
  Problem p;
  p.in = &in;
  p.n_layer = config.n_layer;
  p.k = config.n_expert_used;
  const size_t L = size_t(config.n_layer);
  std::vector<double> layer_bytes(L, 0.0), layer_elems(L, 0.0), expert_slice(L, 0.0);
  std::vector<double> expert_slice_elems(L, 0.0);
  std::vector<std::array<uint64_t, 3>> dense_bytes(L, {0, 0, 0});  // per FFN matrix
  std::vector<std::array<int, 3>> dense_pieces(L, {0, 0, 0});
  std::vector<bool> has_experts(L, false);
  // Expert tensors of each layer (file offset, slice bytes), for the slot an expert needs.
  std::vector<std::vector<std::pair<uint64_t, uint64_t>>> expert_tensors(L);
  bool tied = true;
  for (const auto& t : tensors)
    if (classify_tensor(t.name, nullptr) == TensorRole::output) tied = false;

  for (const auto& t : tensors) {
    int layer = -1;
    TensorPlacement tp;
    tp.name = t.name;
    tp.role = classify_tensor(t.name, &layer);
    tp.layer = layer;
    tp.n_bytes = t.n_bytes;
    tp.file_offset = t.file_offset;
    p.model_bytes += t.n_bytes;
    if (layer >= int(L))
      throw Error("plan: tensor " + t.name + " names layer " + std::to_string(layer) + " but the model has " +
                  std::to_string(L) + " layers");
    const size_t l = size_t(layer);
    switch (tp.role) {
      case TensorRole::embedding:
        if (tied) {
          tp.placement = Placement::resident;  // it is the output head too
          p.mandatory_bytes += t.n_bytes;
          p.head_ram_s += double(t.n_bytes) / (in.ram_gbps * kGB);
          p.head_flops_s += 2.0 * double(t.n_elements);
        } else {
          tp.placement = Placement::mapped;
          p.mapped_bytes += t.n_bytes;
          p.embd_row_bytes = double(t.n_bytes) / double(std::max<int64_t>(1, t.n_rows()));
        }
        break;
      case TensorRole::experts: {
        if (layer < 0 || config.n_expert <= 0)
          throw Error("plan: expert tensor " + t.name + " in a model without experts (expert_count 0)");
        if (t.shape.empty() || t.shape.back() != config.n_expert || t.n_bytes % uint64_t(config.n_expert) != 0)
          throw Error("plan: expert tensor " + t.name + ": last dimension " +
                      std::to_string(t.shape.empty() ? 0 : t.shape.back()) + ", expected expert_count " +
                      std::to_string(config.n_expert));
        tp.placement = Placement::streamed;
        tp.slice_bytes = t.n_bytes / uint64_t(config.n_expert);
        has_experts[l] = true;
        expert_slice[l] += double(tp.slice_bytes);
        expert_tensors[l].push_back({t.file_offset, tp.slice_bytes});
        expert_slice_elems[l] += double(t.n_elements) / config.n_expert;
        break;
      }
      case TensorRole::dense_ffn:
        // The gate/up/down matrices of a dense model stream; anything else of the FFN role
        // (shared experts of a MoE model, biases) stays resident with the mandatory set.
        if (config.n_expert == 0 && layer >= 0 && ffn_part_of(t.name) >= 0 && t.n_bytes > 0) {
          tp.placement = Placement::streamed;
          dense_bytes[l][size_t(ffn_part_of(t.name))] = t.n_bytes;
          dense_pieces[l][size_t(ffn_part_of(t.name))] = stream_pieces(t);
          p.dense_piece_bytes = std::max(p.dense_piece_bytes, stream_piece_bytes(t));
          layer_bytes[l] += double(t.n_bytes);
          layer_elems[l] += double(t.n_elements);
          break;
        }
        [[fallthrough]];
      default:  // attention, norms, router, output head, small tensors: every token, always resident
        tp.placement = Placement::resident;
        p.mandatory_bytes += t.n_bytes;
        if (layer >= 0) {
          layer_bytes[l] += double(t.n_bytes);
          layer_elems[l] += double(t.n_elements);
        } else if (tp.role == TensorRole::output || tp.role == TensorRole::norm) {
          p.head_ram_s += double(t.n_bytes) / (in.ram_gbps * kGB);
          p.head_flops_s += 2.0 * double(t.n_elements);
        }
        break;
    }
    placements.push_back(std::move(tp));
  }

  if (!in.expert_probability.empty() && in.expert_probability.size() != L)
    throw Error("plan: expert probabilities for " + std::to_string(in.expert_probability.size()) +
                " layers, the model has " + std::to_string(L));
  const double prior = config.n_expert > 0 ? double(config.n_expert_used) / config.n_expert : 0.0;
  const double flops_rate = in.compute_gflops > 0 ? in.compute_gflops * 1e9 : 0.0;
  const uint64_t kv_layer = L ? kv_cache_bytes(config, in.n_ctx) / L : 0;
  // A pinned expert takes a whole slot of the expert streamer: its layer's experts' aligned
  // ranges (in a Q4_K_M model some layers' experts are Q6_K and larger). Pool slots fit the
  // largest of any layer (the plan's expert_slot_bytes).
  std::vector<uint64_t> expert_slot(L, 0);
  for (size_t l = 0; l < L; ++l)
    for (int e = 0; e < config.n_expert; ++e) {
      uint64_t slot = 0;
      for (auto [offset, slice] : expert_tensors[l]) slot += direct_read_span(offset + uint64_t(e) * slice, slice);
      expert_slot[l] = std::max(expert_slot[l], slot);
    }
  p.compute_ram_s.assign(L, 0.0);
  p.compute_flops_s.assign(L, 0.0);
  for (size_t l = 0; l < L; ++l) {
    for (int part = 0; part < 3; ++part)
      if (dense_bytes[l][size_t(part)] > 0) {
        p.units.push_back({UnitKind::dense_ffn, int(l), -1, dense_bytes[l][size_t(part)], 1.0, 0.0, false, part});
        p.units.back().memory_bytes = dense_bytes[l][size_t(part)];
        p.unit_pieces.push_back(dense_pieces[l][size_t(part)]);
      }
    double expected_expert_bytes = 0, expected_expert_elems = 0;
    if (has_experts[l]) {
      for (int e = 0; e < config.n_expert; ++e) {
        double pe = prior;
        if (!in.expert_probability.empty()) {
          if (in.expert_probability[l].size() != size_t(config.n_expert))
            throw Error("plan: layer " + std::to_string(l) + " has " + std::to_string(in.expert_probability[l].size()) +
                        " expert probabilities, expected " + std::to_string(config.n_expert));
          pe = std::clamp(in.expert_probability[l][size_t(e)], 0.0, 1.0);
        }
        p.units.push_back({UnitKind::expert, int(l), e, uint64_t(expert_slice[l]), pe, 0.0, false});
        p.units.back().memory_bytes = expert_slot[l];
        p.unit_pieces.push_back(0);
        expected_expert_bytes += pe * expert_slice[l];
        expected_expert_elems += pe * expert_slice_elems[l];
      }
    }
    double touched = layer_bytes[l] + expected_expert_bytes + double(kv_layer);
    p.ram_bytes_per_token += touched;
    p.compute_ram_s[l] = touched / (in.ram_gbps * kGB);
    if (flops_rate > 0) p.compute_flops_s[l] = 2.0 * (layer_elems[l] + expected_expert_elems) / flops_rate;
  }
  p.ram_bytes_per_token += p.head_ram_s * in.ram_gbps * kGB;
  p.head_flops_s = flops_rate > 0 ? p.head_flops_s / flops_rate : 0.0;
  return p;
}

}  // namespace

Plan make_plan(const gguf::File& file, const ModelConfig& config, const PlanInputs& inputs) {
  return make_plan(file.tensors(), config, inputs);
}

Plan make_plan(std::span<const gguf::TensorInfo> tensors, const ModelConfig& config, const PlanInputs& inputs) {
  Plan plan;
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
  Problem p = build_problem(tensors, config, in, plan.tensors);

  plan.model_bytes = p.model_bytes;
  plan.mandatory_bytes = p.mandatory_bytes;
  plan.mapped_bytes = p.mapped_bytes;
  plan.kv_bytes = kv_cache_bytes(config, in.n_ctx);
  plan.scratch_bytes = scratch_bytes(config, in.n_ctx, in.n_batch);
  plan.ram_bytes_per_token = p.ram_bytes_per_token;
  const double budget = double(in.budget_bytes);
  const uint64_t fixed = plan.mandatory_bytes + plan.kv_bytes + plan.scratch_bytes;

  uint64_t units_bytes = 0, dense_slot = p.dense_piece_bytes, expert_slot = 0;
  bool any_dense = false, any_experts = false;
  for (const auto& u : p.units) {
    units_bytes += u.n_bytes;
    if (u.kind == UnitKind::dense_ffn)
      any_dense = true;
    else
      any_experts = true, expert_slot = std::max(expert_slot, u.memory_bytes);
  }
  plan.dense_slot_bytes = dense_slot;
  plan.expert_slot_bytes = expert_slot;
  plan.minimum_bytes =
      fixed + (any_dense ? 2 * dense_slot : 0) + (any_experts ? expert_slot * uint64_t(std::max(1, p.k)) : 0);
  if (units_bytes == 0) plan.minimum_bytes = fixed;

  // Pieces the dense matrices not resident in a placement stream in.
  auto streamed_pieces = [&](const std::vector<bool>& res) {
    int n = 0;
    for (size_t i = 0; i < res.size(); ++i)
      if (!res[i]) n += p.unit_pieces[i];
    return n;
  };
  std::vector<bool> resident(p.units.size(), true);
  PoolShape pool;
  Evaluation best;
  // Everything fits: the plain mapping serves every weight, experts included, with no slots.
  const bool fits = double(fixed + units_bytes) <= budget;
  if (fits) {
    best = evaluate(p, resident, true);
    plan.lp_seconds_per_token = best.seconds;
    plan.solver_status = "not needed: everything fits";
  } else {
    if (budget < double(plan.minimum_bytes)) {
      throw Error("plan: memory budget " + format_bytes(budget) + " is below the minimum of " +
                  format_bytes(double(plan.minimum_bytes)) + " (" + format_bytes(double(plan.mandatory_bytes)) +
                  " attention, norms, router and output head, always resident; " + format_bytes(double(plan.kv_bytes)) +
                  " KV cache for " + std::to_string(in.n_ctx) + " tokens; " + format_bytes(double(plan.scratch_bytes)) +
                  " scratch" +
                  (any_dense ? "; two " + format_bytes(double(dense_slot)) + " streaming pieces of FFN rows" : "") +
                  (any_experts ? "; " + std::to_string(std::max(1, p.k)) + " streaming slots of " +
                                     format_bytes(double(expert_slot)) + " for the experts of a token"
                               : "") +
                  "); the model is " + format_bytes(double(plan.model_bytes)));
    }
    bool have = false;
    for (int depth = 1; depth <= std::min(2, in.max_prefetch_depth); ++depth) {
      PoolShape shape = pool_shape(depth, streamed_pieces(std::vector<bool>(p.units.size(), false)), any_experts,
                                   dense_slot, expert_slot, p.k);
      if (double(fixed + shape.bytes) > budget) break;
      double free_bytes = budget - double(fixed + shape.bytes);
      bool overlap = depth >= 2;
      LpResult lp = solve_lp(p, free_bytes, overlap);
      for (const std::vector<double>* cand_lp :
           {static_cast<const std::vector<double>*>(&lp.x), static_cast<const std::vector<double>*>(nullptr)}) {
        std::vector<bool> cand = round_units(p, cand_lp, free_bytes);
        // Slots for a type that ended fully resident are not needed: give their bytes to units.
        bool experts_streamed = false;
        for (size_t i = 0; i < cand.size(); ++i)
          if (!cand[i] && p.units[i].kind == UnitKind::expert) experts_streamed = true;
        PoolShape used = pool_shape(depth, streamed_pieces(cand), experts_streamed, dense_slot, expert_slot, p.k);
        if (used.bytes < shape.bytes) {
          double left = budget - double(fixed + used.bytes);
          for (size_t i = 0; i < cand.size(); ++i)
            if (cand[i]) left -= double(p.units[i].memory_bytes);
          for (size_t i = 0; i < cand.size(); ++i)
            if (!cand[i] && double(p.units[i].memory_bytes) <= left)
              cand[i] = true, left -= double(p.units[i].memory_bytes);
        }
        Evaluation ev = evaluate(p, cand, overlap);
        if (!have || ev.seconds < best.seconds * (1 - 1e-9)) {
          have = true;
          best = ev;
          resident = cand;
          pool = used;
          plan.lp_seconds_per_token = lp.seconds;
          plan.solver_status = "CLP " + lp.status;
          for (size_t i = 0; i < p.units.size(); ++i) p.units[i].lp_fraction = lp.x[i];
        }
      }
    }
    // Bytes too few for another unit still buy read-ahead: deepen the pool while they last.
    if (pool.depth > 0) {
      double left = budget - double(fixed + pool.bytes);
      for (size_t i = 0; i < resident.size(); ++i)
        if (resident[i]) left -= double(p.units[i].memory_bytes);
      const int dense_pieces = streamed_pieces(resident);
      const bool experts_streamed = pool.n_expert_slots > 0;
      while (pool.depth < in.max_prefetch_depth) {
        PoolShape deeper = pool_shape(pool.depth + 1, dense_pieces, experts_streamed, dense_slot, expert_slot, p.k);
        if (double(deeper.bytes - pool.bytes) > left) break;
        left -= double(deeper.bytes - pool.bytes);
        pool = deeper;
      }
      best = evaluate(p, resident, pool.depth >= 2);
    }
  }

  // --- the placement in detail
  for (size_t i = 0; i < p.units.size(); ++i) p.units[i].resident = resident[i];
  plan.units = p.units;
  plan.prefetch_depth = pool.depth;
  plan.n_dense_slots = pool.n_dense_slots;
  plan.n_expert_slots = pool.n_expert_slots;
  plan.pool_bytes = pool.bytes;
  plan.seconds_per_token = best.seconds;
  plan.tokens_per_second = best.seconds > 0 ? 1.0 / best.seconds : 0.0;
  plan.ssd_bytes_per_token = best.ssd_bytes;
  plan.limit = best.limit;

  // Unit residency per (layer, expert), for the tensors.
  std::vector<std::array<bool, 3>> dense_res(size_t(config.n_layer), {false, false, false});
  std::vector<std::vector<int>> experts_res(size_t(config.n_layer));
  plan.resident_weight_bytes = plan.mandatory_bytes;
  for (const auto& u : plan.units) {
    if (u.kind == UnitKind::dense_ffn) {
      ++plan.n_dense_units;
      if (u.resident) dense_res[size_t(u.layer)][size_t(u.part)] = true, ++plan.n_dense_resident;
    } else {
      ++plan.n_expert_units;
      if (u.resident) {
        experts_res[size_t(u.layer)].push_back(u.expert);
        ++plan.n_expert_resident;
        plan.expert_cache_bytes += fits ? u.n_bytes : u.memory_bytes;
      }
    }
    if (u.resident)
      plan.resident_weight_bytes += fits ? u.n_bytes : u.memory_bytes;
    else
      plan.streamed_weight_bytes += u.n_bytes;
  }
  plan.n_expert_cache = plan.n_expert_resident;
  std::vector<RoleSummary> roles(size_t(TensorRole::other) + 1);
  for (size_t r = 0; r < roles.size(); ++r) roles[r].role = TensorRole(r);
  for (auto& t : plan.tensors) {
    if (t.role == TensorRole::dense_ffn && t.placement == Placement::streamed) {
      t.placement = dense_res[size_t(t.layer)][size_t(ffn_part_of(t.name))] ? Placement::resident : Placement::streamed;
    } else if (t.role == TensorRole::experts) {
      t.resident_experts = experts_res[size_t(t.layer)];
      t.placement = int(t.resident_experts.size()) == config.n_expert ? Placement::resident : Placement::streamed;
    }
    t.resident_bytes = t.role == TensorRole::experts        ? t.slice_bytes * t.resident_experts.size()
                       : t.placement == Placement::resident ? t.n_bytes
                                                            : 0;
    RoleSummary& s = roles[size_t(t.role)];
    if (t.placement == Placement::mapped)
      s.mapped_bytes += t.n_bytes;
    else
      s.resident_bytes += t.resident_bytes, s.streamed_bytes += t.n_bytes - t.resident_bytes;
  }
  for (const auto& s : roles)
    if (s.resident_bytes + s.streamed_bytes + s.mapped_bytes > 0) plan.roles.push_back(s);
  plan.used_bytes = plan.resident_weight_bytes + plan.kv_bytes + plan.scratch_bytes + plan.pool_bytes;
  return plan;
}

Plan revise(const Plan& plan, const std::vector<std::vector<double>>& expert_counts) {
  const ModelConfig& c = plan.config;
  if (c.n_expert <= 0) return make_plan(plan.table, c, plan.inputs);
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
  return make_plan(plan.table, c, in);
}

}  // namespace strata::tier
