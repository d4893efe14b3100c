// The streamer core: aligned ranges, reads into the arena by ticket, waits that report their
// time, drain, and statistics snapshots.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "tier/stream/stream_core.h"
#include "util/error.h"

namespace strata::tier {
namespace {

namespace fs = std::filesystem;

TEST(AlignedRangeTest, CoversTheBytesInWholePagesClippedAtTheEnd) {
  const AlignedRange a = aligned_range(5000, 100, 1 << 20);
  EXPECT_EQ(a.file_offset, 4096u);
  EXPECT_EQ(a.span_bytes, 4096u);
  EXPECT_EQ(a.read_bytes, 4096u);
  EXPECT_EQ(a.skip, 904u);
  const AlignedRange b = aligned_range(4000, 200, 1 << 20);  // across a page boundary
  EXPECT_EQ(b.file_offset, 0u);
  EXPECT_EQ(b.span_bytes, 8192u);
  const AlignedRange c = aligned_range(10000, 100, 10100);  // the file's last bytes
  EXPECT_EQ(c.file_offset, 8192u);
  EXPECT_EQ(c.span_bytes, 4096u);
  EXPECT_EQ(c.read_bytes, 10100u - 8192u);
}

TEST(StreamCoreTest, ReadsRangesIntoTheArenaAndDrains) {
  const fs::path path = fs::temp_directory_path() / ("strata_stream_core_" + std::to_string(::getpid()));
  std::vector<uint8_t> bytes(3 * 4096 + 123);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = uint8_t(i * 7 + 3);
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  {
    StreamCore core(path.string(), 4 * 4096, io::ReaderOptions{}, "test streaming");
    EXPECT_GE(core.arena_bytes(), 4u * 4096);
    EXPECT_EQ(core.file_bytes(), bytes.size());
    const AlignedRange r = aligned_range(4100, 3 * 4096 + 123 - 4100, core.file_bytes());
    const io::Ticket t = core.submit(io::ReadRequest{r.file_offset, r.read_bytes, core.arena()});
    EXPECT_GE(core.wait(t), 0.0);
    EXPECT_EQ(0, std::memcmp(core.arena() + r.skip, bytes.data() + 4100, bytes.size() - 4100));
    // A read left in flight is drained when the core goes.
    core.submit(io::ReadRequest{0, 4096, core.arena() + 4096});
  }
  fs::remove(path);
  EXPECT_THROW(StreamCore("/nonexistent/strata-model.gguf", 4096, io::ReaderOptions{}, "test"), Error);
}

TEST(StatsSnapshotTest, ReadersSeeWholeSnapshots) {
  struct Pair {
    uint64_t a = 0, b = 0;
  };
  StatsSnapshot<Pair> snap;
  std::thread writer([&] {
    for (uint64_t i = 1; i <= 10000; ++i) snap.publish(Pair{i, 2 * i});
  });
  for (int i = 0; i < 10000; ++i) {
    const Pair p = snap.get();
    ASSERT_EQ(p.b, 2 * p.a);
  }
  writer.join();
  EXPECT_EQ(snap.get().a, 10000u);
}

}  // namespace
}  // namespace strata::tier
