#include "tier/gpu/gpu_experts.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

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

// The distinct experts of a routing, ascending (blocks::distinct_experts), as a list.
void distinct(const int32_t* chosen, int n, int n_expert, std::vector<int>& out) {
  out.resize(size_t(n_expert));
  out.resize(size_t(blocks::distinct_experts(chosen, n, n_expert, out.data())));
}

}  // namespace

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

GpuExperts::GpuExperts(const Model& model, backend::Backend& gpu, ThreadPool& pool, const GpuExpertOptions& options)
    : model_(model), gpu_(gpu), cpu_(backend::make_cpu_backend(pool)), options_(options) {
  const ModelConfig& c = model.config();
  if (c.n_expert <= 0) throw Error("gpu expert tier: the model has no experts");
  slot_bytes_ = slot_bytes(model);
  const uint64_t minimum = minimum_vram(model);
  if (options.vram_bytes < minimum)
    throw Error("gpu expert tier: " + std::to_string(options.vram_bytes >> 20) + " MiB of VRAM for experts, below the " +
                std::to_string(minimum >> 20) + " MiB minimum (" + std::to_string(c.n_expert_used) +
                " staging slots of " + std::to_string(slot_bytes_ >> 20) + " MiB, one expert per routed rank)");
  n_slots_ = int(std::min<uint64_t>(options.vram_bytes / slot_bytes_, uint64_t(c.n_layer) * c.n_expert + c.n_expert));
  // Staging for a whole layer's experts where a third of the arena allows, at least k slots.
  n_stage_ = std::clamp(n_slots_ / 3, std::min(n_slots_, c.n_expert_used), c.n_expert);
  n_cache_ = n_slots_ - n_stage_;

  int n_moe = 0;
  for (int l = 0; l < c.n_layer; ++l) n_moe += c.is_moe_layer(l);
  layers_.resize(size_t(c.n_layer));
  arena_ = static_cast<uint8_t*>(gpu_.alloc(uint64_t(n_slots_) * slot_bytes_));
  host_bytes_ = uint64_t(n_moe) * c.n_expert * slot_bytes_;
  try {
    host_arena_ = static_cast<uint8_t*>(gpu_.alloc_host(host_bytes_));
    map_dev_ = static_cast<int32_t*>(gpu_.alloc(2 * size_t(c.n_expert) * sizeof(int32_t)));
    cache_map_dev_ = static_cast<int32_t*>(gpu_.alloc(size_t(c.n_layer) * c.n_expert * sizeof(int32_t)));
    const size_t n_slots_batch = size_t(options.n_batch) * c.n_expert_used;
    chosen_ = static_cast<int32_t*>(gpu_.alloc_host(n_slots_batch * sizeof(int32_t)));
    weights_ = static_cast<float*>(gpu_.alloc_host(n_slots_batch * sizeof(float)));
    x_ = static_cast<float*>(gpu_.alloc_host(size_t(kDecodeTokens) * c.n_embd * sizeof(float)));
    out_ = static_cast<float*>(gpu_.alloc_host(size_t(kDecodeTokens) * c.n_expert_used * c.n_embd * sizeof(float)));
    map_ = static_cast<int32_t*>(gpu_.alloc_host(2 * size_t(c.n_expert) * sizeof(int32_t)));
  } catch (...) {
    release();
    throw;
  }
  in_.resize(size_t(kDecodeTokens) * c.n_embd);
  down_out_.resize(size_t(kDecodeTokens) * c.n_embd);
  gate_.resize(size_t(kDecodeTokens) * c.n_ff_expert);
  up_.resize(size_t(kDecodeTokens) * c.n_ff_expert);
  slots_.resize(size_t(kDecodeTokens) * c.n_expert_used);
  cpu_map_.resize(size_t(c.n_expert));

  // Views of each layer's slots; the cache: an even share of its slots per MoE layer.
  std::vector<int32_t> cache_map(size_t(c.n_layer) * c.n_expert, -1);
  int next_host = 0, next_cache = 0, moe_index = 0;
  for (int l = 0; l < c.n_layer; ++l) {
    if (!c.is_moe_layer(l)) continue;
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
    L.cache_slot.assign(size_t(c.n_expert), -1);
    const int share = n_cache_ / n_moe + (moe_index < n_cache_ % n_moe ? 1 : 0);
    std::vector<int> order = l < int(options.preferred.size()) ? options.preferred[size_t(l)] : std::vector<int>{};
    for (int e = 0; e < c.n_expert; ++e)
      if (std::find(order.begin(), order.end(), e) == order.end()) order.push_back(e);
    for (int i = 0; i < std::min(share, c.n_expert); ++i) {
      const int e = order[size_t(i)];
      if (e < 0 || e >= c.n_expert) throw Error("gpu expert tier: preferred expert " + std::to_string(e) + " of layer " +
                                                std::to_string(l) + " is out of range");
      L.cache_slot[size_t(e)] = next_cache;
      cache_map[size_t(l) * c.n_expert + e] = next_cache++;
    }
    ++moe_index;
  }
  // The host arena: every expert's slices from the model's bytes (once, in parallel), then the cache's
  // experts into VRAM.
  std::vector<int> moe_layers;
  for (int l = 0; l < c.n_layer; ++l)
    if (c.is_moe_layer(l)) moe_layers.push_back(l);
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
  for (int l = 0; l < c.n_layer; ++l) {
    if (!c.is_moe_layer(l)) continue;
    const LayerSlots& L = layers_[size_t(l)];
    for (int e = 0; e < c.n_expert; ++e)
      if (L.cache_slot[size_t(e)] >= 0)
        gpu_.upload(arena_ + size_t(L.cache_slot[size_t(e)]) * slot_bytes_,
                    host_arena_ + size_t(L.first_host_slot + e) * slot_bytes_, slot_bytes_);
  }
  gpu_.upload(cache_map_dev_, cache_map.data(), cache_map.size() * sizeof(int32_t));
  counters_.present = true;
  published_ = counters_;
}

