#include "tier/plan/device_speed.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "ops/thread_pool.h"
#include "ops/weight.h"
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

// --- GPUs

void apply_lent_h100_profile(PlanInputs& in, GpuOverrides& gpu) {
  in.ram_gbps = 95;
  in.speed_source = "profile lent-h100 (issue 14)";
  gpu.synthetic = true;
  if (gpu.name.empty()) gpu.name = "synthetic H100 (issue 14's lent machine)";
  if (gpu.mem_gbps <= 0) gpu.mem_gbps = 3350;
  if (gpu.pcie_pinned_gbps <= 0) gpu.pcie_pinned_gbps = 55;
  if (gpu.pcie_pageable_gbps <= 0) gpu.pcie_pageable_gbps = 8.6;
  if (gpu.gflops <= 0) gpu.gflops = 150000;
  if (gpu.cpu_batch_gflops <= 0) gpu.cpu_batch_gflops = 1100;
  if (!gpu.mem_given) gpu.mem_bytes = {uint64_t(80e9 * 0.95)};
}

ProcessorSpeed measure_processor(backend::Backend& b, size_t bytes, int n_tokens) {
  ProcessorSpeed s;
  bytes = std::max<size_t>(bytes, size_t(1) << 20);
  std::vector<uint8_t> host(bytes, 1);
  void* a = b.alloc(bytes);
  void* c = b.alloc(bytes);
  // Best of three after a warm-up, each waited for.
  auto best_of = [&](auto&& op) {
    op();
    b.synchronize();
    double best = 1e30;
    for (int rep = 0; rep < 3; ++rep) {
      const auto t0 = Clock::now();
      op();
      b.synchronize();
      best = std::min(best, seconds_since(t0));
    }
    return best;
  };
  s.upload_gbps = double(bytes) / best_of([&] { b.upload(a, host.data(), bytes); }) / 1e9;
  // From pinned memory, as the GPU expert tier copies (its arena is alloc_host's).
  void* pinned = b.alloc_host(bytes);
  std::memset(pinned, 1, bytes);
  s.pinned_upload_gbps = double(bytes) / best_of([&] {
                           b.upload_async(a, pinned, bytes);
                           b.ops_after_copies();  // synchronize() then waits for the copy too
                         }) /
                         1e9;
  b.free_host(pinned);
  s.mem_gbps = 2.0 * double(bytes) / best_of([&] { b.copy(c, a, bytes); }) / 1e9;
  b.free(c);
  b.free(a);
  // A Q4_K matrix of zero blocks (the rate does not depend on the values) on a batch.
  constexpr int64_t kCols = 4096, kRows = 4096;
  const size_t row_bytes = size_t(kCols / 256 * 144);
  std::vector<uint8_t> weights(row_bytes * size_t(kRows), 0);
  std::vector<float> x(size_t(kCols) * size_t(n_tokens), 0.5f);
  void* w = b.alloc(weights.size());
  auto* xd = static_cast<float*>(b.alloc(x.size() * sizeof(float)));
  auto* yd = static_cast<float*>(b.alloc(size_t(kRows) * size_t(n_tokens) * sizeof(float)));
  b.upload(w, weights.data(), weights.size());
  b.upload(xd, x.data(), x.size() * sizeof(float));
  WeightView view;
  view.type = DType::Q4_K;
  view.data = static_cast<const uint8_t*>(w);
  view.n_cols = kCols;
  view.n_rows = kRows;
  view.row_bytes = row_bytes;
  const double t = best_of([&] { b.matmul(view, xd, kCols, n_tokens, yd, kRows); });
  s.gflops = 2.0 * double(kCols) * double(kRows) * n_tokens / t / 1e9;
  b.free(yd);
  b.free(xd);
  b.free(w);
  return s;
}

