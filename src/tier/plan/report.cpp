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
  }
  return "";
}

}  // namespace

std::string describe(const Plan& p) {
  std::ostringstream o;
  const ModelConfig& c = p.config;
  o << "model: " << c.arch_name << ", " << c.n_layer << " layers";
  if (c.n_expert > 0) o << ", " << c.n_expert << " experts (" << c.n_expert_used << " per token)";
  o << ", " << format_bytes(double(p.model_bytes)) << "\n";
  o << "budget: " << format_bytes(double(p.inputs.budget_bytes)) << " (used " << format_bytes(double(p.used_bytes))
    << "; minimum " << format_bytes(double(p.minimum_bytes)) << ")\n";
  o << "  resident weights " << format_bytes(double(p.resident_weight_bytes)) << ", KV cache "
    << format_bytes(double(p.kv_bytes)) << " (" << p.inputs.n_ctx << " tokens, f16), scratch "
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
  return j.dump(indent);
}

}  // namespace strata::tier
