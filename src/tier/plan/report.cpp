// A plan in words (`strata plan`) and as JSON (`strata plan --json`).
#include <cstdio>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tier/plan/plan.h"

namespace strata::tier {

namespace {

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string limit_reason(const Plan& p) {
  switch (p.limit) {
    case Limit::ram_bandwidth:
      return "every token reads " + format_bytes(p.ram_bytes_per_token) + " of weights and KV from RAM at " +
             fmt("%.1f", p.inputs.ram_gbps) + " GB/s";
    case Limit::compute:
      return "arithmetic at " + fmt("%.0f", p.inputs.compute_gflops) + " GFLOP/s takes longer than reading the weights";
    case Limit::ssd_bandwidth:
      return "every token reads " + format_bytes(p.ssd_bytes_per_token) + " from the SSD at " +
             fmt("%.2f", p.inputs.ssd_gbps) + " GB/s";
    case Limit::ssd_expert_misses:
      return "expert misses are only known after routing; with prefetch recall " +
             fmt("%.0f%%", p.inputs.expert_prefetch_recall * 100) + " their reads wait on the SSD in each layer";
    case Limit::vram_bandwidth:
    case Limit::pcie_bandwidth:
    case Limit::gpu_compute:
    case Limit::cpu_compute:
      break;  // plans with GPUs only (bound_text)
  }
  return "";
}

double gb(double bytes) { return bytes / 1e9; }

const GpuDevice* gpu_input(const Plan& p, int index) {
  for (const auto& g : p.inputs.gpus)
    if (g.index == index) return &g;
  return nullptr;
}

// A GPU plan's bound in words: the resource, its work and its speed. per: "token" or "batch".
std::string bound_text(const Plan& p, Limit limit, const ResourceLoad& r, const char* per) {
  const GpuDevice* g = p.gpus.empty() ? nullptr : gpu_input(p, p.gpus.back().device);
  const std::string each = std::string("/") + per;
  switch (limit) {
    case Limit::vram_bandwidth:
      return "VRAM: " + fmt("%.2f", gb(r.vram_bytes)) + " GB" + each + " at " + fmt("%.0f", g ? g->mem_gbps : 0) +
             " GB/s";
    case Limit::pcie_bandwidth:
      return "PCIe: " + fmt("%.2f", gb(r.pcie_bytes)) + " GB" + each + " at " +
             fmt("%.1f", g ? g->pcie_pinned_gbps : 0) + " GB/s (pinned)";
    case Limit::ram_bandwidth:
      return "host RAM: " + fmt("%.2f", gb(r.ram_bytes)) + " GB" + each + " read by the CPU at " +
             fmt("%.1f", p.inputs.ram_gbps) + " GB/s";
    case Limit::ssd_bandwidth:
    case Limit::ssd_expert_misses:
      return std::string(limit == Limit::ssd_bandwidth ? "SSD: " : "SSD reads of unpredicted expert misses: ") +
             fmt("%.2f", gb(r.ssd_bytes)) + " GB" + each + " at " + fmt("%.2f", p.inputs.ssd_gbps) + " GB/s";
    case Limit::gpu_compute:
      return "GPU compute: " + fmt("%.2f", r.gpu_flops / 1e12) + " TFLOP" + each + " at " +
             fmt("%.0f", g ? g->gflops / 1e3 : 0) + " TFLOP/s";
    case Limit::cpu_compute:
      return "CPU compute: " + fmt("%.2f", r.cpu_flops / 1e12) + " TFLOP" + each + " at " +
             fmt("%.2f", p.inputs.cpu_batch_gflops / 1e3) + " TFLOP/s";
    case Limit::compute:
      return "CPU compute at " + fmt("%.0f", p.inputs.compute_gflops) + " GFLOP/s";
  }
  return "";
}

// The bound, and any other resource within 5% of it: a split that balances host RAM and PCIe is
// bound by both.
std::string bounds_text(const Plan& p, Limit limit, const ResourceLoad& r, const char* per) {
  const std::pair<double, Limit> all[] = {{r.vram_s, Limit::vram_bandwidth},   {r.gpu_flops_s, Limit::gpu_compute},
                                          {r.pcie_s, Limit::pcie_bandwidth},   {r.ram_s, Limit::ram_bandwidth},
                                          {r.cpu_flops_s, Limit::cpu_compute}, {r.ssd_s, Limit::ssd_bandwidth}};
  double lead = 0;
  for (const auto& x : all)
    if (x.second == limit) lead = x.first;
  std::string text = bound_text(p, limit, r, per);
  for (const auto& x : all)
    if (x.second != limit && lead > 0 && x.first >= 0.95 * lead) text += ", and " + bound_text(p, x.second, r, per);
  return text;
}

std::string describe_gpu_plan(const Plan& p) {
  std::ostringstream o;
  const ModelConfig& c = p.config;
  char line[200];
  o << "model: " << c.arch_name << ", " << c.n_layer << " layers";
  if (c.n_expert > 0) o << ", " << c.n_expert << " experts (" << c.n_expert_used << " per token)";
  o << ", " << format_bytes(double(p.model_bytes)) << "\n";
  o << "\ntiers:\n";
  for (const auto& g : p.gpus) {
    const GpuDevice* in = gpu_input(p, g.device);
    o << "  VRAM      GPU " << g.device << (in && !in->name.empty() ? " (" + in->name + ")" : "") << ": "
      << format_bytes(double(g.used_bytes)) << " of " << format_bytes(double(g.budget_bytes)) << " (minimum "
      << format_bytes(double(g.minimum_bytes)) << "): ";
    if (g.session_bytes > 0) {  // the runtime's count of its session, then the expert tier's slots
      o << "session " << format_bytes(double(g.session_bytes))
        << " (weights without the routed experts, KV cache, activations, scratch), " << g.n_expert_vram
        << " cached experts " << format_bytes(double(g.expert_cache_bytes)) << ", " << g.n_staging_slots
        << " staging slots " << format_bytes(double(g.staging_bytes)) << "; layers " << g.first_layer << "-"
        << g.first_layer + g.n_layers - 1 << "\n";
      continue;
    }
    o << "weights " << format_bytes(double(g.weight_bytes));
    if (g.n_expert_vram > 0)
      o << " (" << g.n_expert_vram << " expert slices, " << format_bytes(double(g.expert_cache_bytes)) << ")";
    o << ", KV " << format_bytes(double(g.kv_bytes)) << ", activations " << format_bytes(double(g.scratch_bytes))
      << ", copy buffers " << format_bytes(double(g.staging_bytes)) << "; layers " << g.first_layer << "-"
      << g.first_layer + g.n_layers - 1 << "\n";
  }
  o << "  host RAM  " << format_bytes(double(p.used_bytes)) << " of " << format_bytes(double(p.inputs.budget_bytes))
    << " (minimum " << format_bytes(double(p.minimum_bytes)) << "): weights "
    << format_bytes(double(p.resident_weight_bytes)) << " (pinned: " << format_bytes(double(p.host_pinned_bytes))
    << " with the pool), scratch " << format_bytes(double(p.scratch_bytes)) << ", streaming pool "
    << format_bytes(double(p.pool_bytes)) << "\n";
  o << "  SSD       " << format_bytes(double(p.streamed_weight_bytes)) << " of weights streamed";
  if (p.mapped_bytes > 0) o << "; token_embd read a row per token from the mapped file";
  o << "\n\nplacement by role:\n";
  std::snprintf(line, sizeof line, "  %-10s %12s %12s %12s %12s\n", "role", "VRAM", "host RAM", "SSD", "mapped");
  o << line;
  for (const auto& r : p.roles) {
    std::snprintf(line, sizeof line, "  %-10s %12s %12s %12s %12s\n", role_name(r.role),
                  format_bytes(double(r.vram_bytes)).c_str(), format_bytes(double(r.resident_bytes)).c_str(),
                  format_bytes(double(r.streamed_bytes)).c_str(), format_bytes(double(r.mapped_bytes)).c_str());
    o << line;
  }
  int gpu_layers = 0, cpu_units = 0, copied_units = 0, vram_units = 0;
  for (const auto& l : p.layers) gpu_layers += l.device >= 0;
  for (const auto& u : p.units) {
    if (u.tier == Tier::vram)
      ++vram_units;
    else
      ++(u.compute == Processor::gpu ? copied_units : cpu_units);
  }
  const char* unit_word = c.n_expert > 0 ? "expert slices" : "FFN matrices";
  o << "\nprocessors (generation):\n";
  o << "  GPU: attention, norms and router of " << gpu_layers << " of " << c.n_layer << " layers, the output head, "
    << vram_units << " " << unit_word << " from VRAM, " << copied_units << " copied over PCIe when needed\n";
  o << "  CPU: ";
  if (gpu_layers < c.n_layer) o << "attention, norms and router of " << c.n_layer - gpu_layers << " layers, ";
  o << cpu_units << " " << unit_word << " where they are (host RAM, or the pool after an SSD read)\n";
  const ResourceLoad& g = p.generation;
  o << "\ngeneration: " << fmt("%.1f", p.tokens_per_second) << " tok/s predicted ("
    << fmt("%.1f", p.seconds_per_token * 1e3) << " ms/token), bound by " << bounds_text(p, p.limit, g, "token") << "\n";
  o << "  per token: VRAM " << fmt("%.2f", gb(g.vram_bytes)) << " GB, host RAM " << fmt("%.2f", gb(g.ram_bytes))
    << " GB, PCIe " << fmt("%.2f", gb(g.pcie_bytes)) << " GB, SSD " << fmt("%.2f", gb(g.ssd_bytes)) << " GB\n";
  const ResourceLoad& q = p.prompt;
  o << "prompt (" << p.inputs.n_batch << " tokens a batch): ";
  if (p.prompt_tokens_per_second > 0)
    o << fmt("%.0f", p.prompt_tokens_per_second) << " tok/s predicted, bound by "
      << bounds_text(p, p.prompt_limit, q, "batch") << "\n";
  else
    o << "not predicted: the CPU computes part of it and its batch rate is unknown (--cpu-gflops)\n";
  o << "  per batch: " << fmt("%.0f%%", p.prompt_copy_share * 100) << " of host-side FFN work copied to the GPU (PCIe "
    << fmt("%.2f", gb(q.pcie_bytes)) << " GB), GPU " << fmt("%.2f", q.gpu_flops / 1e12) << " TFLOP, CPU "
    << fmt("%.2f", q.cpu_flops / 1e12) << " TFLOP, SSD " << fmt("%.2f", gb(q.ssd_bytes)) << " GB\n";
  o << "\nspeeds: host RAM " << fmt("%.1f", p.inputs.ram_gbps) << " GB/s, SSD " << fmt("%.2f", p.inputs.ssd_gbps)
    << " GB/s (" << p.inputs.speed_source << ")";
  if (p.inputs.cpu_batch_gflops > 0) o << ", CPU " << fmt("%.0f", p.inputs.cpu_batch_gflops) << " GFLOP/s on a batch";
  o << "\n";
  for (const auto& d : p.inputs.gpus)
    if (d.mem_bytes > 0)
      o << "  GPU " << d.index << ": memory " << fmt("%.0f", d.mem_gbps) << " GB/s, PCIe "
        << fmt("%.1f", d.pcie_pinned_gbps) << " GB/s pinned / " << fmt("%.1f", d.pcie_pageable_gbps)
        << " GB/s pageable, " << fmt("%.0f", d.gflops) << " GFLOP/s on a batch\n";
  o << "solver: " << p.solver_status << "\n";
  if (c.n_expert > 0 && p.inputs.expert_probability.empty())
    o << "note: expert probabilities are k/E (no statistics yet); with uniform routing (forged weights) the VRAM and "
         "host expert caches hit in proportion to their size\n";
  return o.str();
}

}  // namespace

std::string describe(const Plan& p) {
  if (!p.gpus.empty()) return describe_gpu_plan(p);
  std::ostringstream o;
  const ModelConfig& c = p.config;
  o << "model: " << c.arch_name << ", " << c.n_layer << " layers";
  if (c.n_expert > 0) o << ", " << c.n_expert << " experts (" << c.n_expert_used << " per token)";
  o << ", " << format_bytes(double(p.model_bytes)) << "\n";
  o << "budget: " << format_bytes(double(p.inputs.budget_bytes)) << " (used " << format_bytes(double(p.used_bytes))
    << "; minimum " << format_bytes(double(p.minimum_bytes)) << ")\n";
  o << "  resident weights " << format_bytes(double(p.resident_weight_bytes)) << ", KV cache "
    << format_bytes(double(p.kv_bytes)) << " (" << p.inputs.n_ctx << " tokens, " << type_name(p.inputs.kv_type) << "), scratch "
    << format_bytes(double(p.scratch_bytes)) << " (batch " << p.inputs.n_batch << ", " << p.inputs.n_threads
    << (p.inputs.n_threads == 1 ? " thread" : " threads") << "), streaming pool " << format_bytes(double(p.pool_bytes)) << "\n";
  o << "\nplacement by role:\n";
  char line[160];
  std::snprintf(line, sizeof line, "  %-10s %12s %12s %12s\n", "role", "resident", "streamed", "mapped");
  o << line;
  for (const auto& r : p.roles) {
    std::snprintf(line, sizeof line, "  %-10s %12s %12s %12s\n", role_name(r.role),
                  format_bytes(double(r.resident_bytes)).c_str(), format_bytes(double(r.streamed_bytes)).c_str(),
                  format_bytes(double(r.mapped_bytes)).c_str());
    o << line;
  }
  if (p.n_dense_units > 0)
    o << "  dense FFN matrices resident: " << p.n_dense_resident << " of " << p.n_dense_units
      << (c.n_expert > 0 ? " (gate, up and down of the shared experts and dense layers)\n"
                         : " (gate, up and down of each layer)\n");
  if (p.n_expert_units > 0) {
    o << "  expert cache: " << p.n_expert_resident << " of " << p.n_expert_units << " expert slices ("
      << format_bytes(double(p.expert_cache_bytes)) << ")";
    if (p.inputs.expert_probability.empty())
      o << ", access probability k/E (no statistics yet)";
    else
      o << ", from observed expert frequencies";
    o << "\n";
  }
  if (p.mapped_bytes > 0) o << "  token_embd: read one row per token from the mapped file\n";
  o << "\nstreaming: ";
  if (p.prefetch_depth == 0) {
    o << "none, everything is resident\n";
  } else {
    o << "prefetch depth " << p.prefetch_depth;
    if (p.n_dense_slots)
      o << ", a ring of " << p.n_dense_slots << " pieces of FFN rows of " << format_bytes(double(p.dense_slot_bytes));
    if (p.n_expert_slots)
      o << ", " << p.n_expert_slots << " expert slots of " << format_bytes(double(p.expert_slot_bytes));
    o << " (pool " << format_bytes(double(p.pool_bytes)) << ")\n";
  }
  o << "\nper token (expected): " << format_bytes(p.ssd_bytes_per_token) << " from SSD, "
    << format_bytes(p.ram_bytes_per_token) << " from RAM\n";
  o << "predicted bound: " << fmt("%.2f", p.tokens_per_second) << " tok/s (" << fmt("%.1f", p.seconds_per_token * 1e3)
    << " ms/token), limited by " << limit_name(p.limit) << ": " << limit_reason(p) << "\n";
  o << "speeds: RAM " << fmt("%.1f", p.inputs.ram_gbps) << " GB/s, SSD " << fmt("%.2f", p.inputs.ssd_gbps)
    << " GB/s (" << p.inputs.speed_source << "); solver: " << p.solver_status << "\n";
  if (c.n_expert > 0 && p.inputs.expert_probability.empty())
    o << "note: with uniform routing (forged weights) expert hits equal the cache fraction; real models route with "
         "locality and do better once observed frequencies are fed back (revise)\n";
  return o.str();
}

namespace {

nlohmann::json load_json(const ResourceLoad& r) {
  return {{"vram_bytes", r.vram_bytes}, {"ram_bytes", r.ram_bytes}, {"pcie_bytes", r.pcie_bytes},
          {"ssd_bytes", r.ssd_bytes},   {"gpu_flops", r.gpu_flops}, {"cpu_flops", r.cpu_flops}};
}

// The three-tier parts: GPUs, layers, units (where each lives and which processor computes it),
// each tensor's tier and device, and the two predictions.
void add_gpu_json(const Plan& p, nlohmann::json& j) {
  using nlohmann::json;
  json gpus = json::array();
  for (const auto& d : p.inputs.gpus)
    gpus.push_back({{"device", d.index},
                    {"name", d.name},
                    {"mem_bytes", d.mem_bytes},
                    {"mem_gbps", d.mem_gbps},
                    {"gflops", d.gflops},
                    {"pcie_pinned_gbps", d.pcie_pinned_gbps},
                    {"pcie_pageable_gbps", d.pcie_pageable_gbps}});
  j["inputs"]["gpus"] = gpus;
  j["inputs"]["cpu_batch_gflops"] = p.inputs.cpu_batch_gflops;
  json uses = json::array();
  for (const auto& g : p.gpus)
    uses.push_back({{"device", g.device},
                    {"budget_bytes", g.budget_bytes},
                    {"used_bytes", g.used_bytes},
                    {"minimum_bytes", g.minimum_bytes},
                    {"weight_bytes", g.weight_bytes},
                    {"expert_cache_bytes", g.expert_cache_bytes},
                    {"n_expert_vram", g.n_expert_vram},
                    {"kv_bytes", g.kv_bytes},
                    {"scratch_bytes", g.scratch_bytes},
                    {"staging_bytes", g.staging_bytes},
                    {"first_layer", g.first_layer},
                    {"n_layers", g.n_layers}});
  for (size_t i = 0; i < p.gpus.size(); ++i)  // a session's GPU (GpuDevice::session_bytes) only
    if (p.gpus[i].session_bytes > 0) {
      uses[i]["session_bytes"] = p.gpus[i].session_bytes;
      uses[i]["n_staging_slots"] = p.gpus[i].n_staging_slots;
    }
  j["gpus"] = uses;
  j["memory"]["host_pinned_bytes"] = p.host_pinned_bytes;
  json layers = json::array();
  for (const auto& l : p.layers)
    layers.push_back({{"layer", l.layer},
                      {"device", l.device},
                      {"copy_share", l.copy_share},
                      {"units_gpu", l.n_units_gpu},
                      {"units_cpu", l.n_units_cpu}});
  j["layers"] = layers;
  json units = json::array();
  for (const auto& u : p.units) {
    json e = {{"kind", u.kind == UnitKind::expert ? "expert" : "dense_ffn"},
              {"layer", u.layer},
              {"tier", tier_name(u.tier)},
              {"device", u.device},
              {"compute", processor_name(u.compute)},
              {"bytes", u.n_bytes},
              {"probability", u.probability}};
    if (u.kind == UnitKind::expert)
      e["expert"] = u.expert;
    else
      e["part"] = u.part;
    units.push_back(std::move(e));
  }
  j["units"] = units;
  for (size_t i = 0; i < p.tensors.size(); ++i) {
    const TensorPlacement& t = p.tensors[i];
    json& e = j["tensors"][i];
    e["tier"] = tier_name(t.tier);
    e["device"] = t.device;
    if (t.role == TensorRole::experts) e["vram_experts"] = t.vram_experts;
  }
  j["per_token"]["bytes"] = load_json(p.generation);
  j["per_token"]["prompt_tokens_per_second"] = p.prompt_tokens_per_second;
  j["per_token"]["prompt_limit"] = limit_name(p.prompt_limit);
  j["prompt"] = {{"batch", p.inputs.n_batch},
                 {"tokens_per_second", p.prompt_tokens_per_second},
                 {"limit", limit_name(p.prompt_limit)},
                 {"copy_share", p.prompt_copy_share},
                 {"per_batch", load_json(p.prompt)}};
}

}  // namespace

std::string to_json(const Plan& p, int indent) {
  using nlohmann::json;
  json j;
  j["model"] = {{"architecture", p.config.arch_name},
                {"n_layer", p.config.n_layer},
                {"n_expert", p.config.n_expert},
                {"n_expert_used", p.config.n_expert_used},
                {"bytes", p.model_bytes}};
  j["inputs"] = {{"budget_bytes", p.inputs.budget_bytes},
                 {"n_ctx", p.inputs.n_ctx},
                 {"n_batch", p.inputs.n_batch},
                 {"kv_type", type_name(p.inputs.kv_type)},
                 {"n_threads", p.inputs.n_threads},
                 {"ram_gbps", p.inputs.ram_gbps},
                 {"ssd_gbps", p.inputs.ssd_gbps},
                 {"speed_source", p.inputs.speed_source},
                 {"compute_gflops", p.inputs.compute_gflops},
                 {"max_prefetch_depth", p.inputs.max_prefetch_depth},
                 {"expert_prefetch_recall", p.inputs.expert_prefetch_recall},
                 {"observed_expert_frequencies", !p.inputs.expert_probability.empty()}};
  j["memory"] = {{"minimum_bytes", p.minimum_bytes},
                 {"used_bytes", p.used_bytes},
                 {"mandatory_bytes", p.mandatory_bytes},
                 {"resident_weight_bytes", p.resident_weight_bytes},
                 {"streamed_weight_bytes", p.streamed_weight_bytes},
                 {"mapped_bytes", p.mapped_bytes},
                 {"kv_bytes", p.kv_bytes},
                 {"scratch_bytes", p.scratch_bytes},
                 {"pool_bytes", p.pool_bytes},
                 {"expert_cache_bytes", p.expert_cache_bytes}};
  j["streaming"] = {{"prefetch_depth", p.prefetch_depth},
                    {"dense_slots", p.n_dense_slots},
                    {"dense_slot_bytes", p.dense_slot_bytes},
                    {"expert_slots", p.n_expert_slots},
                    {"expert_slot_bytes", p.expert_slot_bytes}};
  j["counts"] = {{"dense_ffn_resident", p.n_dense_resident},
                 {"dense_ffn_units", p.n_dense_units},
                 {"experts_resident", p.n_expert_resident},
                 {"expert_units", p.n_expert_units}};
  j["per_token"] = {{"ssd_bytes", p.ssd_bytes_per_token}, {"ram_bytes", p.ram_bytes_per_token},
                    {"seconds", p.seconds_per_token},     {"tokens_per_second", p.tokens_per_second},
                    {"limit", limit_name(p.limit)},       {"lp_seconds", p.lp_seconds_per_token}};
  j["solver"] = p.solver_status;
  json roles = json::array();
  for (const auto& r : p.roles)
    roles.push_back({{"role", role_name(r.role)},
                     {"resident_bytes", r.resident_bytes},
                     {"streamed_bytes", r.streamed_bytes},
                     {"mapped_bytes", r.mapped_bytes}});
  j["roles"] = roles;
  json tensors = json::array();
  for (const auto& t : p.tensors) {
    json e = {{"name", t.name},
              {"role", role_name(t.role)},
              {"layer", t.layer},
              {"bytes", t.n_bytes},
              {"file_offset", t.file_offset},
              {"placement", placement_name(t.placement)},
              {"resident_bytes", t.resident_bytes}};
    if (t.role == TensorRole::experts) {
      e["slice_bytes"] = t.slice_bytes;
      e["resident_experts"] = t.resident_experts;
    }
    tensors.push_back(std::move(e));
  }
  j["tensors"] = tensors;
  if (!p.gpus.empty()) add_gpu_json(p, j);
  return j.dump(indent);
}

}  // namespace strata::tier