void resolve_gpus(PlanInputs& in, const GpuOverrides& gpu, int n_threads, bool remeasure) {
  in.gpus.clear();
  if (gpu.mem_given && std::all_of(gpu.mem_bytes.begin(), gpu.mem_bytes.end(), [](uint64_t m) { return m == 0; }))
    return;  // --gpu-mem 0: the two-tier plan
  const bool figures_given = gpu.mem_gbps > 0 && gpu.pcie_pinned_gbps > 0;
  const int n_present = gpu.synthetic ? 0 : backend::cuda_device_count();
  if (gpu.synthetic || (n_present == 0 && gpu.mem_given && figures_given)) {
    // Another machine's GPUs, as described.
    for (size_t i = 0; i < gpu.mem_bytes.size(); ++i) {
      GpuDevice d;
      d.index = int(i);
      d.name = gpu.name.empty() ? "GPU as given" : gpu.name;
      d.mem_bytes = gpu.mem_bytes[i];
      d.mem_gbps = gpu.mem_gbps;
      d.pcie_pinned_gbps = gpu.pcie_pinned_gbps;
      d.pcie_pageable_gbps = gpu.pcie_pageable_gbps > 0 ? gpu.pcie_pageable_gbps : gpu.pcie_pinned_gbps;
      d.gflops = gpu.gflops;
      if (i == 0) d.session_bytes = gpu.session_bytes, d.expert_slot_bytes = gpu.expert_slot_bytes;
      in.gpus.push_back(d);
    }
    in.cpu_batch_gflops = gpu.cpu_batch_gflops;
    return;
  }
  if (n_present == 0) {
    if (gpu.mem_given)
      throw Error(std::string("plan: --gpu-mem given, but ") +
                  (backend::cuda_built() ? "no CUDA device is present" : "this build has no CUDA backend") +
                  "; to plan for another machine's GPU give --gpu-bw and --pcie-bw too, or --profile lent-h100");
    return;  // no GPU: the two-tier plan
  }
  if (gpu.mem_given && gpu.mem_bytes.size() > size_t(n_present))
    throw Error("plan: --gpu-mem lists " + std::to_string(gpu.mem_bytes.size()) + " GPUs, " +
                std::to_string(n_present) + " present");
  const int64_t now = int64_t(std::time(nullptr));
  nlohmann::json cache = load_cache();
  bool changed = false;
  const int n = gpu.mem_given ? int(gpu.mem_bytes.size()) : std::min<int>(n_present, int(kMaxPlanGpus));
  for (int i = 0; i < n; ++i) {
    GpuDevice d;
    d.index = i;
    std::unique_ptr<backend::Backend> b = backend::make_cuda_backend(i);
    d.name = b->name();
    const std::string key = "gpu " + std::to_string(i) + " " + d.name;
    int64_t at = 0;
    const auto it = cache.find(key);
    if (!remeasure && it != cache.end() && it->is_object() &&
        now - it->value("measured_at", int64_t{0}) < kMaxAgeSeconds) {
      d.mem_gbps = it->value("mem_gbps", 0.0);
      d.pcie_pageable_gbps = it->value("pcie_pageable_gbps", 0.0);
      d.pcie_pinned_gbps = it->value("pcie_pinned_gbps", 0.0);
      d.gflops = it->value("gflops", 0.0);
      at = it->value("measured_at", int64_t{0});
    }
    if (!(d.mem_gbps > 0 && d.pcie_pageable_gbps > 0 && d.pcie_pinned_gbps > 0 && d.gflops > 0)) {
      const ProcessorSpeed s = measure_processor(*b);
      d.mem_gbps = s.mem_gbps, d.pcie_pageable_gbps = s.upload_gbps, d.gflops = s.gflops;
      d.pcie_pinned_gbps = s.pinned_upload_gbps;
      cache[key] = {{"mem_gbps", d.mem_gbps},
                    {"pcie_pageable_gbps", d.pcie_pageable_gbps},
                    {"pcie_pinned_gbps", d.pcie_pinned_gbps},
                    {"gflops", d.gflops},
                    {"measured_at", now}};
      changed = true;
    }
    (void)at;
    if (gpu.mem_gbps > 0) d.mem_gbps = gpu.mem_gbps;
    if (gpu.pcie_pinned_gbps > 0) d.pcie_pinned_gbps = gpu.pcie_pinned_gbps;
    if (gpu.pcie_pageable_gbps > 0) d.pcie_pageable_gbps = gpu.pcie_pageable_gbps;
    if (gpu.gflops > 0) d.gflops = gpu.gflops;
    if (gpu.mem_given) {
      d.mem_bytes = gpu.mem_bytes[size_t(i)];
    } else {
      // Free memory less 5% (at least 512 MiB) for the CUDA context, cuBLAS and fragmentation.
      const uint64_t free_bytes = backend::cuda_free_memory(i);
      const uint64_t margin = std::max<uint64_t>(free_bytes / 20, uint64_t(512) << 20);
      d.mem_bytes = free_bytes > margin ? free_bytes - margin : 0;
    }
    if (i == 0) d.session_bytes = gpu.session_bytes, d.expert_slot_bytes = gpu.expert_slot_bytes;
    in.gpus.push_back(d);
  }
  // The CPU's batch rate, through the same seam.
  const std::string cpu_key = "cpu batch " + std::to_string(std::max(1, n_threads)) + " threads";
  in.cpu_batch_gflops = gpu.cpu_batch_gflops;
  if (in.cpu_batch_gflops <= 0) {
    const auto it = cache.find(cpu_key);
    if (!remeasure && it != cache.end() && it->is_object() &&
        now - it->value("measured_at", int64_t{0}) < kMaxAgeSeconds)
      in.cpu_batch_gflops = it->value("gflops", 0.0);
    if (in.cpu_batch_gflops <= 0) {
      ThreadPool pool(std::max(1, n_threads));
      std::unique_ptr<backend::Backend> cpu = backend::make_cpu_backend(pool);
      in.cpu_batch_gflops = measure_processor(*cpu, size_t(64) << 20, 128).gflops;
      cache[cpu_key] = {{"gflops", in.cpu_batch_gflops}, {"measured_at", now}};
      changed = true;
    }
  }
  if (changed) save_cache(cache);
}

Plan plan_on_this_machine(const gguf::File& file, const ModelConfig& config, PlanInputs in, bool ram_given,
                          bool ssd_given, int n_threads, bool remeasure, const GpuOverrides* gpu) {
  if (ram_given || ssd_given) in.speed_source = "given";
  if (gpu) resolve_gpus(in, *gpu, n_threads, remeasure);
  Plan plan = make_plan(file, config, in);
  // What streams, and how deep to read ahead, depends on the speeds; a plan that fits does not,
  // unless a GPU shares the work with the CPU.
  if ((plan.streams() || remeasure || in.uses_gpu()) && !(ram_given && ssd_given)) {
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
