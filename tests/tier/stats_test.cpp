// Tiering telemetry (tier/stats.h): the derived figures, snapshots' differences, and the one
// table that --stats, /api/ps and /metrics are rendered from.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "tier/stats.h"

namespace strata::tier {
namespace {

TierStats sample() {
  TierStats s;
  s.streaming = true;
  s.direct_io = true;
  s.has_experts = true;
  s.budget_bytes = 1000;
  s.experts.needed = 100;
  s.experts.cache_hits = 50;
  s.experts.prefetch_hits = 30;
  s.experts.misses = 20;
  s.experts.prefetch_issued = 60;
  s.experts.bytes_read = 9000;
  s.experts.preload_bytes = 1000;
  s.experts.needed_bytes = 4000;
  s.experts.wait_seconds = 0.5;
  s.experts.idle_seconds = 0.25;
  s.n_tokens = 8;
  s.seconds = 2.0;
  return s;
}

TEST(TierStats, DerivedFigures) {
  const TierStats s = sample();
  EXPECT_DOUBLE_EQ(s.expert_hit_rate(), 0.8);
  EXPECT_DOUBLE_EQ(s.cache_hit_rate(), 0.5);
  EXPECT_DOUBLE_EQ(s.prefetch_hit_rate(), 0.3);
  EXPECT_DOUBLE_EQ(s.prefetch_precision(), 0.5);
  EXPECT_DOUBLE_EQ(s.prefetch_recall(), 0.6);
  EXPECT_EQ(s.streamed_bytes(), 8000u);
  EXPECT_DOUBLE_EQ(s.ssd_bytes_per_token(), 1000.0);
  EXPECT_EQ(s.must_read_bytes(), 4000u);
  EXPECT_DOUBLE_EQ(s.compute_seconds(), 1.5);
  EXPECT_DOUBLE_EQ(s.disk_idle_seconds(), 0.25);
  // Nothing counted: every ratio is 0, not a division by zero.
  const TierStats empty;
  EXPECT_EQ(empty.expert_hit_rate(), 0.0);
  EXPECT_EQ(empty.read_ahead_in_time(), 0.0);
  EXPECT_EQ(empty.ssd_bytes_per_token(), 0.0);
}

TEST(TierStats, SinceSubtractsCountersAndKeepsGauges) {
  TierStats before = sample();
  TierStats after = sample();
  after.experts.needed += 10;
  after.experts.cache_hits += 10;
  after.experts.bytes_read += 500;
  after.experts.occupied_slots = 7;
  after.budget_bytes = 2000;
  const TierStats d = after.since(before);
  EXPECT_EQ(d.experts.needed, 10u);
  EXPECT_DOUBLE_EQ(d.cache_hit_rate(), 1.0);
  EXPECT_EQ(d.bytes_read(), 500u);
  EXPECT_EQ(d.experts.preload_bytes, 0u);
  EXPECT_EQ(d.experts.occupied_slots, 7);
  EXPECT_EQ(d.budget_bytes, 2000u);
  EXPECT_DOUBLE_EQ(d.io_wait_seconds(), 0.0);
}

TEST(TierStats, OneTableNamesEachFigureOnce) {
  std::set<std::string> metrics, keys, labels;
  for (const TierStatField& f : tier_stat_fields()) {
    EXPECT_TRUE(f.label || f.json || f.metric) << "a field nobody shows";
    ASSERT_NE(f.value, nullptr);
    if (f.metric) {
      EXPECT_TRUE(metrics.insert(f.metric).second) << f.metric;
      EXPECT_EQ(std::string(f.metric).rfind("strata_tier_", 0), 0u) << f.metric;
      EXPECT_NE(f.type, MetricType::none) << f.metric;
      ASSERT_NE(f.help, nullptr) << f.metric;
      // Prometheus: counters end in _total, and only counters do.
      EXPECT_EQ(std::string(f.metric).ends_with("_total"), f.type == MetricType::counter) << f.metric;
    }
    if (f.json) EXPECT_TRUE(keys.insert(std::string(stat_group_key(f.group)) + "." + f.json).second) << f.json;
    if (f.label) EXPECT_TRUE(labels.insert(std::string(stat_group_title(f.group)) + "." + f.label).second) << f.label;
    if (f.per_run) EXPECT_EQ(f.json, nullptr) << f.label << ": the server does not know the run";
  }
  // The names clients and tests already read stay.
  for (const char* m : {"strata_tier_streaming", "strata_tier_budget_bytes", "strata_tier_resident_weight_bytes",
                        "strata_tier_pool_bytes", "strata_tier_ssd_read_bytes_total",
                        "strata_tier_io_wait_seconds_total", "strata_tier_expert_routed_total",
                        "strata_tier_expert_cache_hits_total", "strata_tier_expert_prefetch_hits_total",
                        "strata_tier_expert_misses_total", "strata_tier_expert_prefetch_issued_total",
                        "strata_tier_expert_prefetch_dropped_total", "strata_tier_disk_idle_seconds_total",
                        "strata_tier_expert_slots_occupied", "strata_tier_dense_pieces_read_total"})
    EXPECT_TRUE(metrics.count(m)) << m;
  for (const char* k : {".streaming",
                        ".budget_bytes",
                        ".planned_bytes",
                        ".resident_weight_bytes",
                        ".pool_bytes",
                        ".predicted_tokens_per_second",
                        ".ssd_bytes_read",
                        ".io_wait_seconds",
                        ".disk_idle_seconds",
                        "dense_ffn.pieces_read",
                        "dense_ffn.bytes_read",
                        "dense_ffn.read_ahead_in_time",
                        "experts.routed",
                        "experts.cache_hit_rate",
                        "experts.prefetch_hit_rate",
                        "experts.prefetch_precision",
                        "experts.prefetch_recall",
                        "experts.read_after_routing",
                        "experts.prefetch_wasted",
                        "experts.prefetch_dropped_unread",
                        "experts.bytes_read",
                        "experts.slots",
                        "experts.slots_occupied",
                        "experts.slots_pinned"})
    EXPECT_TRUE(keys.count(k)) << k;
}

TEST(TierStats, StatsTextComesFromTheTable) {
  TierStats s = sample();
  s.experts.bytes_read = 81'000'000, s.experts.preload_bytes = 1'000'000;  // 10 MB per token
  const std::string text = describe_stats(s);
  // Every labelled figure of a group the model streams, in that group's section.
  EXPECT_EQ(text.find("dense FFN:"), std::string::npos) << text;
  const size_t experts_at = text.find("experts:");
  ASSERT_NE(experts_at, std::string::npos) << text;
  for (const TierStatField& f : tier_stat_fields()) {
    if (!f.label || f.group == StatGroup::dense_ffn || f.group == StatGroup::gpu) continue;
    const std::string section = f.group == StatGroup::experts ? text.substr(experts_at) : text.substr(0, experts_at);
    EXPECT_NE(section.find(std::string("  ") + f.label), std::string::npos) << f.label << "\n" << text;
  }
  EXPECT_NE(text.find("80%"), std::string::npos) << text;      // hit rate
  EXPECT_NE(text.find("10.0 MB"), std::string::npos) << text;  // per token
  // Without the run's tokens the per-token figures are left out.
  s.n_tokens = 0;
  EXPECT_EQ(describe_stats(s).find("per token"), std::string::npos);
  s.streaming = false;
  EXPECT_EQ(describe_stats(s), "tiering: nothing streamed (the model fits the budget)\n");
}

// The GPU tier's figures (issue 14): absent from a CPU-only run, from the counters when a GPU
// takes part, per token where the run's tokens are known.
TEST(TierStats, GpuTierOnlyWhenAGpuTakesPart) {
  TierStats s = sample();
  EXPECT_FALSE(stat_group_present(s, StatGroup::gpu));
  EXPECT_EQ(describe_stats(s).find("GPU tier"), std::string::npos);
  for (const TierStatField& f : tier_stat_fields())
    if (f.group == StatGroup::gpu) EXPECT_EQ(f.value(s), 0.0) << (f.label ? f.label : f.metric);

  s.gpu.present = true;
  s.gpu.pcie_bytes = 16'000'000;  // 2 MB per token of 8
  s.gpu.vram_expert_needed = 40;
  s.gpu.vram_expert_hits = 10;
  s.gpu.experts_gpu = 25;
  s.gpu.experts_cpu = 15;
  s.gpu.copy_seconds = 0.8;
  s.gpu.gpu_compute_seconds = 0.4;
  s.gpu.cpu_compute_seconds = 1.2;
  s.gpu.wait_seconds = 0.16;
  EXPECT_DOUBLE_EQ(s.vram_expert_hit_rate(), 0.25);
  EXPECT_DOUBLE_EQ(s.per_token(s.gpu.pcie_bytes), 2e6);
  const std::string text = describe_stats(s);
  const size_t at = text.find("GPU tier:");
  ASSERT_NE(at, std::string::npos) << text;
  for (const TierStatField& f : tier_stat_fields())
    if (f.group == StatGroup::gpu && f.label)
      EXPECT_NE(text.find(std::string("  ") + f.label, at), std::string::npos) << f.label << "\n" << text;
  EXPECT_NE(text.find("2.0 MB", at), std::string::npos) << text;  // PCIe per token
  EXPECT_NE(text.find("25%", at), std::string::npos) << text;     // VRAM hit rate
  EXPECT_NE(text.find("0.02 s", at), std::string::npos) << text;  // wait per token
  // A GPU run that streams nothing still reports its GPU figures.
  s.streaming = false;
  EXPECT_NE(describe_stats(s).find("GPU tier:"), std::string::npos);

  TierStats later = s;
  later.gpu.pcie_bytes += 1000, later.gpu.experts_cpu += 3, later.gpu.wait_seconds += 0.5;
  const TierStats d = later.since(s);
  EXPECT_EQ(d.gpu.pcie_bytes, 1000u);
  EXPECT_EQ(d.gpu.experts_cpu, 3u);
  EXPECT_EQ(d.gpu.experts_gpu, 0u);
  EXPECT_NEAR(d.gpu.wait_seconds, 0.5, 1e-12);
}

}  // namespace
}  // namespace strata::tier
