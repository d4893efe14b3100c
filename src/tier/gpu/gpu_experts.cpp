#include "tier/gpu/gpu_experts.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <utility>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util/error.h"

namespace strata::tier {

namespace {

constexpr uint64_t kAlign = 256;
uint64_t aligned(uint64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
// Batches up to this many tokens split their misses between the CPU and copies (decode); larger
// ones copy every needed expert to the GPU once (prompt).
constexpr int kDecodeTokens = 8;

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct Slices {
  uint64_t gate = 0, up = 0, down = 0;  // bytes of one expert's slice of each
};
Slices slices(const ModelConfig& c, const LayerWeights& L) {
  return {uint64_t(c.n_ff_expert) * L.gate_exps.row_bytes, uint64_t(c.n_ff_expert) * L.up_exps.row_bytes,
          uint64_t(c.n_embd) * L.down_exps.row_bytes};
}
uint64_t slot_of_layer(const Slices& s) { return aligned(s.gate) + aligned(s.up) + aligned(s.down); }

// The whole pages of [data, data + bytes) within the model's mapping leave this process and the
// page cache: the pinned arena holds those bytes now, so host RAM holds them once. A page touched
// again faults back in from the file (the same bytes). Bytes outside the mapping: nothing.
uint64_t release_mapped(const gguf::File& file, const uint8_t* data, uint64_t bytes, int fd) {
  const uint8_t* base = file.base();
  if (!base || data < base || data + bytes > base + file.file_size()) return 0;
  const uint64_t page = uint64_t(::sysconf(_SC_PAGESIZE));
  const uint64_t begin = (uint64_t(data - base) + page - 1) / page * page;
  const uint64_t end = (uint64_t(data - base) + bytes) / page * page;
  if (end <= begin) return 0;
  if (::madvise(const_cast<uint8_t*>(base + begin), end - begin, MADV_DONTNEED) != 0) return 0;
  if (fd >= 0) ::posix_fadvise(fd, off_t(begin), off_t(end - begin), POSIX_FADV_DONTNEED);
  return end - begin;
}

}  // namespace

GpuExpertOptions gpu_expert_options(const Plan& plan, uint64_t vram_bytes, uint64_t slot_bytes, int n_batch) {
  GpuExpertOptions o;
  o.vram_bytes = vram_bytes;
  o.n_batch = n_batch;
  std::vector<const PlanUnit*> vram;
  for (const PlanUnit& u : plan.units)
    if (u.kind == UnitKind::expert && u.tier == Tier::vram) vram.push_back(&u);
  // Hottest first; among equals the order the planner fills VRAM in (expert by expert across the
  // layers), so that a cache cut short keeps an even share of each layer.
  std::stable_sort(vram.begin(), vram.end(), [](const PlanUnit* a, const PlanUnit* b) {
    if (a->probability != b->probability) return a->probability > b->probability;
    if (a->expert != b->expert) return a->expert < b->expert;
    return a->layer < b->layer;
  });
  for (const PlanUnit* u : vram) o.cached.push_back({u->layer, u->expert});
  o.copy_share.assign(plan.layers.size(), 0.0);
  for (size_t l = 0; l < plan.layers.size(); ++l) o.copy_share[l] = plan.layers[l].copy_share;
  if (!plan.gpus.empty() && plan.gpus.front().n_staging_slots > 0)
    o.min_staging = plan.gpus.front().n_staging_slots;
  else if (!plan.gpus.empty() && slot_bytes > 0)
    o.min_staging = int((plan.gpus.front().staging_bytes + slot_bytes / 2) / slot_bytes);
  o.prompt_copy_share = plan.prompt_copy_share;
  return o;
}

uint64_t GpuExperts::slot_bytes(const Model& model) {
  const ModelConfig& c = model.config();
  uint64_t s = 0;
  for (int l = 0; l < c.n_layer; ++l)
    if (c.is_moe_layer(l)) s = std::max(s, slot_of_layer(slices(c, model.weights().layers[size_t(l)])));
  return s;
}

uint64_t GpuExperts::minimum_vram(const Model& model) {
  return slot_bytes(model) * uint64_t(std::max(1, model.config().n_expert_used));
}

namespace {
// The arena's slot count for these options (cache and staging), at most every expert plus a
// layer's worth of staging; below the minimum: an error naming it.
int arena_slots(const Model& model, const GpuExpertOptions& options) {
  const ModelConfig& c = model.config();
  if (c.n_expert <= 0) throw Error("gpu expert tier: the model has no experts");
  const uint64_t slot = GpuExperts::slot_bytes(model), minimum = GpuExperts::minimum_vram(model);
  if (options.vram_bytes < minimum)
    throw Error("gpu expert tier: " + std::to_string(options.vram_bytes >> 20) + " MiB of VRAM for experts, below the " +
                std::to_string(minimum >> 20) + " MiB minimum (" + std::to_string(c.n_expert_used) +
                " staging slots of " + std::to_string(slot >> 20) + " MiB, one expert per routed rank)");
  int n_moe = 0;
  for (int l = 0; l < c.n_layer; ++l) n_moe += c.is_moe_layer(l);
  return int(std::min<uint64_t>(options.vram_bytes / slot, uint64_t(n_moe) * c.n_expert + c.n_expert));
}
// Staging: the plan's (at least k slots); where the arena has room beyond the plan's cache, up to
// a whole layer's experts (fewer prompt waves). The cache: the rest.
int staging_slots(const ModelConfig& c, const GpuExpertOptions& options, int n_slots) {
  const int min_stage = std::min(n_slots, std::max(c.n_expert_used, options.min_staging));
  const int n = std::clamp(n_slots - int(options.cached.size()), min_stage, std::max(min_stage, c.n_expert));
  return std::min(n, n_slots);
}
}  // namespace

GpuExperts::GpuExperts(const Model& model, backend::Backend& gpu, ThreadPool& pool, const GpuExpertOptions& options)
    : model_(model),
      gpu_(gpu),
      cpu_(backend::make_cpu_backend(pool)),
      options_(options),
      cpu_rows_(options.prompt_copy_share < 1 ? std::max(kDecodeTokens, options.n_batch) : kDecodeTokens),
      n_slots_(arena_slots(model, options)),
      n_stage_(staging_slots(model.config(), options, n_slots_)),
      n_cache_(n_slots_ - n_stage_),
      cache_(model.config().n_layer, model.config().n_expert,
             std::vector<uint64_t>(size_t(n_cache_), slot_bytes(model))) {
  const ModelConfig& c = model.config();
  slot_bytes_ = slot_bytes(model);
  int n_moe = 0;
  for (int l = 0; l < c.n_layer; ++l) n_moe += c.is_moe_layer(l);
  for (const ExpertRef& r : options.cached)
    if (r.layer < 0 || r.layer >= c.n_layer || !c.is_moe_layer(r.layer) || r.expert < 0 || r.expert >= c.n_expert)
      throw Error("gpu expert tier: cached expert " + std::to_string(r.expert) + " of layer " +
                  std::to_string(r.layer) + " is not a routed expert of this model");

  layers_.resize(size_t(c.n_layer));
  arena_ = static_cast<uint8_t*>(gpu_.alloc(uint64_t(n_slots_) * slot_bytes_));
  host_bytes_ = uint64_t(n_moe) * c.n_expert * slot_bytes_;
  try {
    host_arena_ = static_cast<uint8_t*>(gpu_.alloc_host(host_bytes_));
    map_dev_ = static_cast<int32_t*>(gpu_.alloc(n_maps() * size_t(c.n_expert) * sizeof(int32_t)));
    const size_t n_slots_batch = size_t(options.n_batch) * c.n_expert_used;
    chosen_ = static_cast<int32_t*>(gpu_.alloc_host(n_slots_batch * sizeof(int32_t)));
    weights_ = static_cast<float*>(gpu_.alloc_host(n_slots_batch * sizeof(float)));
    x_ = static_cast<float*>(gpu_.alloc_host(size_t(cpu_rows_) * c.n_embd * sizeof(float)));
    out_ = static_cast<float*>(gpu_.alloc_host(size_t(cpu_rows_) * c.n_expert_used * c.n_embd * sizeof(float)));
    map_ = static_cast<int32_t*>(gpu_.alloc_host(n_maps() * size_t(c.n_expert) * sizeof(int32_t)));
  } catch (...) {
    release();
    throw;
  }
  in_.resize(size_t(cpu_rows_) * c.n_embd);
  down_out_.resize(size_t(cpu_rows_) * c.n_embd);
  gate_.resize(size_t(cpu_rows_) * c.n_ff_expert);
  up_.resize(size_t(cpu_rows_) * c.n_ff_expert);
  slots_.resize(size_t(cpu_rows_) * c.n_expert_used);
  cpu_map_.resize(size_t(c.n_expert));
  n_tokens_of_.resize(size_t(c.n_expert));
  cpu_experts_.reserve(size_t(c.n_expert));
  for (auto* v : {&used_, &hits_, &misses_, &copies_, &experts_, &staged_}) v->reserve(size_t(c.n_expert));
  spans_.reserve(size_t(backend::Backend::kMarks));

  // Views of each layer's slots.
  int next_host = 0;
  std::vector<int> moe_layers;
  for (int l = 0; l < c.n_layer; ++l) {
    if (!c.is_moe_layer(l)) continue;
    moe_layers.push_back(l);
    const LayerWeights& W = model.weights().layers[size_t(l)];
    const Slices s = slices(c, W);
    LayerSlots& L = layers_[size_t(l)];
    auto views = [&](uint8_t* base) {
      backend::ExpertWeights w;
      w.gate = W.gate_exps.rows(0, c.n_ff_expert);
      w.up = W.up_exps.rows(0, c.n_ff_expert);
      w.down = W.down_exps.rows(0, c.n_embd);
      w.gate.data = base;
      w.up.data = base + aligned(s.gate);
      w.down.data = base + aligned(s.gate) + aligned(s.up);
      w.gate_stride = w.up_stride = w.down_stride = slot_bytes_;
      return w;
    };
    L.arena = views(arena_);
    L.host = views(host_arena_);
    L.first_host_slot = next_host;
    next_host += c.n_expert;
  }
  // The cache's first content: the plan's experts, hottest first, while slots last (the plan's
  // experts are lfu's first content only: they leave like any other).
  std::vector<bool> named(size_t(c.n_layer) * c.n_expert, false);
  for (int i = 0; i < int(options.cached.size()); ++i) {
    const ExpertRef& r = options.cached[size_t(i)];
    if (named[size_t(r.layer) * c.n_expert + r.expert])
      throw Error("gpu expert tier: expert " + std::to_string(r.expert) + " of layer " + std::to_string(r.layer) +
                  " is listed twice among the cached");
    named[size_t(r.layer) * c.n_expert + r.expert] = true;
    if (i < n_cache_) cache_.put(i, r.layer, r.expert, ExpertCache::Put::start);
  }
  cache_.set_named(std::move(named));
  // The host arena: every expert's slices from the model's bytes (once, in parallel), then the cache's
  // experts into VRAM.
  const int64_t n_copy = int64_t(n_moe) * c.n_expert;
  pool.parallel_for(n_copy, [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin; i < end; ++i) {
      const int l = moe_layers[size_t(i / c.n_expert)];
      const int e = int(i % c.n_expert);
      const LayerWeights& W = model.weights().layers[size_t(l)];
      const LayerSlots& L = layers_[size_t(l)];
      const Slices s = slices(c, W);
      const size_t slot = size_t(L.first_host_slot + e) * slot_bytes_;
      std::memcpy(host_arena_ + slot, W.gate_exps.row(int64_t(e) * c.n_ff_expert), s.gate);
      std::memcpy(host_arena_ + slot + aligned(s.gate), W.up_exps.row(int64_t(e) * c.n_ff_expert), s.up);
      std::memcpy(host_arena_ + slot + aligned(s.gate) + aligned(s.up), W.down_exps.row(int64_t(e) * c.n_embd),
                  s.down);
    }
  }, n_copy);
  // One copy in host RAM: the experts' pages of the model's mapping go.
  const int fd = ::open(model.file().path().c_str(), O_RDONLY | O_CLOEXEC);
  for (int l : moe_layers) {
    const LayerWeights& W = model.weights().layers[size_t(l)];
    for (const WeightView* v : {&W.gate_exps, &W.up_exps, &W.down_exps})
      released_bytes_ += release_mapped(model.file(), v->data, uint64_t(v->n_rows) * v->row_bytes, fd);
  }
  if (fd >= 0) ::close(fd);
  for (int i = 0; i < n_cache_; ++i) {
    const ExpertCache::Slot& s = cache_.slot(i);
    if (s.layer >= 0)
      gpu_.upload(arena_ + size_t(i) * slot_bytes_,
                  host_arena_ + size_t(layers_[size_t(s.layer)].first_host_slot + s.expert) * slot_bytes_, slot_bytes_);
  }
  // The CPU's share of prompt batches runs beside the thread that queues the GPU's waves (a
  // device on the host, the CPU backend of tests, shares the thread pool: one after the other).
  if (cpu_rows_ > kDecodeTokens && gpu_.kind() != backend::DeviceKind::cpu)
    worker_ = std::thread([this] { cpu_worker(); });
  counters_.present = true;
  counters_.cache_slots = uint64_t(n_cache_);
  counters_.staging_slots = uint64_t(n_stage_);
  published_ = counters_;
}

GpuExperts::~GpuExperts() {
  if (worker_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(worker_mutex_);
      worker_quit_ = true;
    }
    worker_cv_.notify_all();
    worker_.join();
  }
  release();
}

