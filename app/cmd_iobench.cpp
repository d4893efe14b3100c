// `strata iobench [FILE] [--size 1G] [--depths 1,4,16,64] [--block-sizes 64K,1M,4M] [--seconds N]`:
// O_DIRECT read bandwidth of the disk through the engine's own reader (src/tier/io), sequential and
// random, at several queue depths and read sizes. Without FILE, a scratch file of --size is written
// to the cache dir and removed afterwards.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "commands.h"
#include "tier/io/aligned_buffer.h"
#include "tier/io/reader.h"
#include "util/error.h"

namespace strata::app {

namespace {

namespace fs = std::filesystem;
using tier::io::align_down;
using tier::io::AlignedBuffer;

uint64_t parse_size(const std::string& text) {
  if (text.empty()) throw Error("empty size");
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    throw Error("bad size '" + text + "' (expected e.g. 4096, 64K, 1M, 1G)");
  }
  std::string unit = text.substr(used);
  if (!unit.empty() && (unit.back() == 'B' || unit.back() == 'b')) unit.pop_back();
  if (!unit.empty() && (unit.back() == 'i')) unit.pop_back();
  double scale = 1;
  if (unit == "K" || unit == "k")
    scale = 1 << 10;
  else if (unit == "M" || unit == "m")
    scale = 1 << 20;
  else if (unit == "G" || unit == "g")
    scale = double(1 << 30);
  else if (!unit.empty())
    throw Error("bad size '" + text + "' (expected e.g. 4096, 64K, 1M, 1G)");
  if (value <= 0) throw Error("bad size '" + text + "': must be positive");
  return static_cast<uint64_t>(value * scale);
}

std::string format_size(uint64_t bytes) {
  if (bytes % (1 << 30) == 0) return std::to_string(bytes >> 30) + "G";
  if (bytes % (1 << 20) == 0) return std::to_string(bytes >> 20) + "M";
  if (bytes % (1 << 10) == 0) return std::to_string(bytes >> 10) + "K";
  return std::to_string(bytes);
}

template <typename T, typename F>
std::vector<T> parse_list(const std::string& text, F parse_one) {
  std::vector<T> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!item.empty()) out.push_back(parse_one(item));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (out.empty()) throw Error("empty list '" + text + "'");
  return out;
}

fs::path cache_dir() {
  if (const char* cache = std::getenv("STRATA_CACHE")) return cache;
  const char* home = std::getenv("HOME");
  return fs::path(home ? home : "/root") / ".cache" / "strata";
}

