// The placement LP (lp.h) for COIN-OR CLP. Rows: 0 the budget; 1..L one per layer; L+1 the SSD's
// total (overlap only). Columns: x_u per unit, then t_l per layer (the objective). Times in
// milliseconds and sizes in GB keep the coefficients near 1.
#include "tier/plan/lp.h"

#include <algorithm>
#include <utility>

#include <coin/ClpSimplex.hpp>

namespace strata::tier {

namespace {

// An LP built column by column: each column's (row, coefficient) entries, bounds and cost (columns
// in [0, 1] at no cost until set), and each row's bounds (free until set). Both LPs below are built
// this way and solved by solve() below.
struct ColumnLp {
  ColumnLp(size_t n_cols, size_t n_rows)
      : cols(n_cols), col_lo(n_cols, 0.0), col_hi(n_cols, 1.0), obj(n_cols, 0.0),
        row_lo(n_rows, -COIN_DBL_MAX), row_hi(n_rows, COIN_DBL_MAX) {}
  std::vector<std::vector<std::pair<int, double>>> cols;
  std::vector<double> col_lo, col_hi, obj;
  std::vector<double> row_lo, row_hi;
};

// Minimises: the dual simplex, then the primal where the dual proved nothing. The column values
// into `x`; returns "optimal", "infeasible" or the solver's status.
std::string solve(const ColumnLp& lp, std::vector<double>& x) {
  std::vector<CoinBigIndex> start{0};
  std::vector<int> index;
  std::vector<double> value;
  for (const auto& col : lp.cols) {
    for (auto [r, v] : col) index.push_back(r), value.push_back(v);
    start.push_back(CoinBigIndex(index.size()));
  }
  ClpSimplex model;
  model.setLogLevel(0);
  model.loadProblem(int(lp.cols.size()), int(lp.row_lo.size()), start.data(), index.data(), value.data(),
                    lp.col_lo.data(), lp.col_hi.data(), lp.obj.data(), lp.row_lo.data(), lp.row_hi.data());
  model.setOptimizationDirection(1);
  model.dual();
  if (!model.isProvenOptimal()) model.primal();
  const double* sol = model.primalColumnSolution();
  x.assign(sol, sol + lp.cols.size());
  return model.isProvenOptimal()            ? "optimal"
         : model.isProvenPrimalInfeasible() ? "infeasible"
                                            : "status " + std::to_string(model.status());
}

}  // namespace

LpSolution solve_relaxation(const CostModel& m, double free_bytes, bool overlap) {
  const std::vector<PlanUnit>& units = m.units();
  const size_t n_units = units.size(), n_layer = size_t(m.n_layer());
  const size_t n_cols = n_units + n_layer;
  const double ms_per_byte = 1e3 / (m.in->ssd_gbps * kGB);
  const double recall = std::clamp(m.in->expert_prefetch_recall, 0.0, 1.0);
  const int row_budget = 0, row_total = int(n_layer) + 1;
  const size_t n_rows = overlap ? n_layer + 2 : n_layer + 1;
  ColumnLp lp(n_cols, n_rows);
  auto& [cols, col_lo, col_hi, obj, row_lo, row_hi] = lp;
  row_hi[row_budget] = free_bytes / kGB;

  std::vector<double> layer_rhs(n_layer, 0.0);
  double total_rhs = m.table->embd_row_bytes * ms_per_byte - m.head_s() * 1e3;
  double total_value = 0;
  for (const PlanUnit& u : units) total_value += u.probability * double(u.n_bytes) * ms_per_byte;
  for (size_t i = 0; i < n_units; ++i) {
    const PlanUnit& u = units[i];
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
    double compute_ms = m.compute_s(int(l)) * 1e3;
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

  std::vector<double> sol;
  LpSolution r;
  r.status = solve(lp, sol);
  r.x.assign(sol.begin(), sol.begin() + ptrdiff_t(n_units));
  for (auto& v : r.x) v = std::clamp(v, 0.0, 1.0);
  double t = m.head_s();
  for (size_t l = 0; l < n_layer; ++l) t += sol[n_units + l] / 1e3;
  r.seconds = t;
  return r;
}

}  // namespace strata::tier

// --- Three tiers. Columns: per unit v (VRAM), h (host RAM), g (copied to the GPU; the CPU
// computes 1 - v - g), then per layer the core's VRAM fraction c_l and the layer's FFN time e_l.
// Rows: each GPU's VRAM; the host's bytes; per unit v + g <= 1 and v + h <= 1; per layer e_l at
// least the GPU's, the CPU's, the link's and the unpredicted SSD misses' seconds; the SSD's total.

namespace strata::tier {

GpuLpSolution solve_gpu_relaxation(const GpuCostModel& m, const std::vector<double>& free_vram, double free_host) {
  const std::vector<PlanUnit>& units = m.table->units;
  const size_t n_units = units.size(), L = size_t(m.table->n_layer), n_gpu = m.in->gpus.size();
  const size_t col_core = 3 * n_units, col_e = col_core + L, n_cols = col_e + L;
  const size_t row_host = n_gpu, row_vg = row_host + 1, row_vh = row_vg + n_units, row_layer = row_vh + n_units;
  const size_t row_total = row_layer + 4 * L, n_rows = row_total + 1;
  const double ms = 1e3, ssd_bps = m.in->ssd_gbps * kGB;
  const double recall = std::clamp(m.in->expert_prefetch_recall, 0.0, 1.0);
  ColumnLp lp(n_cols, n_rows);
  auto& [cols, col_lo, col_hi, obj, row_lo, row_hi] = lp;
  for (size_t g = 0; g < n_gpu; ++g) row_hi[g] = (g < free_vram.size() ? std::max(0.0, free_vram[g]) : 0.0) / kGB;
  double host_rhs = free_host, total_rhs = m.table->embd_row_bytes / ssd_bps * ms - m.head_s() * ms;
  std::vector<double> cpu_rhs(L, 0.0), miss_rhs(L, 0.0);
  double scale = 0;  // for the tie-breaks
  for (const PlanUnit& u : units) scale += u.probability * double(u.n_bytes);
  for (size_t i = 0; i < n_units; ++i) {
    const PlanUnit& u = units[i];
    const size_t l = size_t(u.layer);
    const int gpu_row = m.layer_gpu[l];
    const size_t v = i, h = n_units + i, g = 2 * n_units + i;
    const double gpu_ms = u.probability * double(u.n_bytes) / m.gpu_bps(u.layer) * ms;
    const double cpu_ms = u.probability * m.cpu_s(double(u.n_bytes), m.table->unit_elems[i]) * ms;
    const double pcie_ms = u.probability * double(u.n_bytes) / m.pcie_bps(u.layer) * ms;
    const double io_ms = u.probability * double(u.n_bytes) / ssd_bps * ms;
    cols[v].push_back({gpu_row, m.vram_bytes(u) / kGB});
    if (m.cores_in_session && u.kind == UnitKind::dense_ffn) col_lo[v] = 1;  // the session holds it
    cols[h].push_back({int(row_host), double(u.memory_bytes) / kGB});
    cols[v].push_back({int(row_vg + i), 1.0});
    cols[g].push_back({int(row_vg + i), 1.0});
    cols[v].push_back({int(row_vh + i), 1.0});
    cols[h].push_back({int(row_vh + i), 1.0});
    row_hi[row_vg + i] = row_hi[row_vh + i] = 1.0;
    const int r_gpu = int(row_layer + 4 * l), r_cpu = r_gpu + 1, r_pcie = r_gpu + 2, r_miss = r_gpu + 3;
    cols[v].push_back({r_gpu, -gpu_ms});
    cols[g].push_back({r_gpu, -gpu_ms});
    cols[v].push_back({r_cpu, cpu_ms});  // e_l >= cpu_ms * (1 - v - g)
    cols[g].push_back({r_cpu, cpu_ms});
    cpu_rhs[l] += cpu_ms;
    cols[g].push_back({r_pcie, -pcie_ms});
    if (u.kind == UnitKind::expert && recall < 1) {  // e_l >= (1 - recall) io (1 - v - h)
      cols[v].push_back({r_miss, (1 - recall) * io_ms});
      cols[h].push_back({r_miss, (1 - recall) * io_ms});
      miss_rhs[l] += (1 - recall) * io_ms;
    }
    cols[v].push_back({int(row_total), io_ms});  // the SSD's reads fit in the token
    cols[h].push_back({int(row_total), io_ms});
    total_rhs += io_ms;
    // Tie-breaks far below any real difference: among equal times, likelier units nearer the GPU.
    const double tie = scale > 0 ? 1e-7 * u.probability * double(u.n_bytes) / scale : 0.0;
    obj[v] = -2 * tie;
    obj[h] = -tie;
  }
  double constant_ms = m.head_s() * ms;
  for (size_t l = 0; l < L; ++l) {
    const size_t c = col_core + l, e = col_e + l;
    const double gpu_ms = m.core_gpu_s(int(l)) * ms, cpu_ms = m.core_cpu_s(int(l)) * ms;
    constant_ms += cpu_ms;
    obj[c] = gpu_ms - cpu_ms;
    if (m.cores_in_session) col_lo[c] = 1;  // in VRAM, inside the session's bytes
    cols[c].push_back({m.layer_gpu[l], m.cores_in_session ? 0.0 : m.core_bytes[l] / kGB});
    cols[c].push_back({int(row_host), -m.core_bytes[l] / kGB});  // off the host when in VRAM
    host_rhs -= m.core_bytes[l];
    cols[c].push_back({int(row_total), gpu_ms - cpu_ms});
    total_rhs -= cpu_ms;
    obj[e] = 1.0;
    col_hi[e] = COIN_DBL_MAX;
    for (int k = 0; k < 4; ++k) cols[e].push_back({int(row_layer + 4 * l + size_t(k)), 1.0});
    cols[e].push_back({int(row_total), 1.0});
    row_lo[row_layer + 4 * l] = 0;
    row_lo[row_layer + 4 * l + 1] = cpu_rhs[l];
    row_lo[row_layer + 4 * l + 2] = 0;
    row_lo[row_layer + 4 * l + 3] = miss_rhs[l];
  }
  row_hi[row_host] = host_rhs / kGB;
  row_lo[row_total] = total_rhs;

  std::vector<double> sol;
  GpuLpSolution r;
  r.status = solve(lp, sol);
  auto clamp01 = [](double x) { return std::clamp(x, 0.0, 1.0); };
  r.x.vram.resize(n_units), r.x.host.resize(n_units), r.x.copy.resize(n_units), r.x.core_vram.resize(L);
  for (size_t i = 0; i < n_units; ++i) {
    r.x.vram[i] = clamp01(sol[i]);
    r.x.host[i] = clamp01(sol[n_units + i]);
    r.x.copy[i] = clamp01(sol[2 * n_units + i]);
  }
  double t = constant_ms;
  for (size_t l = 0; l < L; ++l) {
    r.x.core_vram[l] = clamp01(sol[col_core + l]);
    t += obj[col_core + l] * sol[col_core + l] + sol[col_e + l];
  }
  r.seconds = t / ms;
  return r;
}

}  // namespace strata::tier
