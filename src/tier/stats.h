#pragma once
// Tiering telemetry from one source: one statistics type (a snapshot of a Tiering, with the
// figures derived from it) and one table describing each figure once: its label for
// `--stats`, its field in /api/ps and its Prometheus family in /metrics. The three outputs are
// rendered from the table, so a figure added here appears in all three, under one definition.
#include <algorithm>
#include <cstdint>
#include <span>
#include <string>

#include "tier/stream/dense_ffn_streamer.h"
#include "tier/stream/expert_streamer.h"

namespace strata::tier {

// The GPU tier's counters (issue 14): filled by the runtime that places work on a GPU; on a
// CPU-only run `present` stays false, every figure 0, and the group is left out of --stats and
// /api/ps.
struct GpuTierCounters {
  bool present = false;
  uint64_t pcie_bytes = 0;          // weights copied host -> GPU (expert misses, prompt waves)
  uint64_t vram_expert_needed = 0;  // expert slices routed to, in layers the GPU computes
  uint64_t vram_expert_hits = 0;    // of them, found in the VRAM expert cache
  uint64_t experts_gpu = 0;         // expert computations by the GPU (VRAM hits and copies)
  uint64_t experts_cpu = 0;         // expert computations by the CPU (host RAM)
  uint64_t vram_admitted = 0;       // copies that entered the VRAM cache (giving up a slot)
  double copy_seconds = 0;          // copies over PCIe in flight
  double gpu_compute_seconds = 0;
  double cpu_compute_seconds = 0;
  double wait_seconds = 0;  // the host waiting for the GPU's routing of a layer
  // Gauges: the tier's VRAM slots, and what the plan (three_tier.cpp) predicted for it.
  uint64_t cache_slots = 0, staging_slots = 0;
  uint64_t plan_vram_experts = 0;        // experts the plan keeps in VRAM
  double predicted_vram_hit_rate = 0;    // of routed experts, the share the plan's VRAM experts take
  double predicted_gen_tok_s = 0, predicted_prompt_tok_s = 0;
};

struct TierStats {
  bool streaming = false;
  bool direct_io = false;  // streamed reads bypass the page cache (O_DIRECT); else buffered
  uint64_t budget_bytes = 0;
  uint64_t planned_bytes = 0;  // what the plan uses of the budget
  uint64_t resident_weight_bytes = 0;
  uint64_t pool_bytes = 0;           // streaming slots, expert cache included
  uint64_t resident_copy_bytes = 0;  // resident weights moved out of the page cache (streaming only)
  double predicted_tok_s = 0;
  uint64_t plan_revisions = 0;  // revised plans (observed routing) that took effect
  bool has_dense = false, has_experts = false;
  StreamStats dense;
  ExpertStats experts;
  GpuTierCounters gpu;
  // The run these counters cover, where the caller knows it (--stats: the tokens it evaluated
  // and the seconds they took); 0: unknown, and the per-token figures are not given.
  uint64_t n_tokens = 0;
  double seconds = 0;

  // --- derived figures
  uint64_t bytes_read() const { return dense.bytes_read + experts.bytes_read; }
  // Read while tokens ran: the start-up read of pinned experts left out.
  uint64_t streamed_bytes() const { return bytes_read() - experts.preload_bytes; }
  // What had to be read at the observed hit rate: streamed FFN pieces, and expert slices not in
  // the cache when routed to (wasted guesses excluded).
  uint64_t must_read_bytes() const { return dense.bytes_read + experts.needed_bytes; }
  double io_wait_seconds() const { return dense.wait_seconds + experts.wait_seconds; }
  double compute_seconds() const { return seconds > io_wait_seconds() ? seconds - io_wait_seconds() : 0.0; }
  // Both kinds streaming: the disk idles only when both readers do; the smaller is an upper bound.
  double disk_idle_seconds() const {
    return has_dense && has_experts ? std::min(dense.idle_seconds, experts.idle_seconds)
           : has_dense              ? dense.idle_seconds
                                    : experts.idle_seconds;
  }
  double ssd_bytes_per_token() const { return n_tokens ? double(streamed_bytes()) / double(n_tokens) : 0.0; }
  // Of the expert slices routed to: in memory (cache or prefetch), in the cache, prefetched.
  double expert_hit_rate() const { return ratio(experts.cache_hits + experts.prefetch_hits, experts.needed); }
  double cache_hit_rate() const { return ratio(experts.cache_hits, experts.needed); }
  double prefetch_hit_rate() const { return ratio(experts.prefetch_hits, experts.needed); }
  // Guesses routing confirmed, and misses a guess covered.
  double prefetch_precision() const { return ratio(experts.prefetch_hits, experts.prefetch_issued); }
  double prefetch_recall() const { return ratio(experts.prefetch_hits, experts.prefetch_hits + experts.misses); }
  // The GPU tier, per token of the run (0 when the run's tokens are unknown).
  double per_token(double v) const { return n_tokens ? v / double(n_tokens) : 0.0; }
  double vram_expert_hit_rate() const { return ratio(gpu.vram_expert_hits, gpu.vram_expert_needed); }
  // Dense pieces already in memory when compute needed them.
  double read_ahead_in_time() const { return ratio(dense.ready_hits, dense.pieces_used); }

  // The counters since `before`, an earlier snapshot of the same Tiering; gauges as now.
  TierStats since(const TierStats& before) const;

  static double ratio(uint64_t part, uint64_t whole) { return whole > 0 ? double(part) / double(whole) : 0.0; }
};

// experts and dense_ffn: only when the model streams them; gpu: only when a GPU takes part.
enum class StatGroup { tiering, dense_ffn, experts, gpu };
enum class StatUnit { flag, count, bytes, ratio, seconds, tokens_per_second };
enum class MetricType { none, gauge, counter };

struct TierStatField {
  StatGroup group;
  StatUnit unit;
  const char* label;   // --stats; nullptr: not printed there
  const char* json;    // the key in its /api/ps object; nullptr: not shown there
  const char* metric;  // the /metrics family; nullptr: not exported
  MetricType type;
  const char* help;  // /metrics HELP
  bool per_run;      // needs the run's tokens (TierStats::n_tokens): --stats only, when known
  double (*value)(const TierStats&);
};

// Every figure, in the order /api/ps and --stats list them.
std::span<const TierStatField> tier_stat_fields();
// A group's object name in /api/ps ("dense_ffn", "experts"; "" for the top level) and heading in --stats.
const char* stat_group_key(StatGroup group);
const char* stat_group_title(StatGroup group);
bool stat_group_present(const TierStats& s, StatGroup group);

// `--stats`: several lines, from the table.
std::string describe_stats(const TierStats& s);

}  // namespace strata::tier
