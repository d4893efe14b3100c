// The planner's speeds are this machine's: measured once, then read from the cache until asked
// to measure again.
#include "tier/plan/device_speed.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "ops/thread_pool.h"
#include "support/paths.h"
#include "util/error.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

TEST(DeviceSpeedTest, MeasuresOnceThenReadsTheCache) {
  // On the real file system next to the model cache (O_DIRECT does not work on tmpfs), with HOME
  // there too, so that the cache file is this test's own.
  const fs::path dir = fs::path(test::models_dir()).parent_path() / ("device_speed_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string file = (dir / "data.bin").string();
  {
    std::vector<char> bytes(size_t(16) << 20);
    std::mt19937 rng(7);
    for (char& b : bytes) b = char(rng());
    std::ofstream(file, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
  }
  const char* home = std::getenv("HOME");
  const std::string saved_home = home ? home : "";
  ::setenv("HOME", dir.c_str(), 1);

  constexpr double kSeconds = 0.05;  // the speed itself is not under test
  const tier::DeviceSpeed first = tier::device_speed(file, 2, false, kSeconds);
  const tier::DeviceSpeed again = tier::device_speed(file, 2, false, kSeconds);
  const tier::DeviceSpeed remeasured = tier::device_speed(file, 2, /*remeasure=*/true, kSeconds);
  const bool cache_written = fs::exists(dir / ".cache" / "strata" / "device-speed.json");

  if (home)
    ::setenv("HOME", saved_home.c_str(), 1);
  else
    ::unsetenv("HOME");
  fs::remove_all(dir);

  EXPECT_GT(first.ram_gbps, 0.1);
  EXPECT_GT(first.ssd_gbps, 0.001);
  EXPECT_EQ(first.source, "measured now");
  EXPECT_TRUE(cache_written);
  EXPECT_EQ(again.ram_gbps, first.ram_gbps) << "the second call reads the cache";
  EXPECT_EQ(again.ssd_gbps, first.ssd_gbps);
  EXPECT_NE(again.source.find("cached"), std::string::npos) << again.source;
  EXPECT_EQ(remeasured.source, "measured now");
  EXPECT_GT(remeasured.ssd_gbps, 0.001);
}

TEST(DeviceSpeedTest, UnreadableModelIsAnError) {
  EXPECT_THROW(tier::measure_ssd_gbps("/nonexistent/model.gguf"), std::exception);
}

// The GPU figures are measured through the backend seam; where this build or machine has no GPU,
// the same measurement runs on the CPU backend (which the planner uses for the CPU's batch rate).
TEST(DeviceSpeedTest, MeasuresAProcessorThroughTheBackend) {
  ThreadPool pool(2);
  std::unique_ptr<backend::Backend> cpu = backend::make_cpu_backend(pool);
  const tier::ProcessorSpeed s = tier::measure_processor(*cpu, size_t(8) << 20, 8);
  EXPECT_GT(s.mem_gbps, 0.1);
  EXPECT_GT(s.upload_gbps, 0.1);
  EXPECT_GT(s.pinned_upload_gbps, 0.1);  // the GPU expert tier's copies, from alloc_host's memory
  EXPECT_LT(s.pinned_upload_gbps, 1e4);  // timed to the copy's end, not its queueing
  EXPECT_GT(s.gflops, 0.1);
  EXPECT_LT(s.gflops, 1e5);  // two cores, whatever they are
}

TEST(DeviceSpeedTest, GpusFromFlagsProfileOrMachine) {
  tier::PlanInputs in;
  tier::GpuOverrides none;
  none.mem_given = true;
  none.mem_bytes = {0};
  tier::resolve_gpus(in, none, 2, false);
  EXPECT_TRUE(in.gpus.empty());  // --gpu-mem 0: the two-tier plan

  tier::GpuOverrides h100;
  h100.mem_given = true;
  h100.mem_bytes = {uint64_t(8) << 30, uint64_t(8) << 30};
  tier::apply_lent_h100_profile(in, h100);
  tier::resolve_gpus(in, h100, 16, false);
  ASSERT_EQ(in.gpus.size(), 2u);
  EXPECT_EQ(in.gpus[1].index, 1);
  EXPECT_EQ(in.gpus[0].mem_bytes, uint64_t(8) << 30);
  EXPECT_DOUBLE_EQ(in.gpus[0].pcie_pinned_gbps, 55);
  EXPECT_DOUBLE_EQ(in.gpus[0].pcie_pageable_gbps, 8.6);
  EXPECT_DOUBLE_EQ(in.ram_gbps, 95);
  EXPECT_GT(in.cpu_batch_gflops, 0);

  if (backend::cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is present: the rest is about machines without";
  tier::PlanInputs here;
  tier::GpuOverrides unsaid;
  tier::resolve_gpus(here, unsaid, 2, false);
  EXPECT_TRUE(here.gpus.empty());  // no GPU, nothing said: the two-tier plan
  tier::GpuOverrides eight;
  eight.mem_given = true;
  eight.mem_bytes = {uint64_t(8) << 30};
  EXPECT_THROW(tier::resolve_gpus(here, eight, 2, false), Error);  // --gpu-mem without a GPU or its figures
  eight.mem_gbps = 900, eight.pcie_pinned_gbps = 25;               // another machine's, described
  tier::resolve_gpus(here, eight, 2, false);
  ASSERT_EQ(here.gpus.size(), 1u);
  EXPECT_DOUBLE_EQ(here.gpus[0].pcie_pageable_gbps, 25);
}

}  // namespace
}  // namespace strata