GpuExperts::~GpuExperts() { release(); }

void GpuExperts::release() {
  gpu_.synchronize();
  for (void* p : {static_cast<void*>(arena_), static_cast<void*>(map_dev_), static_cast<void*>(cache_map_dev_)})
    if (p) gpu_.free(p);
  for (void* p : {static_cast<void*>(host_arena_), static_cast<void*>(chosen_), static_cast<void*>(weights_),
                  static_cast<void*>(x_), static_cast<void*>(out_), static_cast<void*>(map_)})
    if (p) gpu_.free_host(p);
  arena_ = host_arena_ = nullptr;
  map_dev_ = cache_map_dev_ = chosen_ = map_ = nullptr;
  x_ = weights_ = out_ = nullptr;
}

void GpuExperts::compute(ForwardPass& pass, int layer, const backend::ExpertBatch& batch) {
  if (batch.n_tokens > options_.n_batch)
    throw Error("gpu expert tier: a batch of " + std::to_string(batch.n_tokens) + " tokens, sized for " +
                std::to_string(options_.n_batch));
  if (batch.n_tokens <= kDecodeTokens) decode(pass, layer, batch);
  else prompt(pass, layer, batch);
  std::lock_guard<std::mutex> lock(mutex_);
  published_ = counters_;
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

void GpuExperts::decode(ForwardPass& pass, int layer, const backend::ExpertBatch& b) {
  (void)pass;
  const ModelConfig& c = model_.config();
  const LayerSlots& L = layers_[size_t(layer)];
  const int n_slots = b.n_tokens * b.k;
  const auto t0 = Clock::now();
  gpu_.download(chosen_, b.chosen, size_t(n_slots) * sizeof(int32_t));
  counters_.wait_seconds += since(t0);
  hits_.clear();
  misses_.clear();
  std::vector<int>& used = copies_;  // reused as the distinct list first
  distinct(chosen_, n_slots, c.n_expert, used);
  for (int e : used) (L.cache_slot[size_t(e)] >= 0 ? hits_ : misses_).push_back(e);
  counters_.vram_expert_needed += used.size();
  counters_.vram_expert_hits += hits_.size();
  // The plan's share of the misses goes over PCIe, at most what staging holds; the CPU takes the rest.
  const int n_copy = std::min(n_stage_, int(std::lround(options_.copy_share * double(misses_.size()))));
  copies_.assign(misses_.begin(), misses_.begin() + n_copy);
  misses_.erase(misses_.begin(), misses_.begin() + n_copy);

  // The GPU's share: cached experts and copies, in flight while the CPU computes.
  int32_t* map = map_;
  if (!hits_.empty() || !copies_.empty()) {
    std::fill(map, map + c.n_expert, -1);
    for (int e : hits_) map[e] = L.cache_slot[size_t(e)];
    gpu_.copies_after_ops();  // staging and the map: free once the previous layer's experts ran
    stage(L, copies_, 0, map);
    gpu_.upload_async(map_dev_, map, size_t(c.n_expert) * sizeof(int32_t));
    gpu_.ops_after_copies();
    backend::ExpertWeights w = L.arena;
    w.slot_of = map_dev_;
    gpu_.moe_experts(w, b);
    counters_.experts_gpu += hits_.size() + copies_.size();
  }
  if (misses_.empty()) return;
  // The CPU's share, from host RAM, on the routing and inputs copied over.
  const auto t1 = Clock::now();
  gpu_.download(x_, b.x, size_t(b.n_tokens) * c.n_embd * sizeof(float));
  gpu_.download(weights_, b.weights, size_t(n_slots) * sizeof(float));
  std::fill(cpu_map_.begin(), cpu_map_.end(), -1);
  for (int e : misses_) cpu_map_[size_t(e)] = L.first_host_slot + e;
  backend::ExpertWeights w = L.host;
  w.slot_of = cpu_map_.data();
  backend::ExpertBatch hb = b;
  hb.x = x_;
  hb.chosen = chosen_;
  hb.weights = weights_;
  hb.out = out_;
  hb.host = {in_.data(), gate_.data(), up_.data(), down_out_.data(), slots_.data()};
  cpu_->moe_experts(w, hb);
  counters_.cpu_compute_seconds += since(t1);
  counters_.experts_cpu += misses_.size();
  // Its slots cross back at the boundary; the ops after this layer's experts wait for them.
  for (int s = 0; s < n_slots; ++s)
    if (std::find(misses_.begin(), misses_.end(), chosen_[s]) != misses_.end())
      gpu_.upload_async(b.out + size_t(s) * c.n_embd, out_ + size_t(s) * c.n_embd, size_t(c.n_embd) * sizeof(float));
  gpu_.ops_after_copies();
}

void GpuExperts::prompt(ForwardPass& pass, int layer, const backend::ExpertBatch& b) {
  (void)pass;
  const ModelConfig& c = model_.config();
  const LayerSlots& L = layers_[size_t(layer)];
  const int n_slots = b.n_tokens * b.k;
  const auto t0 = Clock::now();
  gpu_.download(chosen_, b.chosen, size_t(n_slots) * sizeof(int32_t));
  counters_.wait_seconds += since(t0);
  hits_.clear();
  misses_.clear();
  distinct(chosen_, n_slots, c.n_expert, copies_);
  for (int e : copies_) (L.cache_slot[size_t(e)] >= 0 ? hits_ : misses_).push_back(e);
  counters_.vram_expert_needed += copies_.size();
  counters_.vram_expert_hits += hits_.size();
  counters_.experts_gpu += copies_.size();
  if (misses_.empty()) {  // everything cached: the layer's cache map as it stands
    backend::ExpertWeights w = L.arena;
    w.slot_of = cache_map_dev_ + size_t(layer) * c.n_expert;
    gpu_.moe_experts(w, b);
    return;
  }
  // Waves of copies into staging, two halves when a wave fits in half, each wave's compute
  // overlapping the next wave's copies; the cached experts run with the first wave.
  const bool halves = n_stage_ >= 2 && int(misses_.size()) > n_stage_;
  const int wave = halves ? n_stage_ / 2 : n_stage_;
  const auto t1 = Clock::now();
  for (int i = 0, first = 0; first < int(misses_.size()); ++i, first += wave) {
    const std::vector<int> experts(misses_.begin() + first,
                                   misses_.begin() + std::min<int>(first + wave, int(misses_.size())));
    int32_t* map = map_ + size_t(i % 2) * c.n_expert;
    int32_t* map_dev = map_dev_ + size_t(i % 2) * c.n_expert;
    std::fill(map, map + c.n_expert, -1);
    if (i == 0)
      for (int e : hits_) map[e] = L.cache_slot[size_t(e)];
    if (i == 0) gpu_.copies_after_ops();  // staging: free once the previous layer's experts ran
    stage(L, experts, halves ? (i % 2) * wave : 0, map);
    gpu_.upload_async(map_dev, map, size_t(c.n_expert) * sizeof(int32_t));
    gpu_.ops_after_copies();
    // Copies queued from here on (the wave after next's half) wait for the waves computed so far.
    if (halves) gpu_.copies_after_ops();
    backend::ExpertWeights w = L.arena;
    w.slot_of = map_dev;
    gpu_.moe_experts(w, b);
    if (!halves) gpu_.copies_after_ops();  // one staging area: the next wave waits for this one
  }
  counters_.gpu_compute_seconds += since(t1);
}

}  // namespace strata::tier
