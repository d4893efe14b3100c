#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "tier/io/aligned_buffer.h"
#include "tier/io/reader.h"
#include "util/error.h"

namespace strata::tier::io {
namespace {

namespace fs = std::filesystem;

// /tmp may be tmpfs; O_DIRECT wants a real filesystem, so test files live in the cache dir.
fs::path scratch_dir() {
  fs::path base;
  if (const char* cache = std::getenv("STRATA_CACHE")) {
    base = cache;
  } else {
    const char* home = std::getenv("HOME");
    base = fs::path(home ? home : "/root") / ".cache" / "strata";
  }
  fs::path dir = base / "tmp" / ("io_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir;
}

void write_file(const fs::path& path, const std::vector<uint8_t>& bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  ::close(fd);
}

// The reference: what a plain buffered pread returns.
std::vector<uint8_t> pread_reference(const fs::path& path, uint64_t offset, uint64_t length) {
  std::vector<uint8_t> out(length);
  int fd = ::open(path.c_str(), O_RDONLY);
  uint64_t got = 0;
  while (got < length) {
    ssize_t r = ::pread(fd, out.data() + got, length - got, static_cast<off_t>(offset + got));
    if (r <= 0) break;
    got += static_cast<uint64_t>(r);
  }
  ::close(fd);
  out.resize(got);
  return out;
}

struct Variant {
  Backend backend;
  bool direct;
};

class IoTest : public ::testing::TestWithParam<Variant> {
 protected:
  static constexpr uint64_t kFileBytes = 5 * (1 << 20) + 12345;  // not a multiple of 4096

  static void SetUpTestSuite() {
    dir_ = new fs::path(scratch_dir());
    std::vector<uint8_t> bytes(kFileBytes);
    std::mt19937_64 rng(42);
    for (auto& b : bytes) b = static_cast<uint8_t>(rng());
    write_file(*dir_ / "data.bin", bytes);
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(*dir_, ec);
    delete dir_;
  }

  std::unique_ptr<RangeReader> open(const fs::path& path, size_t piece_bytes = 64 << 10, int depth = 16) {
    ReaderOptions opt;
    opt.backend = GetParam().backend;
    opt.direct = GetParam().direct;
    opt.piece_bytes = piece_bytes;
    opt.queue_depth = depth;
    try {
      return open_range_reader(path, opt);
    } catch (const Error& e) {
      if (std::string(e.what()).find("io_uring unavailable") != std::string::npos) return nullptr;
      throw;
    }
  }
  static fs::path data_path() { return *dir_ / "data.bin"; }
  static inline fs::path* dir_ = nullptr;
};

#define OPEN_OR_SKIP(var, ...)  \
  auto var = open(__VA_ARGS__); \
  if (!var) GTEST_SKIP() << "io_uring unavailable in this environment"

TEST_P(IoTest, RandomUnalignedRangesMatchPread) {
  OPEN_OR_SKIP(reader, data_path());
  if (!GetParam().direct) {
    EXPECT_FALSE(reader->direct());
  }
  EXPECT_EQ(reader->file_bytes(), kFileBytes);

  std::mt19937_64 rng(7);
  std::vector<ReadRequest> reqs;
  auto add = [&](uint64_t offset, uint64_t length) { reqs.push_back({offset, length, nullptr}); };
  add(0, 0);                            // zero length
  add(kFileBytes, 0);                   // zero length at the very end
  add(kFileBytes - 1, 1);               // the last byte
  add(kFileBytes - 5000, 5000);         // the last bytes, across the final partial block
  add(0, kFileBytes);                   // the whole file, many pieces
  add(4096, 4096 * 20);                 // aligned
  add((64 << 10) - 3, 6);               // across a piece boundary
  add((64 << 10) * 3 - 100, 64 << 10);  // across two
  for (int i = 0; i < 300; ++i) {
    uint64_t length;
    switch (i % 3) {
      case 0:
        length = rng() % 64 + 1;
        break;  // tiny
      case 1:
        length = rng() % (200 << 10) + 1;
        break;  // crossing pieces
      default:
        length = rng() % 4096 + 1;
        break;
    }
    add(rng() % (kFileBytes - length + 1), length);
  }
  std::vector<std::vector<uint8_t>> out(reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    out[i].assign(reqs[i].length + 1, 0xAB);  // one canary byte past the end
    reqs[i].dst = out[i].data();
  }
  // Several tickets in flight at once, waited out of order.
  size_t n = reqs.size(), third = n / 3;
  Ticket a = reader->submit(std::span(reqs).subspan(0, third));
  Ticket b = reader->submit(std::span(reqs).subspan(third, third));
  Ticket c = reader->submit(std::span(reqs).subspan(2 * third));
  reader->wait(c);
  reader->wait(a);
  reader->wait(b);
  for (size_t i = 0; i < n; ++i) {
    std::vector<uint8_t> want = pread_reference(data_path(), reqs[i].offset, reqs[i].length);
    ASSERT_EQ(want.size(), reqs[i].length);
    ASSERT_TRUE(want.empty() || std::memcmp(out[i].data(), want.data(), want.size()) == 0)
        << "range " << i << ": offset " << reqs[i].offset << ", " << reqs[i].length << " bytes";
    ASSERT_EQ(out[i].back(), 0xAB) << "range " << i << " wrote past its end";
  }

  IoCounters c1 = reader->counters();
  EXPECT_EQ(c1.n_requests, n);
  uint64_t total = 0;
  for (auto& r : reqs) total += r.length;
  EXPECT_EQ(c1.bytes_requested, total);
  EXPECT_GE(c1.bytes_read, total);
  EXPECT_GE(c1.n_pieces, n - 2);  // zero-length ranges issue no read
}

TEST_P(IoTest, AlignedRangeIntoAlignedMemory) {
  OPEN_OR_SKIP(reader, data_path(), 1 << 20, 4);
  AlignedBuffer buf(3 << 20);
  reader->read(1 << 20, 3 << 20, buf.data());
  std::vector<uint8_t> want = pread_reference(data_path(), 1 << 20, 3 << 20);
  EXPECT_EQ(std::memcmp(buf.data(), want.data(), want.size()), 0);
  IoCounters c = reader->counters();
  EXPECT_EQ(c.bytes_read, uint64_t{3} << 20);  // no padding, no staging
  EXPECT_EQ(c.n_pieces, 3u);
  EXPECT_GT(c.wait_ns, 0u);
  // An unaligned 1 MiB range spans 1 MiB + 4 KiB aligned: still one piece, not a 4 KiB straggler.
  std::vector<uint8_t> out((1 << 20) - 64);
  reader->read(100, out.size(), out.data());
  EXPECT_EQ(reader->counters().n_pieces, 4u);
  want = pread_reference(data_path(), 100, out.size());
  EXPECT_EQ(std::memcmp(out.data(), want.data(), want.size()), 0);
}

TEST_P(IoTest, ManyTicketsInFlight) {
  OPEN_OR_SKIP(reader, data_path(), 64 << 10, 8);
  std::vector<uint8_t> whole = pread_reference(data_path(), 0, kFileBytes);
  std::vector<std::vector<uint8_t>> out(64);
  std::vector<Ticket> tickets;
  for (size_t i = 0; i < out.size(); ++i) {
    uint64_t offset = i * 81'001, length = 70'000 + i;
    out[i].resize(length);
    ReadRequest r{offset, length, out[i].data()};
    tickets.push_back(reader->submit(std::span(&r, 1)));
  }
  reader->wait(tickets[10]);
  reader->wait_all();
  for (size_t i = 0; i < out.size(); ++i) {
    ASSERT_EQ(std::memcmp(out[i].data(), whole.data() + i * 81'001, out[i].size()), 0) << i;
  }
}

TEST_P(IoTest, CancelDropsOnlyWhatTheDiskHasNotStarted) {
  OPEN_OR_SKIP(reader, data_path(), 4096, 1);  // one small piece in flight: most of `big` is still queued
  std::vector<uint8_t> whole = pread_reference(data_path(), 0, kFileBytes);
  std::vector<uint8_t> big(4 << 20), small(5000);
  ReadRequest rb{0, big.size(), big.data()}, rs{(4 << 20) + 100, small.size(), small.data()};
  const Ticket tb = reader->submit(std::span(&rb, 1));
  const Ticket ts = reader->submit(std::span(&rs, 1));
  const uint64_t dropped = reader->cancel(tb);
  EXPECT_LE(dropped, big.size());
  EXPECT_EQ(dropped % 4096, 0u);
  reader->wait(tb);  // returns once its pieces in flight land
  reader->wait(ts);
  EXPECT_EQ(std::memcmp(small.data(), whole.data() + rs.offset, small.size()), 0) << "the read behind it is intact";
  // What was read is exactly what was asked for less what was dropped (direct reads are widened to 4 KiB).
  const uint64_t small_read = GetParam().direct ? 8192 : small.size();
  EXPECT_EQ(reader->counters().bytes_read, big.size() - dropped + small_read);
  EXPECT_EQ(reader->cancel(tb), 0u) << "a waited ticket has nothing left to drop";
  reader->read(0, 100, small.data());  // still usable
  EXPECT_EQ(std::memcmp(small.data(), whole.data(), 100), 0);
}

TEST_P(IoTest, PastEndOfFileIsAnError) {
  OPEN_OR_SKIP(reader, data_path());
  std::vector<uint8_t> buf(100);
  try {
    reader->read(kFileBytes - 50, 100, buf.data());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find(data_path().string()), std::string::npos) << what;
    EXPECT_NE(what.find(std::to_string(kFileBytes - 50)), std::string::npos) << what;
  }
  EXPECT_THROW(reader->read(kFileBytes + 1, 0, buf.data()), Error);
  reader->read(kFileBytes - 100, 100, buf.data());  // still usable
}

TEST_P(IoTest, FileTruncatedUnderneathIsAnError) {
  fs::path path = *dir_ / "shrinking.bin";
  std::vector<uint8_t> bytes(1 << 20, 0x5A);
  write_file(path, bytes);
  OPEN_OR_SKIP(reader, path);
  ASSERT_EQ(::truncate(path.c_str(), 100'000), 0);
  std::vector<uint8_t> buf(200'000);
  // Both a range beyond the new end (short read) and one inside it (changed size) must fail.
  EXPECT_THROW(reader->read(500'000, 200'000, buf.data()), Error);
  try {
    reader->read(10, 1000, buf.data());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
  }
  fs::remove(path);
}

TEST_P(IoTest, MissingFileIsAnError) { EXPECT_THROW(open(*dir_ / "absent.bin"), Error); }

INSTANTIATE_TEST_SUITE_P(Backends, IoTest,
                         ::testing::Values(Variant{Backend::uring, true}, Variant{Backend::threads, true},
                                           Variant{Backend::uring, false}, Variant{Backend::threads, false}),
                         [](const auto& info) {
                           return std::string(info.param.backend == Backend::uring ? "uring" : "pread") +
                                  (info.param.direct ? "_direct" : "_buffered");
                         });

TEST(IoFallback, AutomaticBackendOpens) {
  fs::path dir = scratch_dir();
  std::vector<uint8_t> bytes(10'000);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 7);
  write_file(dir / "auto.bin", bytes);
  auto reader = open_range_reader((dir / "auto.bin").string());
  std::string name = reader->backend_name();
  EXPECT_TRUE(name == "io_uring" || name == "pread") << name;
  std::vector<uint8_t> out(333);
  reader->read(4000, 333, out.data());
  EXPECT_EQ(std::memcmp(out.data(), bytes.data() + 4000, 333), 0);
  reader.reset();
  std::error_code ec;
  fs::remove(dir / "auto.bin", ec);
  fs::remove(dir, ec);  // only if the parameterised suite is done with it
}

}  // namespace
}  // namespace strata::tier::io
