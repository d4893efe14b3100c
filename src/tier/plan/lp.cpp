// The placement LP (lp.h) for COIN-OR CLP. Rows: 0 the budget; 1..L one per layer; L+1 the SSD's
// total (overlap only). Columns: x_u per unit, then t_l per layer (the objective). Times in
// milliseconds and sizes in GB keep the coefficients near 1.
#include "tier/plan/lp.h"

#include <algorithm>
#include <utility>

#include <coin/ClpSimplex.hpp>

namespace strata::tier {

LpSolution solve_relaxation(const CostModel& m, double free_bytes, bool overlap) {
  const std::vector<PlanUnit>& units = m.units();
  const size_t n_units = units.size(), n_layer = size_t(m.n_layer());
  const size_t n_cols = n_units + n_layer;
  const double ms_per_byte = 1e3 / (m.in->ssd_gbps * kGB);
  const double recall = std::clamp(m.in->expert_prefetch_recall, 0.0, 1.0);
  const int row_budget = 0, row_total = int(n_layer) + 1;
  const size_t n_rows = overlap ? n_layer + 2 : n_layer + 1;
  std::vector<double> row_lo(n_rows, -COIN_DBL_MAX), row_hi(n_rows, COIN_DBL_MAX);
  row_hi[row_budget] = free_bytes / kGB;

  std::vector<std::vector<std::pair<int, double>>> cols(n_cols);
  std::vector<double> col_lo(n_cols, 0.0), col_hi(n_cols, 1.0), obj(n_cols, 0.0);
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
  if (!model.isProvenOptimal()) model.primal();
  LpSolution r;
  r.status = model.isProvenOptimal() ? "optimal" : "status " + std::to_string(model.status());
  const double* sol = model.primalColumnSolution();
  r.x.assign(sol, sol + n_units);
  for (auto& v : r.x) v = std::clamp(v, 0.0, 1.0);
  double t = m.head_s();
  for (size_t l = 0; l < n_layer; ++l) t += sol[n_units + l] / 1e3;
  r.seconds = t;
  return r;
}

}  // namespace strata::tier
