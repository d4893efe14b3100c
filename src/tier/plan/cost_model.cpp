// The cost model (cost_model.h): per-layer compute from bytes and FLOPs, per-unit reads from
// the SSD, and the seconds a placement takes per token.
#include "tier/plan/cost_model.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>

#include "util/error.h"

namespace strata::tier {

double lfu_hit_rate(std::vector<double> probability, int slots) {
  const double total = std::accumulate(probability.begin(), probability.end(), 0.0);
  if (!(total > 0)) return 0.0;
  const size_t n = std::min(probability.size(), size_t(std::max(0, slots)));
  std::partial_sort(probability.begin(), probability.begin() + ptrdiff_t(n), probability.end(), std::greater<>());
  return std::accumulate(probability.begin(), probability.begin() + ptrdiff_t(n), 0.0) / total;
}

std::vector<double> cached_units(const std::vector<PlanUnit>& units, const std::vector<bool>& resident,
                                 int n_expert_pool_slots) {
  std::vector<double> cached(units.size(), 0.0);
  std::vector<size_t> rest;
  for (size_t i = 0; i < units.size(); ++i) {
    if (resident[i]) cached[i] = 1;
    else if (units[i].kind == UnitKind::expert) rest.push_back(i);
  }
  std::stable_sort(rest.begin(), rest.end(),
                   [&](size_t a, size_t b) { return units[a].probability > units[b].probability; });
  // Equally probable experts share what is left for them (lfu keeps whichever routing favours).
  double left = std::max(0, n_expert_pool_slots);
  for (size_t j = 0; j < rest.size() && left > 0;) {
    size_t end = j;
    while (end < rest.size() && units[rest[end]].probability == units[rest[j]].probability) ++end;
    const double share = std::min(1.0, left / double(end - j));
    for (size_t i = j; i < end; ++i) cached[rest[i]] = share;
    left -= share * double(end - j);
    j = end;
  }
  return cached;
}

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

PlanPrediction predict(const CostModel& m, const std::vector<bool>& resident, bool overlap,
                       int n_expert_pool_slots) {
  const size_t L = size_t(m.n_layer());
  std::vector<double> io_dense(L), io_exp(L);
  PlanPrediction ev;
  ev.ram_bytes_per_token = m.ram_bytes_per_token;
  ev.ssd_bytes_per_token = m.table->embd_row_bytes;
  const std::vector<double> cached = cached_units(m.units(), resident, n_expert_pool_slots);
  for (size_t i = 0; i < m.units().size(); ++i) {
    const double missed = 1 - cached[i];
    if (missed <= 0) continue;
    const PlanUnit& u = m.units()[i];
    (u.kind == UnitKind::expert ? io_exp : io_dense)[size_t(u.layer)] += missed * m.io_s(u);
    ev.ssd_bytes_per_token += missed * u.probability * double(u.n_bytes);
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

// --- Three tiers

namespace strata::tier {

namespace {

// Handing the hidden state between the processors in a layer where both work: a small copy each
// way and a synchronisation (~10 us each on PCIe).
constexpr double kHandOverSeconds = 20e-6;

// Of the resources' seconds, the one that bounds (ties: the earlier).
Limit bounding(const ResourceLoad& r, bool prompt) {
  const std::pair<double, Limit> all[] = {{r.vram_s, Limit::vram_bandwidth},
                                          {r.gpu_flops_s, Limit::gpu_compute},
                                          {r.pcie_s, Limit::pcie_bandwidth},
                                          {r.ram_s, Limit::ram_bandwidth},
                                          {r.cpu_flops_s, prompt ? Limit::cpu_compute : Limit::compute},
                                          {r.ssd_s, Limit::ssd_bandwidth}};
  auto best = all[0];
  for (const auto& x : all)
    if (x.first > best.first) best = x;
  return best.second;
}

}  // namespace

GpuCostModel make_gpu_cost_model(const UnitTable& table, const PlanInputs& in, uint64_t kv_bytes) {
  if (!(in.ram_gbps > 0) || !(in.ssd_gbps > 0)) throw Error("plan: bandwidths must be positive");
  GpuCostModel m;
  m.in = &in;
  m.table = &table;
  std::vector<int> used;
  double total = 0;
  for (size_t g = 0; g < in.gpus.size(); ++g) {
    const GpuDevice& d = in.gpus[g];
    if (d.mem_bytes == 0) continue;
    if (!(d.mem_gbps > 0) || !(d.pcie_pinned_gbps > 0))
      throw Error("plan: GPU " + std::to_string(d.index) + " needs its memory and PCIe bandwidths (" +
                  std::to_string(d.mem_gbps) + " and " + std::to_string(d.pcie_pinned_gbps) + " GB/s given)");
    used.push_back(int(g));
    total += double(d.mem_bytes);
  }
  if (used.empty()) throw Error("plan: no GPU with memory to plan for");
  const int L = table.n_layer;
  m.layer_gpu.assign(size_t(L), used.front());
  const GpuDevice& first_gpu = in.gpus[size_t(used.front())];
  if (first_gpu.session_bytes > 0) {  // one session on one GPU: every layer there
    m.cores_in_session = true;
    m.expert_slot_bytes = double(first_gpu.expert_slot_bytes);
    for (const PlanUnit& u : table.units)  // none given: the largest expert's slices
      if (first_gpu.expert_slot_bytes == 0 && u.kind == UnitKind::expert)
        m.expert_slot_bytes = std::max(m.expert_slot_bytes, double(u.n_bytes));
  } else {
    // Layers in order, each GPU taking its share of them by memory.
    double before = 0;
    for (int g : used) {
      const double share = double(in.gpus[size_t(g)].mem_bytes) / total;
      const int first = int(std::lround(before * L)), end = int(std::lround((before + share) * L));
      for (int l = first; l < std::min(end, L); ++l) m.layer_gpu[size_t(l)] = g;
      before += share;
    }
  }
  m.head_gpu = L > 0 ? m.layer_gpu.back() : used.front();
  const double kv_layer = L ? double(kv_bytes / uint64_t(L)) : 0.0;
  m.kv_layer_bytes.assign(size_t(L), kv_layer);
  m.core_bytes.assign(size_t(L), 0.0);
  for (int l = 0; l < L; ++l) m.core_bytes[size_t(l)] = table.core_bytes[size_t(l)] + kv_layer;
  for (double b : table.head_bytes) m.head_bytes += b;
  return m;
}

GpuPrediction predict_generation(const GpuCostModel& m, const GpuAssignment& a) {
  const UnitTable& t = *m.table;
  const int L = t.n_layer;
  const double recall = std::clamp(m.in->expert_prefetch_recall, 0.0, 1.0);
  const double ssd_bps = m.in->ssd_gbps * kGB, ram_bps = m.in->ram_gbps * kGB;
  std::vector<double> gpu, cpu, pcie, miss;  // per layer
  gpu.assign(size_t(L), 0.0), cpu.assign(size_t(L), 0.0), pcie.assign(size_t(L), 0.0), miss.assign(size_t(L), 0.0);
  GpuPrediction out;
  ResourceLoad& r = out.load;
  for (size_t i = 0; i < t.units.size(); ++i) {
    const PlanUnit& u = t.units[i];
    const size_t l = size_t(u.layer);
    const double pb = u.probability * double(u.n_bytes);
    const double on_cpu = std::max(0.0, 1.0 - a.vram[i] - a.copy[i]);
    const double streamed = std::max(0.0, 1.0 - a.vram[i] - a.host[i]);
    gpu[l] += pb * (a.vram[i] + a.copy[i]) / m.gpu_bps(u.layer);
    cpu[l] += u.probability * on_cpu * m.cpu_s(double(u.n_bytes), t.unit_elems[i]);
    pcie[l] += pb * a.copy[i] / m.pcie_bps(u.layer);
    if (u.kind == UnitKind::expert) miss[l] += (1 - recall) * pb * streamed / ssd_bps;
    r.vram_bytes += pb * (a.vram[i] + a.copy[i]);
    r.ram_bytes += pb * on_cpu;
    r.pcie_bytes += pb * a.copy[i];
    r.ssd_bytes += pb * streamed;
    r.vram_s += pb * (a.vram[i] + a.copy[i]) / m.gpu_bps(u.layer);
    r.ram_s += u.probability * on_cpu * m.cpu_s(double(u.n_bytes), t.unit_elems[i]);
    r.pcie_s += pb * a.copy[i] / m.pcie_bps(u.layer);
  }
  r.ssd_bytes += t.embd_row_bytes;
  r.ssd_s = r.ssd_bytes / ssd_bps;
  double layers = m.head_s();
  r.vram_bytes += m.head_bytes;
  r.vram_s += m.head_s();
  for (int l = 0; l < L; ++l) {
    const double v = a.core_vram[size_t(l)];
    const double core = v * m.core_gpu_s(l) + (1 - v) * m.core_cpu_s(l);
    r.vram_bytes += v * m.core_bytes[size_t(l)];
    r.vram_s += v * m.core_gpu_s(l);
    r.ram_bytes += (1 - v) * m.core_bytes[size_t(l)];
    r.ram_s += (1 - v) * m.core_cpu_s(l);
    // Both processors take part in the layer: the hidden state crosses PCIe and back.
    const bool gpu_works = v > 0 || gpu[size_t(l)] > 0, cpu_works = v < 1 || cpu[size_t(l)] > 0;
    layers += core + std::max({gpu[size_t(l)], cpu[size_t(l)], pcie[size_t(l)], miss[size_t(l)]}) +
              (gpu_works && cpu_works ? kHandOverSeconds : 0.0);
  }
  (void)ram_bps;
  out.seconds = std::max(layers, r.ssd_s);
  out.limit = r.ssd_s >= layers ? Limit::ssd_bandwidth : bounding(r, false);
  if (out.limit == Limit::ssd_bandwidth && r.ssd_s < layers) out.limit = Limit::ssd_expert_misses;
  return out;
}

GpuPrediction predict_prompt(const GpuCostModel& m, const GpuAssignment& a, int n_batch, double copy_share) {
  const UnitTable& t = *m.table;
  const double B = std::max(1, n_batch);
  const double phi = std::clamp(copy_share, 0.0, 1.0);
  GpuPrediction out;
  ResourceLoad& r = out.load;
  // GPU seconds per layer: its bytes once per batch or its arithmetic, whichever is longer.
  std::vector<double> gpu_bytes(size_t(t.n_layer)), gpu_flops(size_t(t.n_layer));
  for (int l = 0; l < t.n_layer; ++l) {
    const double v = a.core_vram[size_t(l)];
    gpu_bytes[size_t(l)] += v * m.core_bytes[size_t(l)];
    gpu_flops[size_t(l)] += v * 2.0 * t.core_elems[size_t(l)] * B;
    r.ram_bytes += (1 - v) * m.core_bytes[size_t(l)];
    r.cpu_flops += (1 - v) * 2.0 * t.core_elems[size_t(l)] * B;
  }
  for (size_t i = 0; i < t.units.size(); ++i) {
    const PlanUnit& u = t.units[i];
    const size_t l = size_t(u.layer);
    const double q = 1.0 - std::pow(1.0 - std::clamp(u.probability, 0.0, 1.0), B);  // needed by the batch
    const double flops = 2.0 * t.unit_elems[i] * B * u.probability;
    const double host_side = std::max(0.0, 1.0 - a.vram[i]);
    gpu_bytes[l] += a.vram[i] * q * double(u.n_bytes) + phi * host_side * q * double(u.n_bytes);
    gpu_flops[l] += (a.vram[i] + phi * host_side) * flops;
    r.pcie_bytes += phi * host_side * q * double(u.n_bytes);
    r.ram_bytes += (1 - phi) * host_side * q * double(u.n_bytes);
    r.cpu_flops += (1 - phi) * host_side * flops;
    r.ssd_bytes += std::max(0.0, 1.0 - a.vram[i] - a.host[i]) * q * double(u.n_bytes);
  }
  const GpuDevice& head = m.in->gpus[size_t(m.head_gpu)];
  r.vram_bytes = m.head_bytes;
  r.gpu_flops = t.head_flops;  // logits of the batch's last token
  r.vram_s = m.head_bytes / (head.mem_gbps * kGB);
  r.gpu_flops_s = head.gflops > 0 ? r.gpu_flops / (head.gflops * 1e9) : 0.0;
  double gpu_s = std::max(r.vram_s, r.gpu_flops_s);
  for (int l = 0; l < t.n_layer; ++l) {
    const GpuDevice& g = m.gpu(l);
    const double bytes_s = gpu_bytes[size_t(l)] / (g.mem_gbps * kGB);
    const double flops_s = g.gflops > 0 ? gpu_flops[size_t(l)] / (g.gflops * 1e9) : 0.0;
    r.vram_bytes += gpu_bytes[size_t(l)];
    r.gpu_flops += gpu_flops[size_t(l)];
    r.vram_s += bytes_s;
    r.gpu_flops_s += flops_s;
    gpu_s += std::max(bytes_s, flops_s);
    r.pcie_s += 0;  // summed below, per GPU's link
  }
  for (size_t i = 0; i < t.units.size(); ++i) {
    const PlanUnit& u = t.units[i];
    const double q = 1.0 - std::pow(1.0 - std::clamp(u.probability, 0.0, 1.0), B);
    r.pcie_s += phi * std::max(0.0, 1.0 - a.vram[i]) * q * double(u.n_bytes) / m.pcie_bps(u.layer);
  }
  r.ram_s = r.ram_bytes / (m.in->ram_gbps * kGB);
  const bool cpu_rate = m.in->cpu_batch_gflops > 0;
  r.cpu_flops_s = cpu_rate ? r.cpu_flops / (m.in->cpu_batch_gflops * 1e9) : 0.0;
  r.ssd_s = r.ssd_bytes / (m.in->ssd_gbps * kGB);
  const double cpu_s = std::max(r.ram_s, r.cpu_flops_s);
  if (r.cpu_flops > 0 && !cpu_rate) return out;  // the CPU computes, at a rate nobody gave: no prediction
  out.seconds = std::max({gpu_s, r.pcie_s, cpu_s, r.ssd_s});
  // The bound: the GPU's side as one (bytes or arithmetic per layer), else the longest resource.
  const std::pair<double, Limit> all[] = {
      {gpu_s, r.gpu_flops_s >= r.vram_s ? Limit::gpu_compute : Limit::vram_bandwidth},
      {r.pcie_s, Limit::pcie_bandwidth},
      {cpu_s, r.cpu_flops_s >= r.ram_s ? Limit::cpu_compute : Limit::ram_bandwidth},
      {r.ssd_s, Limit::ssd_bandwidth}};
  auto best = all[0];
  for (const auto& x : all)
    if (x.first > best.first) best = x;
  out.limit = best.second;
  return out;
}

GpuPrediction best_prompt(const GpuCostModel& m, const GpuAssignment& a, int n_batch, double* copy_share) {
  // Copying more moves work from the CPU to the link and the GPU: the batch's time is the larger
  // of a falling and a rising piecewise-linear function of the share; a fine scan finds it.
  constexpr int kSteps = 256;
  GpuPrediction best;
  double best_phi = 1.0;
  for (int s = kSteps; s >= 0; --s) {
    const double phi = double(s) / kSteps;
    const GpuPrediction p = predict_prompt(m, a, n_batch, phi);
    if (p.seconds > 0 && (best.seconds == 0 || p.seconds < best.seconds * (1 - 1e-12))) best = p, best_phi = phi;
  }
  if (best.seconds == 0) best = predict_prompt(m, a, n_batch, 1.0);
  if (copy_share) *copy_share = best_phi;
  return best;
}

}  // namespace strata::tier
