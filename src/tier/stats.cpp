// The telemetry table (stats.h) and the --stats text rendered from it.
#include "tier/stats.h"

#include <cstdio>
#include <iterator>

namespace strata::tier {

TierStats TierStats::since(const TierStats& b) const {
  TierStats d = *this;
  d.plan_revisions -= b.plan_revisions;
  d.n_tokens -= b.n_tokens;
  d.seconds -= b.seconds;
  StreamStats& s = d.dense;
  s.bytes_read -= b.dense.bytes_read;
  s.pieces_read -= b.dense.pieces_read;
  s.pieces_used -= b.dense.pieces_used;
  s.ready_hits -= b.dense.ready_hits;
  s.matrices_used -= b.dense.matrices_used;
  s.wait_seconds -= b.dense.wait_seconds;
  s.idle_seconds -= b.dense.idle_seconds;
  ExpertStats& e = d.experts;
  e.needed -= b.experts.needed;
  e.cache_hits -= b.experts.cache_hits;
  e.prefetch_hits -= b.experts.prefetch_hits;
  e.misses -= b.experts.misses;
  e.prefetch_issued -= b.experts.prefetch_issued;
  e.prefetch_wasted -= b.experts.prefetch_wasted;
  e.prefetch_dropped -= b.experts.prefetch_dropped;
  e.loads -= b.experts.loads;
  e.bytes_read -= b.experts.bytes_read;
  e.preload_bytes -= b.experts.preload_bytes;
  e.needed_bytes -= b.experts.needed_bytes;
  e.wait_seconds -= b.experts.wait_seconds;
  e.idle_seconds -= b.experts.idle_seconds;
  GpuTierCounters& g = d.gpu;
  g.pcie_bytes -= b.gpu.pcie_bytes;
  g.vram_expert_needed -= b.gpu.vram_expert_needed;
  g.vram_expert_hits -= b.gpu.vram_expert_hits;
  g.experts_gpu -= b.gpu.experts_gpu;
  g.experts_cpu -= b.gpu.experts_cpu;
  g.vram_admitted -= b.gpu.vram_admitted;
  g.copy_seconds -= b.gpu.copy_seconds;
  g.gpu_compute_seconds -= b.gpu.gpu_compute_seconds;
  g.cpu_compute_seconds -= b.gpu.cpu_compute_seconds;
  g.wait_seconds -= b.gpu.wait_seconds;
  return d;
}

namespace {

using S = const TierStats&;
constexpr auto T = StatGroup::tiering, D = StatGroup::dense_ffn, E = StatGroup::experts, G = StatGroup::gpu;
constexpr auto flag = StatUnit::flag, count = StatUnit::count, bytes = StatUnit::bytes, ratio = StatUnit::ratio,
               seconds = StatUnit::seconds, rate = StatUnit::tokens_per_second;
constexpr auto none = MetricType::none, gauge = MetricType::gauge, counter = MetricType::counter;

const TierStatField kFields[] = {
    // group, unit, --stats label, /api/ps key, /metrics family, type, help, per run, value
    {T, flag, "weights stream from the SSD", "streaming", "strata_tier_streaming", gauge,
     "1 when some of the model's weights stream from the SSD.", false, [](S s) { return s.streaming ? 1.0 : 0.0; }},
    {T, flag, "reads bypass the page cache (O_DIRECT)", "direct_io", nullptr, none, nullptr, false,
     [](S s) { return s.direct_io ? 1.0 : 0.0; }},
    {T, bytes, "memory budget", "budget_bytes", "strata_tier_budget_bytes", gauge,
     "Memory budget the model's placement was planned for.", false, [](S s) { return double(s.budget_bytes); }},
    {T, bytes, "planned use of the budget", "planned_bytes", "strata_tier_planned_bytes", gauge,
     "Memory the model's plan uses of its budget.", false, [](S s) { return double(s.planned_bytes); }},
    {T, bytes, "resident weights", "resident_weight_bytes", "strata_tier_resident_weight_bytes", gauge,
     "Weight bytes kept in memory.", false, [](S s) { return double(s.resident_weight_bytes); }},
    {T, bytes, "streaming slots and expert cache", "pool_bytes", "strata_tier_pool_bytes", gauge,
     "Streaming slots and expert cache.", false, [](S s) { return double(s.pool_bytes); }},
    {T, bytes, "resident weights read once into anonymous memory", "resident_copy_bytes", nullptr, none, nullptr, false,
     [](S s) { return double(s.resident_copy_bytes); }},
    {T, rate, "predicted by the plan", "predicted_tokens_per_second", "strata_tier_predicted_tokens_per_second", gauge,
     "Generation speed the model's plan predicts.", false, [](S s) { return s.predicted_tok_s; }},
    {T, count, "plan revisions from observed routing", "plan_revisions", "strata_tier_plan_revisions_total", counter,
     "Revised plans (from observed expert routing) that took effect.", false,
     [](S s) { return double(s.plan_revisions); }},
    {T, bytes, "read from the SSD (start-up read included)", "ssd_bytes_read", "strata_tier_ssd_read_bytes_total",
     counter, "Bytes read from the SSD for streamed weights.", false, [](S s) { return double(s.bytes_read()); }},
    {T, bytes, "read from the SSD per token", nullptr, nullptr, none, nullptr, true,
     [](S s) { return s.ssd_bytes_per_token(); }},
    {T, bytes, "had to be read per token at this hit rate", nullptr, nullptr, none, nullptr, true,
     [](S s) { return s.n_tokens ? double(s.must_read_bytes()) / double(s.n_tokens) : 0.0; }},
    {T, seconds, "run", nullptr, nullptr, none, nullptr, true, [](S s) { return s.seconds; }},
    {T, seconds, "compute waited for reads", "io_wait_seconds", "strata_tier_io_wait_seconds_total", counter,
     "Seconds compute waited for weight reads.", false, [](S s) { return s.io_wait_seconds(); }},
    {T, seconds, "computing", nullptr, nullptr, none, nullptr, true, [](S s) { return s.compute_seconds(); }},
    {T, seconds, "disk idle since start", "disk_idle_seconds", "strata_tier_disk_idle_seconds_total", counter,
     "Seconds the model's reader had nothing at the disk.", false, [](S s) { return s.disk_idle_seconds(); }},

    {D, count, "streamed matrices computed", "matrices_used", nullptr, none, nullptr, false,
     [](S s) { return double(s.dense.matrices_used); }},
    {D, count, "pieces read", "pieces_read", "strata_tier_dense_pieces_read_total", counter,
     "Pieces of dense FFN matrices read from the SSD.", false, [](S s) { return double(s.dense.pieces_read); }},
    {D, bytes, "bytes read", "bytes_read", nullptr, none, nullptr, false,
     [](S s) { return double(s.dense.bytes_read); }},
    {D, ratio, "pieces read ahead in time", "read_ahead_in_time", nullptr, none, nullptr, false,
     [](S s) { return s.read_ahead_in_time(); }},

    {E, count, "slices routed to", "routed", "strata_tier_expert_routed_total", counter,
     "Expert slices the router asked for.", false, [](S s) { return double(s.experts.needed); }},
    {E, ratio, "in memory when routed to (hit rate)", "hit_rate", nullptr, none, nullptr, false,
     [](S s) { return s.expert_hit_rate(); }},
    {E, ratio, "found in the expert cache", "cache_hit_rate", nullptr, none, nullptr, false,
     [](S s) { return s.cache_hit_rate(); }},
    {E, count, nullptr, nullptr, "strata_tier_expert_cache_hits_total", counter,
     "Expert slices found in the expert cache.", false, [](S s) { return double(s.experts.cache_hits); }},
    {E, ratio, "brought in by a prefetch", "prefetch_hit_rate", nullptr, none, nullptr, false,
     [](S s) { return s.prefetch_hit_rate(); }},
    {E, count, nullptr, nullptr, "strata_tier_expert_prefetch_hits_total", counter,
     "Expert slices brought in time by a prefetch.", false, [](S s) { return double(s.experts.prefetch_hits); }},
    {E, ratio, "prefetch precision (guesses routing confirmed)", "prefetch_precision", nullptr, none, nullptr, false,
     [](S s) { return s.prefetch_precision(); }},
    {E, ratio, "prefetch recall (misses a guess covered)", "prefetch_recall", nullptr, none, nullptr, false,
     [](S s) { return s.prefetch_recall(); }},
    {E, count, "read after routing (misses)", "read_after_routing", "strata_tier_expert_misses_total", counter,
     "Expert slices read after routing.", false, [](S s) { return double(s.experts.misses); }},
    {E, count, "read on a guess", "prefetch_issued", "strata_tier_expert_prefetch_issued_total", counter,
     "Expert slices read on a guess.", false, [](S s) { return double(s.experts.prefetch_issued); }},
    {E, count, "guesses evicted unused", "prefetch_wasted", nullptr, none, nullptr, false,
     [](S s) { return double(s.experts.prefetch_wasted); }},
    {E, count, "guesses dropped before read whole", "prefetch_dropped_unread",
     "strata_tier_expert_prefetch_dropped_total", counter,
     "Guesses routing did not confirm, dropped before the disk had read them whole.", false,
     [](S s) { return double(s.experts.prefetch_dropped); }},
    {E, bytes, "bytes read", "bytes_read", nullptr, none, nullptr, false,
     [](S s) { return double(s.experts.bytes_read); }},
    {E, bytes, "read at start for the pinned experts", "preload_bytes", nullptr, none, nullptr, false,
     [](S s) { return double(s.experts.preload_bytes); }},
    {E, count, "cache slots", "slots", nullptr, none, nullptr, false, [](S s) { return double(s.experts.slots); }},
    {E, count, "slots in use", "slots_occupied", "strata_tier_expert_slots_occupied", gauge,
     "Expert cache slots holding an expert.", false, [](S s) { return double(s.experts.occupied_slots); }},
    {E, count, "slots pinned", "slots_pinned", nullptr, none, nullptr, false,
     [](S s) { return double(s.experts.pinned_slots); }},
    {E, bytes, "slot size", "slot_bytes", nullptr, none, nullptr, false,
     [](S s) { return double(s.experts.slot_bytes); }},

    {G, bytes, "copied over PCIe", "pcie_bytes", "strata_tier_gpu_pcie_bytes_total", counter,
     "Weight bytes copied from host RAM to the GPU.", false, [](S s) { return double(s.gpu.pcie_bytes); }},
    {G, bytes, "copied over PCIe per token", nullptr, nullptr, none, nullptr, true,
     [](S s) { return s.per_token(double(s.gpu.pcie_bytes)); }},
    {G, ratio, "routed experts found in VRAM (hit rate)", "vram_expert_hit_rate", nullptr, none, nullptr, false,
     [](S s) { return s.vram_expert_hit_rate(); }},
    {G, count, nullptr, nullptr, "strata_tier_gpu_vram_expert_hits_total", counter,
     "Routed expert slices found in the VRAM expert cache.", false, [](S s) { return double(s.gpu.vram_expert_hits); }},
    {G, count, nullptr, nullptr, "strata_tier_gpu_vram_expert_routed_total", counter,
     "Expert slices routed to in layers the GPU computes.", false,
     [](S s) { return double(s.gpu.vram_expert_needed); }},
    {G, count, "experts computed by the GPU", "experts_gpu", "strata_tier_gpu_experts_total", counter,
     "Expert computations done by the GPU (VRAM hits and copies).", false,
     [](S s) { return double(s.gpu.experts_gpu); }},
    {G, count, "experts computed by the CPU", "experts_cpu", "strata_tier_cpu_experts_total", counter,
     "Expert computations done by the CPU from host RAM.", false, [](S s) { return double(s.gpu.experts_cpu); }},
    {G, seconds, "copying experts over PCIe (device-timed)", "copy_seconds", "strata_tier_gpu_copy_seconds_total", counter,
     "Seconds host-to-GPU weight copies were in flight.", false, [](S s) { return s.gpu.copy_seconds; }},
    {G, seconds, "GPU computing experts (device-timed)", "gpu_compute_seconds", "strata_tier_gpu_compute_seconds_total", counter,
     "Seconds the GPU computed routed experts.", false, [](S s) { return s.gpu.gpu_compute_seconds; }},
    {G, seconds, "CPU computing experts", "cpu_compute_seconds", "strata_tier_cpu_expert_compute_seconds_total",
     counter, "Seconds the CPU computed experts in a GPU run.", false, [](S s) { return s.gpu.cpu_compute_seconds; }},
    {G, seconds, "host waiting for the GPU's routing", "wait_seconds", "strata_tier_gpu_wait_seconds_total",
     counter, "Seconds the host waited for a layer's routing from the GPU.", false, [](S s) { return s.gpu.wait_seconds; }},
    {G, count, "copies into the VRAM cache (lfu)", "vram_admitted", "strata_tier_gpu_vram_admitted_total", counter,
     "Expert copies that entered the VRAM cache, each giving up the least used slot.", false,
     [](S s) { return double(s.gpu.vram_admitted); }},
    {G, count, "VRAM cache slots", "cache_slots", nullptr, none, nullptr, false,
     [](S s) { return double(s.gpu.cache_slots); }},
    {G, count, "VRAM staging slots", "staging_slots", nullptr, none, nullptr, false,
     [](S s) { return double(s.gpu.staging_slots); }},
    {G, count, "plan: experts in VRAM", "plan_vram_experts", nullptr, none, nullptr, false,
     [](S s) { return double(s.gpu.plan_vram_experts); }},
    {G, ratio, "plan: VRAM hit rate predicted", "predicted_vram_hit_rate", nullptr, none, nullptr, false,
     [](S s) { return s.gpu.predicted_vram_hit_rate; }},
    {G, rate, "plan: generation predicted", "predicted_generation_tokens_per_second",
     "strata_tier_gpu_predicted_generation_tokens_per_second", gauge,
     "Generation speed the GPU plan predicts.", false, [](S s) { return s.gpu.predicted_gen_tok_s; }},
    {G, rate, "plan: prompt predicted", "predicted_prompt_tokens_per_second",
     "strata_tier_gpu_predicted_prompt_tokens_per_second", gauge,
     "Prompt speed (tokens per second in full batches) the GPU plan predicts.", false,
     [](S s) { return s.gpu.predicted_prompt_tok_s; }},
    {G, seconds, "copy per token", nullptr, nullptr, none, nullptr, true,
     [](S s) { return s.per_token(s.gpu.copy_seconds); }},
    {G, seconds, "GPU compute per token", nullptr, nullptr, none, nullptr, true,
     [](S s) { return s.per_token(s.gpu.gpu_compute_seconds); }},
    {G, seconds, "CPU compute per token", nullptr, nullptr, none, nullptr, true,
     [](S s) { return s.per_token(s.gpu.cpu_compute_seconds); }},
    {G, seconds, "wait per token", nullptr, nullptr, none, nullptr, true,
     [](S s) { return s.per_token(s.gpu.wait_seconds); }},
};

std::string format_value(StatUnit unit, double v) {
  char buf[64];
  switch (unit) {
    case StatUnit::flag:
      return v != 0 ? "yes" : "no";
    case StatUnit::count:
      std::snprintf(buf, sizeof buf, "%.0f", v);
      break;
    case StatUnit::bytes:
      if (v >= 1e9)
        std::snprintf(buf, sizeof buf, "%.2f GB", v / 1e9);
      else if (v >= 1e6 || v == 0)
        std::snprintf(buf, sizeof buf, "%.1f MB", v / 1e6);
      else
        std::snprintf(buf, sizeof buf, "%.1f kB", v / 1e3);
      break;
    case StatUnit::ratio:
      std::snprintf(buf, sizeof buf, "%.0f%%", 100.0 * v);
      break;
    case StatUnit::seconds:
      std::snprintf(buf, sizeof buf, "%.2f s", v);
      break;
    case StatUnit::tokens_per_second:
      std::snprintf(buf, sizeof buf, "%.2f tok/s", v);
      break;
  }
  return buf;
}

}  // namespace

std::span<const TierStatField> tier_stat_fields() { return kFields; }

namespace {
// Each group's key in /api/ps, heading in --stats and whether a snapshot has it, in StatGroup's
// order (the order both list them in).
struct StatGroupInfo {
  StatGroup group;
  const char* key;
  const char* title;
  bool (*present)(const TierStats&);
};
constexpr StatGroupInfo kGroups[] = {
    {StatGroup::tiering, "", "tiering", [](const TierStats&) { return true; }},
    {StatGroup::dense_ffn, "dense_ffn", "dense FFN", [](const TierStats& s) { return s.has_dense; }},
    {StatGroup::experts, "experts", "experts", [](const TierStats& s) { return s.has_experts; }},
    {StatGroup::gpu, "gpu", "GPU tier", [](const TierStats& s) { return s.gpu.present; }},
};
constexpr bool groups_in_order() {
  for (size_t i = 0; i < std::size(kGroups); ++i)
    if (size_t(kGroups[i].group) != i) return false;
  return true;
}
static_assert(groups_in_order(), "kGroups lists every StatGroup in its order");
const StatGroupInfo& group_info(StatGroup group) { return kGroups[size_t(group)]; }
}  // namespace

const char* stat_group_key(StatGroup group) { return group_info(group).key; }
const char* stat_group_title(StatGroup group) { return group_info(group).title; }
bool stat_group_present(const TierStats& s, StatGroup group) { return group_info(group).present(s); }

std::string describe_stats(const TierStats& s) {
  std::string out;
  if (!s.streaming) out = "tiering: nothing streamed (the model fits the budget)\n";
  if (!s.streaming && !s.gpu.present) return out;
  char line[160];
  for (const StatGroupInfo& g : kGroups) {
    const StatGroup group = g.group;
    if (!g.present(s) || (!s.streaming && group != StatGroup::gpu)) continue;
    out += g.title;
    if (group == StatGroup::tiering && s.n_tokens > 0) out += " (" + std::to_string(s.n_tokens) + " tokens)";
    out += ":\n";
    for (const TierStatField& f : kFields) {
      if (f.group != group || !f.label || (f.per_run && s.n_tokens == 0)) continue;
      std::snprintf(line, sizeof line, "  %-50s %s\n", f.label, format_value(f.unit, f.value(s)).c_str());
      out += line;
    }
  }
  return out;
}

}  // namespace strata::tier