void GpuExperts::cpu_worker() {
  std::unique_lock<std::mutex> lock(worker_mutex_);
  for (;;) {
    worker_cv_.wait(lock, [this] { return worker_quit_ || worker_job_.has_value(); });
    if (worker_quit_) return;
    const CpuJob job = *worker_job_;
    lock.unlock();
    std::exception_ptr error;
    double seconds = 0;
    try {
      const auto t = Clock::now();
      compute_on_cpu(*job.slots, *job.batch, cpu_experts_);
      seconds = since(t);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    worker_error_ = error;
    worker_seconds_ = seconds;
    worker_job_.reset();
    worker_cv_.notify_all();
  }
}

void GpuExperts::cpu_start(const LayerSlots& L, const backend::ExpertBatch& b) {
  std::lock_guard<std::mutex> lock(worker_mutex_);
  worker_job_ = CpuJob{&L, &b};
  worker_cv_.notify_all();
}

double GpuExperts::cpu_wait() {
  std::unique_lock<std::mutex> lock(worker_mutex_);
  worker_cv_.wait(lock, [this] { return !worker_job_.has_value(); });
  if (worker_error_) std::rethrow_exception(std::exchange(worker_error_, nullptr));
  return worker_seconds_;
}

void GpuExperts::release() {
  gpu_.synchronize();
  for (void* p : {static_cast<void*>(arena_), static_cast<void*>(map_dev_)})
    if (p) gpu_.free(p);
  for (void* p : {static_cast<void*>(host_arena_), static_cast<void*>(chosen_), static_cast<void*>(weights_),
                  static_cast<void*>(x_), static_cast<void*>(out_), static_cast<void*>(map_)})
    if (p) gpu_.free_host(p);
  arena_ = host_arena_ = nullptr;
  map_dev_ = chosen_ = map_ = nullptr;
  x_ = weights_ = out_ = nullptr;
}

void GpuExperts::compute(ForwardPass& pass, int layer, const backend::ExpertBatch& batch) {
  (void)pass;
  if (batch.n_tokens > options_.n_batch)
    throw Error("gpu expert tier: a batch of " + std::to_string(batch.n_tokens) + " tokens, sized for " +
                std::to_string(options_.n_batch));
  route(layer, batch);
  if (batch.n_tokens <= kDecodeTokens) decode(layer, batch);
  else prompt(layer, batch);
  cache_.age();  // the next layer's uses weigh more
  std::lock_guard<std::mutex> lock(mutex_);
  published_ = counters_;
}

void GpuExperts::collect_spans() {
  for (const Span& s : spans_) counters_.*s.counter += gpu_.seconds_between(s.from, s.to);
  spans_.clear();
}

void GpuExperts::route(int layer, const backend::ExpertBatch& b) {
  const ModelConfig& c = model_.config();
  const int n_slots = b.n_tokens * b.k;
  const auto t0 = Clock::now();
  gpu_.download(chosen_, b.chosen, size_t(n_slots) * sizeof(int32_t));
  counters_.wait_seconds += since(t0);
  collect_spans();  // the download waited for the ops queued so far, and they for the copies
  if (options_.routing) options_.routing->record(layer, chosen_, b.n_tokens);
  used_.resize(size_t(c.n_expert));
  used_.resize(size_t(blocks::distinct_experts(chosen_, n_slots, c.n_expert, used_.data())));
  hits_.clear();
  misses_.clear();
  // The cache counts each use (lfu) and keeps this layer's hits until the next layer begins.
  cache_.begin_layer(layer);
  for (int e : used_) {
    cache_.record_use(layer, e);
    const int slot = cache_.find(layer, e);
    if (slot >= 0) cache_.confirm(slot);
    (slot >= 0 ? hits_ : misses_).push_back(e);
  }
  counters_.vram_expert_needed += used_.size();
  counters_.vram_expert_hits += hits_.size();
}

void GpuExperts::stage(const LayerSlots& L, const std::vector<int>& experts, int first_stage, int32_t* map) {
  for (size_t i = 0; i < experts.size(); ++i) {
    const int e = experts[i];
    const int slot = n_cache_ + first_stage + int(i);
    gpu_.upload_async(arena_ + size_t(slot) * slot_bytes_, host_arena_ + size_t(L.first_host_slot + e) * slot_bytes_,
                      slot_bytes_);
    map[e] = slot;
  }
  counters_.pcie_bytes += uint64_t(experts.size()) * slot_bytes_;
}

bool GpuExperts::admit(int layer, int e, int32_t* map) {
  const int slot = cache_.victim(slot_bytes_, false);
  if (slot < 0) return false;
  cache_.put(slot, layer, e, ExpertCache::Put::routed);  // kept until the next layer begins
  gpu_.upload_async(arena_ + size_t(slot) * slot_bytes_,
                    host_arena_ + size_t(layers_[size_t(layer)].first_host_slot + e) * slot_bytes_, slot_bytes_);
  map[e] = slot;
  counters_.pcie_bytes += slot_bytes_;
  ++counters_.vram_admitted;
  return true;
}

void GpuExperts::compute_on_gpu(const LayerSlots& L, const backend::ExpertBatch& b, int wave, bool overlap) {
  const int n_expert = model_.config().n_expert;
  int32_t* map_dev = map_dev_ + size_t(wave) * n_expert;
  gpu_.upload_async(map_dev, map_ + size_t(wave) * n_expert, size_t(n_expert) * sizeof(int32_t));
  gpu_.ops_after_copies();
  // Copies queued from here on wait for the ops queued before this compute, not for it.
  if (overlap) gpu_.copies_after_ops();
  Span s{gpu_.mark(false), -1, &GpuTierCounters::gpu_compute_seconds};
  backend::ExpertWeights w = L.arena;
  w.slot_of = map_dev;
  gpu_.moe_experts(w, b);
  s.to = gpu_.mark(false);
  spans_.push_back(s);
}

void GpuExperts::decode(int layer, const backend::ExpertBatch& b) {
  const ModelConfig& c = model_.config();
  const LayerSlots& L = layers_[size_t(layer)];
  const int n_slots = b.n_tokens * b.k;
  // The plan's share of the misses goes over PCIe: into the cache (each copy gives up the slot
  // the policy chooses), else into staging while it lasts; the CPU takes the rest.
  const double share = size_t(layer) < options_.copy_share.size() ? options_.copy_share[size_t(layer)] : 0.0;
  const int n_copy = int(std::lround(share * double(misses_.size())));
  copies_.assign(misses_.begin(), misses_.begin() + n_copy);
  misses_.erase(misses_.begin(), misses_.begin() + n_copy);
  std::fill(map_, map_ + c.n_expert, -1);
  for (int e : hits_) map_[e] = cache_.find(layer, e);
  if (!copies_.empty()) {
    gpu_.copies_after_ops();  // slots given up, staging, the map: free once the last layer's experts ran
    Span s{gpu_.mark(true), -1, &GpuTierCounters::copy_seconds};
    staged_.clear();
    for (int e : copies_)
      if (!admit(layer, e, map_)) staged_.push_back(e);
    if (int(staged_.size()) > n_stage_) {  // no slot to give up and staging full: the CPU's
      for (size_t i = size_t(n_stage_); i < staged_.size(); ++i) {
        misses_.push_back(staged_[i]);
        copies_.erase(std::find(copies_.begin(), copies_.end(), staged_[i]));
      }
      staged_.resize(size_t(n_stage_));
    }
    stage(L, staged_, 0, map_);
    s.to = gpu_.mark(true);
    spans_.push_back(s);
  }
  // The CPU's inputs cross before the GPU's compute is queued: a download waits for the ops
  // queued before it, and the CPU must not wait for the GPU's experts.
  if (!misses_.empty()) {
    const auto t = Clock::now();
    gpu_.download(x_, b.x, size_t(b.n_tokens) * c.n_embd * sizeof(float));
    gpu_.download(weights_, b.weights, size_t(n_slots) * sizeof(float));
    counters_.wait_seconds += since(t);
  }
  // The GPU's share: cached experts and copies, in flight while the CPU computes.
  if (!hits_.empty() || !copies_.empty()) {
    if (copies_.empty()) gpu_.copies_after_ops();  // the map: free once the last layer's experts ran
    compute_on_gpu(L, b, 0, false);
    counters_.experts_gpu += hits_.size() + copies_.size();
  }
  if (misses_.empty()) return;
  // The CPU's share, from host RAM.
  const auto t1 = Clock::now();
  compute_on_cpu(L, b, misses_);
  counters_.cpu_compute_seconds += since(t1);
  counters_.experts_cpu += misses_.size();
  upload_cpu_slots(b);
}

void GpuExperts::compute_on_cpu(const LayerSlots& L, const backend::ExpertBatch& b, const std::vector<int>& experts) {
  std::fill(cpu_map_.begin(), cpu_map_.end(), -1);
  for (int e : experts) cpu_map_[size_t(e)] = L.first_host_slot + e;
  backend::ExpertWeights w = L.host;
  w.slot_of = cpu_map_.data();
  backend::ExpertBatch hb = b;
  hb.x = x_;
  hb.chosen = chosen_;
  hb.weights = weights_;
  hb.out = out_;
  hb.host = {in_.data(), gate_.data(), up_.data(), down_out_.data(), slots_.data()};
  cpu_->moe_experts(w, hb);
}

void GpuExperts::upload_cpu_slots(const backend::ExpertBatch& b) {
  // The CPU's slots cross back at the boundary, runs of neighbours in one copy; the ops after this
  // layer's experts wait for them.
  const size_t row = size_t(model_.config().n_embd);
  const int n_slots = b.n_tokens * b.k;
  for (int s = 0; s < n_slots;) {
    if (cpu_map_[size_t(chosen_[s])] < 0) {
      ++s;
      continue;
    }
    int end = s + 1;
    while (end < n_slots && cpu_map_[size_t(chosen_[end])] >= 0) ++end;
    gpu_.upload_async(b.out + size_t(s) * row, out_ + size_t(s) * row, size_t(end - s) * row * sizeof(float));
    s = end;
  }
  gpu_.ops_after_copies();
}

void GpuExperts::prompt(int layer, const backend::ExpertBatch& b) {
  const ModelConfig& c = model_.config();
  const LayerSlots& L = layers_[size_t(layer)];
  // The CPU's share of the misses (the plan's 1 - prompt_copy_share), those with the fewest
  // tokens (the GPU's matmuls gain most from many), computed from host RAM on the worker while
  // this thread queues the GPU's waves; its inputs cross first.
  cpu_experts_.clear();
  const int n_cpu =
      cpu_rows_ >= b.n_tokens ? int(std::lround((1.0 - options_.prompt_copy_share) * double(misses_.size()))) : 0;
  if (n_cpu > 0) {
    const int n_slots = b.n_tokens * b.k;
    std::fill(n_tokens_of_.begin(), n_tokens_of_.end(), 0);
    for (int s = 0; s < n_slots; ++s) ++n_tokens_of_[size_t(chosen_[s])];
    std::stable_sort(misses_.begin(), misses_.end(),
                     [&](int x, int y) { return n_tokens_of_[size_t(x)] > n_tokens_of_[size_t(y)]; });
    cpu_experts_.assign(misses_.end() - n_cpu, misses_.end());
    misses_.resize(misses_.size() - size_t(n_cpu));
    const auto t = Clock::now();
    gpu_.download(x_, b.x, size_t(b.n_tokens) * c.n_embd * sizeof(float));
    gpu_.download(weights_, b.weights, size_t(n_slots) * sizeof(float));
    counters_.wait_seconds += since(t);
  }
  counters_.experts_gpu += used_.size() - cpu_experts_.size();
  if (n_cpu == 0) {
    prompt_gpu(layer, L, b);
    return;
  }
  if (worker_.joinable()) {
    cpu_start(L, b);
    try {
      prompt_gpu(layer, L, b);
    } catch (...) {
      try {
        cpu_wait();  // the worker reads the batch: it ends first
      } catch (...) {
      }
      throw;
    }
    counters_.cpu_compute_seconds += cpu_wait();
  } else {
    prompt_gpu(layer, L, b);
    const auto t = Clock::now();
    compute_on_cpu(L, b, cpu_experts_);
    counters_.cpu_compute_seconds += since(t);
  }
  counters_.experts_cpu += cpu_experts_.size();
  upload_cpu_slots(b);
}

void GpuExperts::prompt_gpu(int layer, const LayerSlots& L, const backend::ExpertBatch& b) {
  const ModelConfig& c = model_.config();
  std::fill(map_, map_ + c.n_expert, -1);
  for (int e : hits_) map_[e] = cache_.find(layer, e);
  if (misses_.empty()) {  // everything cached, or the CPU's
    if (hits_.empty()) return;
    gpu_.copies_after_ops();  // the map: free once the previous layer's experts ran
    compute_on_gpu(L, b, 0, false);
    return;
  }
  // Waves of copies into staging, two halves when a wave fits in half, each wave's compute
  // overlapping the next wave's copies into the other half; the cached experts run with the
  // first wave. Each wave its own map (host and device): a map's upload may still be queued
  // when the host writes the next.
  const bool halves = n_stage_ >= 2 && int(misses_.size()) > n_stage_;
  const int wave = halves ? n_stage_ / 2 : n_stage_;
  gpu_.copies_after_ops();  // staging: free once the previous layer's experts ran
  for (int i = 0, first = 0; first < int(misses_.size()); ++i, first += wave) {
    // Two marks a wave's copies and two its compute: collect before the ring could wrap.
    if (2 * spans_.size() + 4 >= size_t(backend::Backend::kMarks)) collect_spans();
    experts_.assign(misses_.begin() + first, misses_.begin() + std::min<int>(first + wave, int(misses_.size())));
    int32_t* map = map_ + size_t(i) * c.n_expert;
    if (i > 0) std::fill(map, map + c.n_expert, -1);
    Span s{gpu_.mark(true), -1, &GpuTierCounters::copy_seconds};
    stage(L, experts_, halves ? (i % 2) * wave : 0, map);
    s.to = gpu_.mark(true);
    spans_.push_back(s);
    // Halves: the next wave's copies (the other half) overlap this compute, the one after waits
    // for it (the fence of the next wave's compute). One staging area: the next wave waits.
    compute_on_gpu(L, b, i, halves);
    if (!halves) gpu_.copies_after_ops();
  }
}

}  // namespace strata::tier
