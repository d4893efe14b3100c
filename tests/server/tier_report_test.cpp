// /metrics' tier families: the GPU tier's only for models a GPU serves (as --stats and /api/ps
// leave the group out), the others for every model.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "server/tier_report.h"

namespace strata::server {
namespace {

TEST(TierMetrics, GpuFamiliesOnlyForModelsAGpuServes) {
  tier::TierStats cpu, gpu;
  gpu.gpu.present = true;
  gpu.gpu.pcie_bytes = 4096;
  const std::string none = tier_metrics({{"cpu-only", cpu}});
  EXPECT_NE(none.find("strata_tier_streaming{model=\"cpu-only\"} 0"), std::string::npos) << none;
  EXPECT_EQ(none.find("strata_tier_gpu_"), std::string::npos) << none;

  const std::string both = tier_metrics({{"cpu-only", cpu}, {"on-gpu", gpu}});
  EXPECT_NE(both.find("# TYPE strata_tier_gpu_pcie_bytes_total counter"), std::string::npos) << both;
  EXPECT_NE(both.find("strata_tier_gpu_pcie_bytes_total{model=\"on-gpu\"} 4096"), std::string::npos) << both;
  EXPECT_EQ(both.find("strata_tier_gpu_pcie_bytes_total{model=\"cpu-only\"}"), std::string::npos) << both;
  EXPECT_NE(both.find("strata_tier_streaming{model=\"cpu-only\"} 0"), std::string::npos) << both;
}

}  // namespace
}  // namespace strata::server
