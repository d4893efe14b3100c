// The cost model (cost_model.h): per-layer compute from bytes and FLOPs, per-unit reads from
// the SSD, and the seconds a placement takes per token.
#include "tier/plan/cost_model.h"

#include <algorithm>

#include "util/error.h"

namespace strata::tier {

CostModel make_cost_model(const UnitTable& table, const PlanInputs& in, uint64_t kv_bytes) {
  if (!(in.ram_gbps > 0) || !(in.ssd_gbps > 0)) throw Error("plan: bandwidths must be positive");
  CostModel m;
  m.in = &in;
  m.table = &table;
  const size_t L = size_t(table.n_layer);
  const double flops_rate = in.compute_gflops > 0 ? in.compute_gflops * 1e9 : 0.0;
  const uint64_t kv_layer = L ? kv_bytes / L : 0;
  for (double bytes : table.head_bytes) m.head_ram_s += bytes / (in.ram_gbps * kGB);
  m.compute_ram_s.assign(L, 0.0);
  m.compute_flops_s.assign(L, 0.0);
  for (size_t l = 0; l < L; ++l) {
    const double touched = table.layer_bytes[l] + table.expert_bytes[l] + double(kv_layer);
    m.ram_bytes_per_token += touched;
    m.compute_ram_s[l] = touched / (in.ram_gbps * kGB);
    if (flops_rate > 0) m.compute_flops_s[l] = 2.0 * (table.layer_elems[l] + table.expert_elems[l]) / flops_rate;
  }
  m.ram_bytes_per_token += m.head_ram_s * in.ram_gbps * kGB;
  m.head_flops_s = flops_rate > 0 ? table.head_flops / flops_rate : 0.0;
  return m;
}

PlanPrediction predict(const CostModel& m, const std::vector<bool>& resident, bool overlap) {
  const size_t L = size_t(m.n_layer());
  std::vector<double> io_dense(L), io_exp(L);
  PlanPrediction ev;
  ev.ram_bytes_per_token = m.ram_bytes_per_token;
  ev.ssd_bytes_per_token = m.table->embd_row_bytes;
  for (size_t i = 0; i < m.units().size(); ++i) {
    if (resident[i]) continue;
    const PlanUnit& u = m.units()[i];
    (u.kind == UnitKind::expert ? io_exp : io_dense)[size_t(u.layer)] += m.io_s(u);
    ev.ssd_bytes_per_token += u.probability * double(u.n_bytes);
  }
  double ram = m.head_ram_s, flops = m.head_flops_s;
  for (size_t l = 0; l < L; ++l) ram += m.compute_ram_s[l], flops += m.compute_flops_s[l];
  const Limit compute_limit = flops > ram ? Limit::compute : Limit::ram_bandwidth;
  const double io_total = ev.ssd_bytes_per_token / (m.in->ssd_gbps * kGB);
  double compute_total = m.head_s(), layers = m.head_s();
  const double recall = std::clamp(m.in->expert_prefetch_recall, 0.0, 1.0);
  for (size_t l = 0; l < L; ++l) {
    const double c = m.compute_s(int(l));
    compute_total += c;
    if (overlap)
      layers += std::max(c, (1 - recall) * io_exp[l]);
    else
      layers += c + io_dense[l] + io_exp[l];
  }
  if (!overlap) layers += m.embd_io_s();
  ev.seconds_per_token = overlap ? std::max(layers, io_total) : layers;
  ev.tokens_per_second = ev.seconds_per_token > 0 ? 1.0 / ev.seconds_per_token : 0.0;
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

}  // namespace strata::tier
