#include "tier/plan/device_speed.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "ops/thread_pool.h"
#include "tier/io/aligned_buffer.h"
#include "tier/io/reader.h"
#include "util/error.h"

namespace strata::tier {

namespace {

using Clock = std::chrono::steady_clock;

constexpr int64_t kMaxAgeSeconds = 7 * 24 * 3600;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string cache_path() {
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : "/tmp") + "/.cache/strata/device-speed.json";
}

std::string date_of(int64_t unix_seconds) {
  const std::time_t t = std::time_t(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
  return buf;
}

nlohmann::json load_cache() {
  std::ifstream in(cache_path());
  if (!in) return nlohmann::json::object();
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  return j.is_object() ? j : nlohmann::json::object();
}

void save_cache(const nlohmann::json& j) {
  namespace fs = std::filesystem;
  const std::string path = cache_path(), tmp = path + ".tmp";
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  {
    std::ofstream out(tmp);
    if (!out || !(out << j.dump(2) << "\n")) return;
  }
  fs::rename(tmp, path, ec);
}

// A cached entry's speed if it is fresh, else 0.
double cached(const nlohmann::json& cache, const std::string& key, int64_t now, int64_t* at) {
  auto it = cache.find(key);
  if (it == cache.end() || !it->is_object()) return 0;
  const double gbps = it->value("gbps", 0.0);
  *at = it->value("measured_at", int64_t{0});
  return gbps > 0 && now - *at < kMaxAgeSeconds ? gbps : 0;
}

}  // namespace

double measure_ram_gbps(int n_threads) {
  ThreadPool pool(std::max(1, n_threads));
  // 256 MiB: several times any last-level cache, small next to a budget that streams.
  const size_t n = size_t(64) << 20;
  std::vector<float> buf(n, 1.0f);
  std::vector<float> sums(size_t(pool.n_threads()));
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = Clock::now();
    pool.parallel_for(int64_t(n), [&](int64_t b, int64_t e, int thread) {
      float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (int64_t i = b; i + 3 < e; i += 4) {
        s0 += buf[size_t(i)];
        s1 += buf[size_t(i + 1)];
        s2 += buf[size_t(i + 2)];
        s3 += buf[size_t(i + 3)];
      }
      sums[size_t(thread)] = s0 + s1 + s2 + s3;  // kept, so the loop is not optimized away
    });
    best = std::max(best, double(n * sizeof(float)) / seconds_since(t0) / 1e9);
  }
  return best;
}

double measure_ssd_gbps(const std::string& path, double seconds) {
  constexpr uint64_t kMaxRead = uint64_t{4} << 20;
  constexpr int kDepth = 8;
  io::ReaderOptions ro;
  ro.piece_bytes = kMaxRead;
  ro.queue_depth = kDepth;
  auto reader = io::open_range_reader(path, ro);
  const uint64_t size = reader->file_bytes();
  const uint64_t kRead = std::min(kMaxRead, io::align_down(size, io::kDirectAlign));  // a small file: smaller reads
  if (kRead == 0) throw Error("measuring the SSD: " + path + " is smaller than one 4 KiB read");
  io::AlignedBuffer buf(size_t(kRead) * kDepth);
  std::mt19937_64 rng(12345);
  auto submit = [&](int slot) {
    const uint64_t offset = rng() % ((size - kRead) / io::kDirectAlign + 1) * io::kDirectAlign;
    io::ReadRequest r{offset, kRead, buf.data() + size_t(slot) * kRead};
    return reader->submit(std::span<const io::ReadRequest>(&r, 1));
  };
  std::vector<io::Ticket> tickets(kDepth);
  for (int s = 0; s < kDepth; ++s) tickets[size_t(s)] = submit(s);
  // A virtual disk idle until now starts slowly: the first quarter second is not counted. Then at
  // least 32 reads, so that one slow request does not decide.
  const auto start = Clock::now();
  auto t0 = start;
  bool warm = false;
  uint64_t done = 0;
  for (int s = 0;; s = (s + 1) % kDepth) {
    reader->wait(tickets[size_t(s)]);
    if (!warm && seconds_since(start) >= 0.25) {
      warm = true;
      t0 = Clock::now();
    } else if (warm) {
      done += kRead;
      if (done >= 32 * kRead && seconds_since(t0) >= seconds) break;
    }
    tickets[size_t(s)] = submit(s);
  }
  const double gbps = double(done) / seconds_since(t0) / 1e9;
  reader->wait_all();
  return gbps;
}

DeviceSpeed device_speed(const std::string& model_path, int n_threads, bool remeasure, double ssd_seconds) {
  struct stat st {};
  if (::stat(model_path.c_str(), &st) != 0) throw Error("measuring the SSD: cannot stat " + model_path);
  const std::string ssd_key = "ssd " + std::to_string(major(st.st_dev)) + ":" + std::to_string(minor(st.st_dev));
  const std::string ram_key = "ram " + std::to_string(std::max(1, n_threads)) + " threads";
  const int64_t now = int64_t(std::time(nullptr));
  nlohmann::json cache = load_cache();
  DeviceSpeed s;
  int64_t ssd_at = 0, ram_at = 0;
  if (!remeasure) {
    s.ssd_gbps = cached(cache, ssd_key, now, &ssd_at);
    s.ram_gbps = cached(cache, ram_key, now, &ram_at);
  }
  const bool ssd_cached = s.ssd_gbps > 0, ram_cached = s.ram_gbps > 0;
  if (!ssd_cached) {
    s.ssd_gbps = measure_ssd_gbps(model_path, ssd_seconds);
    cache[ssd_key] = {{"gbps", s.ssd_gbps}, {"measured_at", now}};
  }
  if (!ram_cached) {
    s.ram_gbps = measure_ram_gbps(n_threads);
    cache[ram_key] = {{"gbps", s.ram_gbps}, {"measured_at", now}};
  }
  if (!ssd_cached || !ram_cached) save_cache(cache);
  if (!ssd_cached && !ram_cached)
    s.source = "measured now";
  else
    s.source = "measured " + date_of(ssd_cached && ram_cached ? std::min(ssd_at, ram_at) : ssd_cached ? ssd_at : ram_at) +
               (ssd_cached && ram_cached ? "" : " and now") + ", cached in " + cache_path();
  return s;
}

Plan plan_on_this_machine(const gguf::File& file, const ModelConfig& config, PlanInputs in, bool ram_given,
                          bool ssd_given, int n_threads, bool remeasure) {
  if (ram_given || ssd_given) in.speed_source = "given";
  Plan plan = make_plan(file, config, in);
  // What streams, and how deep to read ahead, depends on the speeds; a plan that fits does not.
  if ((plan.streams() || remeasure) && !(ram_given && ssd_given)) {
    DeviceSpeed d;
    try {
      d = device_speed(file.path(), n_threads, remeasure);
    } catch (const std::exception& e) {
      // The defaults are a worse guess, not a reason to refuse the model.
      in.speed_source += std::string(" (measuring failed: ") + e.what() + ")";
      return plan;
    }
    if (!ram_given) in.ram_gbps = d.ram_gbps;
    if (!ssd_given) in.ssd_gbps = d.ssd_gbps;
    in.speed_source = ram_given ? "RAM given, SSD " + d.source : ssd_given ? "SSD given, RAM " + d.source : d.source;
    plan = make_plan(file, config, in);
  }
  return plan;
}

}  // namespace strata::tier
