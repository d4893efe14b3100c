// The planner's speeds are this machine's: measured once, then read from the cache until asked
// to measure again.
#include "tier/plan/device_speed.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "support/paths.h"

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

}  // namespace
}  // namespace strata