// A scratch file of random bytes (not zeros: some storage stacks short-cut them), written with
// O_DIRECT so it does not sit in the page cache afterwards. Removed when this goes out of scope.
class ScratchFile {
 public:
  explicit ScratchFile(uint64_t size_bytes) {
    fs::path dir = cache_dir() / "tmp";
    fs::create_directories(dir);
    path_ = dir / ("iobench_" + std::to_string(::getpid()) + ".bin");
    size_bytes = tier::io::align_up(size_bytes, tier::io::kDirectAlign);
    int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_DIRECT, 0600);
    bool direct = fd >= 0;
    if (fd < 0) fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) throw Error("creating " + path_.string() + ": " + std::strerror(errno));
    const uint64_t chunk = 4 << 20;
    AlignedBuffer buf(chunk);
    std::mt19937_64 rng(1);
    auto* words = reinterpret_cast<uint64_t*>(buf.data());
    for (uint64_t i = 0; i < chunk / 8; ++i) words[i] = rng();
    for (uint64_t done = 0; done < size_bytes;) {
      uint64_t n = std::min(chunk, size_bytes - done);
      words[0] = done;  // every chunk differs
      ssize_t w = ::pwrite(fd, buf.data(), n, static_cast<off_t>(done));
      if (w <= 0) {
        int err = errno;
        ::close(fd);
        std::error_code ec;
        fs::remove(path_, ec);
        throw Error("writing " + path_.string() + ": " + std::strerror(err));
      }
      done += static_cast<uint64_t>(w);
    }
    ::fsync(fd);
    if (!direct) ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
  ~ScratchFile() {
    std::error_code ec;
    fs::remove(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// seq/rand: block-aligned reads into aligned memory, read straight into it (the disk alone).
// rand32: offsets aligned only to 32 bytes like GGUF tensors, unaligned memory: the staged path.
enum class Pattern { seq, rand, rand32 };

const char* pattern_name(Pattern p) { return p == Pattern::seq ? "seq" : p == Pattern::rand ? "rand" : "rand32"; }

struct Result {
  Pattern pattern = Pattern::seq;
  uint64_t block_bytes = 0;
  int depth = 0;
  double mb_per_s = 0;
  double iops = 0;
  bool direct = true;
};

// Keeps `depth` block reads in flight for `seconds`: a batch of `depth` is queued while the previous
// one is read, so the reader's queue never drains. Reads land block-aligned in aligned memory, so
// they go straight to the destination (this measures the disk, not memcpy).
Result measure(const std::string& path, tier::io::Backend backend, Pattern pattern, uint64_t block_bytes, int depth,
               double seconds) {
  tier::io::ReaderOptions opt;
  opt.backend = backend;
  opt.piece_bytes = block_bytes;
  opt.queue_depth = depth;
  auto reader = tier::io::open_range_reader(path, opt);
  const uint64_t file_bytes = reader->file_bytes();
  const uint64_t n_blocks_in_file = file_bytes / block_bytes;
  const int n_dst = std::min(depth, 8);  // destinations are reused: the data is not looked at
  AlignedBuffer dst(block_bytes * n_dst + 32);
  const uint64_t dst_skew = pattern == Pattern::rand32 ? 32 : 0;
  std::mt19937_64 rng(123);
  uint64_t next_seq = 0;
  std::vector<tier::io::ReadRequest> batch[2];
  auto fill = [&](std::vector<tier::io::ReadRequest>& b) {
    b.resize(depth);
    for (int i = 0; i < depth; ++i) {
      uint64_t offset;
      if (pattern == Pattern::seq) {
        offset = (next_seq++ % n_blocks_in_file) * block_bytes;
      } else {
        uint64_t align = pattern == Pattern::rand ? tier::io::kDirectAlign : 32;
        offset = align_down(rng() % (file_bytes - block_bytes + 1), align);
      }
      b[i] = {offset, block_bytes, dst.data() + dst_skew + (i % n_dst) * block_bytes};
    }
  };
  uint64_t n_reads = 0;
  auto t0 = std::chrono::steady_clock::now();
  fill(batch[0]);
  tier::io::Ticket pending = reader->submit(batch[0]);
  double elapsed = 0;
  for (int k = 1;; ++k) {
    auto& b = batch[k % 2];
    fill(b);
    tier::io::Ticket next = reader->submit(b);
    reader->wait(pending);
    n_reads += depth;
    pending = next;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (elapsed >= seconds) break;
  }
  reader->wait(pending);
  n_reads += depth;
  elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  Result r;
  r.pattern = pattern;
  r.block_bytes = block_bytes;
  r.depth = depth;
  r.mb_per_s = double(n_reads) * double(block_bytes) / elapsed / 1e6;
  r.iops = double(n_reads) / elapsed;
  r.direct = reader->direct();
  return r;
}

}  // namespace

void add_iobench_command(CLI::App& app) {
  struct Options {
    std::string file;
    std::string size = "1G";
    std::string depths = "1,4,16,64";
    std::string block_sizes = "64K,1M,4M";
    double seconds = 1.0;
    std::string backend = "auto";
    std::string patterns = "seq,rand";
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("iobench", "Measure O_DIRECT read bandwidth at several queue depths and sizes");
  cmd->add_option("FILE", opt->file, "file to read (e.g. a model); default: a scratch file in the cache dir");
  cmd->add_option("--size", opt->size, "size of the scratch file when no FILE is given")->capture_default_str();
  cmd->add_option("--depths", opt->depths, "queue depths (reads in flight)")->capture_default_str();
  cmd->add_option("--block-sizes", opt->block_sizes, "read sizes")->capture_default_str();
  cmd->add_option("--seconds", opt->seconds, "seconds per configuration")->capture_default_str();
  cmd->add_option("--backend", opt->backend, "auto, uring or pread")->capture_default_str();
  cmd->add_option("--patterns", opt->patterns, "seq, rand (4K-aligned), rand32 (32-byte aligned, staged)")
      ->capture_default_str();
  cmd->callback([opt] {
    auto depths = parse_list<int>(opt->depths, [](const std::string& s) {
      int d = 0;
      try {
        d = std::stoi(s);
      } catch (const std::exception&) {
      }
      if (d < 1 || d > 4096) throw Error("bad queue depth '" + s + "' (1..4096)");
      return d;
    });
    auto blocks = parse_list<uint64_t>(opt->block_sizes, [](const std::string& s) {
      uint64_t b = parse_size(s);
      if (b % tier::io::kDirectAlign != 0 || b > (uint64_t{1} << 30)) {
        throw Error("bad block size '" + s + "': a multiple of 4096, at most 1G");
      }
      return b;
    });
    auto patterns = parse_list<Pattern>(opt->patterns, [](const std::string& s) {
      if (s == "seq") return Pattern::seq;
      if (s == "rand") return Pattern::rand;
      if (s == "rand32") return Pattern::rand32;
      throw Error("bad pattern '" + s + "' (seq, rand or rand32)");
    });
    tier::io::Backend backend = tier::io::Backend::automatic;
    if (opt->backend == "uring")
      backend = tier::io::Backend::uring;
    else if (opt->backend == "pread")
      backend = tier::io::Backend::threads;
    else if (opt->backend != "auto")
      throw Error("bad backend '" + opt->backend + "' (auto, uring or pread)");
    if (!(opt->seconds > 0)) throw Error("--seconds must be positive");

    std::unique_ptr<ScratchFile> scratch;
    std::string path = opt->file;
    if (path.empty()) {
      uint64_t size = parse_size(opt->size);
      std::cout << "writing a " << format_size(size) << " scratch file in " << (cache_dir() / "tmp").string() << " ..."
                << std::endl;
      scratch = std::make_unique<ScratchFile>(size);
      path = scratch->path().string();
    }
    {
      auto probe = tier::io::open_range_reader(path, {.backend = backend});
      std::cout << "file: " << path << " (" << probe->file_bytes() << " bytes), reader: " << probe->backend_name()
                << (probe->direct() ? ", O_DIRECT"
                                    : ", buffered: O_DIRECT refused here, numbers may include the page cache")
                << "\n\n";
    }
    std::printf("%-8s %8s %6s %10s %10s\n", "pattern", "block", "depth", "MB/s", "IOPS");
    std::vector<Result> results;
    uint64_t file_bytes = fs::file_size(path);
    for (Pattern pattern : patterns) {
      for (uint64_t block : blocks) {
        if (block > file_bytes) {
          std::printf("%-8s %8s %6s  (skipped: larger than the file)\n", pattern_name(pattern),
                      format_size(block).c_str(), "-");
          continue;
        }
        for (int depth : depths) {
          Result r = measure(path, backend, pattern, block, depth, opt->seconds);
          std::printf("%-8s %8s %6d %10.0f %10.0f\n", pattern_name(pattern), format_size(block).c_str(), depth,
                      r.mb_per_s, r.iops);
          std::fflush(stdout);
          results.push_back(r);
        }
      }
    }
    if (!results.empty()) {
      const Result& best = *std::max_element(results.begin(), results.end(),
                                             [](const Result& a, const Result& b) { return a.mb_per_s < b.mb_per_s; });
      std::printf("\nbest: %s reads of %s at queue depth %d: %.0f MB/s (%.0f IOPS)\n", pattern_name(best.pattern),
                  format_size(best.block_bytes).c_str(), best.depth, best.mb_per_s, best.iops);
    }
  });
}

}  // namespace strata::app
