#pragma once
// The GPU expert tier (issue 14's runtime) for a GPU session whose routed experts do not fit in
// VRAM: attention, norms, router and shared experts run on the GPU (the session uploads them);
// every routed expert lives in pinned host RAM, and a VRAM arena of expert slots holds
//   - a cache: per MoE layer the experts the plan keeps there (hottest first), computed by the GPU;
//   - staging slots that copies over PCIe land in.
// Decode (a few tokens): the routing comes to the host once per layer; cached experts are
// computed on the GPU while the CPU computes the misses from host RAM, except the plan's share of
// them, copied to staging and computed by the GPU (PCIe and host-RAM bandwidth used at once);
// the CPU's slots are copied back at the boundary. Prompt batches: each layer's needed experts
// not cached are copied to staging once per batch, in waves (double-buffered when staging holds
// two) overlapped with the GPU's compute of the previous wave.
//
// Nothing is allocated per token: host buffers (pinned) and device buffers are sized at
// construction for n_batch tokens. Slot layout: an expert's gate, up and down slices in one slot
// of slot_bytes, the same in VRAM and in the host arena, so one copy moves an expert.
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "backend/backend.h"
#include "model/blocks.h"
#include "model/model.h"
#include "ops/thread_pool.h"
#include "tier/stats.h"

namespace strata::tier {

struct GpuExpertOptions {
  uint64_t vram_bytes = 0;  // for the slot arena (cache and staging); below minimum_vram(): an error
  // Of a decode step's misses, the share copied to the GPU rather than computed by the CPU (the
  // plan's LayerPlacement::copy_share).
  double copy_share = 0.0;
  // Per layer (all n_layer; dense layers empty), the experts to cache first, most wanted first;
  // empty: ascending ids.
  std::vector<std::vector<int>> preferred;
  int n_batch = 512;
};

class GpuExperts final : public ExpertCompute {
 public:
  // gpu: the session's backend (its stream orders the copies' fences); pool: the session's
  // threads, for the CPU's share.
  GpuExperts(const Model& model, backend::Backend& gpu, ThreadPool& pool, const GpuExpertOptions& options);
  ~GpuExperts() override;
  GpuExperts(const GpuExperts&) = delete;
  GpuExperts& operator=(const GpuExperts&) = delete;

  bool computes(int layer) const override { return model_.config().is_moe_layer(layer); }
  void compute(ForwardPass& pass, int layer, const backend::ExpertBatch& batch) override;

  // One expert's slot (gate, up and down slices of the widest MoE layer, aligned).
  static uint64_t slot_bytes(const Model& model);
  // The least arena that works: staging for one expert per routed rank (k slots).
  static uint64_t minimum_vram(const Model& model);
  int n_cache_slots() const { return n_cache_; }
  int n_staging_slots() const { return n_stage_; }
  uint64_t host_bytes() const { return host_bytes_; }
  GpuTierCounters counters() const {  // safe from any thread: as of the last layer computed
    std::lock_guard<std::mutex> lock(mutex_);
    return published_;
  }

 private:
  struct LayerSlots {                // offsets of an expert's slices in its slot, and their views
    backend::ExpertWeights arena;    // over the VRAM arena (slot_of set per call)
    backend::ExpertWeights host;     // over the host arena, slot = layer's first + expert
    int first_host_slot = 0;
    std::vector<int32_t> cache_slot;  // [n_expert]: arena slot, or -1
  };
  void release();  // device and pinned memory back (the destructor, a failed constructor)
  void decode(ForwardPass& pass, int layer, const backend::ExpertBatch& batch);
  void prompt(ForwardPass& pass, int layer, const backend::ExpertBatch& batch);
  // Queues copies of `experts` into staging slots from `first_stage`; fills map[e] with their slots.
  void stage(const LayerSlots& L, const std::vector<int>& experts, int first_stage, int32_t* map);

  const Model& model_;
  backend::Backend& gpu_;
  std::unique_ptr<backend::Backend> cpu_;
  GpuExpertOptions options_;
  uint64_t slot_bytes_ = 0, host_bytes_ = 0;
  int n_slots_ = 0, n_cache_ = 0, n_stage_ = 0;  // arena slots: cache first, then staging
  uint8_t* arena_ = nullptr;                     // VRAM
  uint8_t* host_arena_ = nullptr;                // pinned: [moe layers x n_expert] slots
  std::vector<LayerSlots> layers_;               // per layer (dense layers unused)
  // Device: slot maps [2 x n_expert] (the call's, two so that a wave's map is not overwritten
  // while the previous wave reads it) and [n_layer x n_expert] (each layer's cache).
  int32_t* map_dev_ = nullptr;
  int32_t* cache_map_dev_ = nullptr;
  // Pinned host mirrors of what crosses: the routing, inputs, weights, the CPU's slots, the maps.
  int32_t* chosen_ = nullptr;
  float *x_ = nullptr, *weights_ = nullptr, *out_ = nullptr;
  int32_t* map_ = nullptr;  // [2 x n_expert]
  // The CPU's scratch (ExpertBatch::HostScratch), sized for n_batch tokens.
  std::vector<float> in_, gate_, up_, down_out_;
  std::vector<int32_t> slots_, cpu_map_;
  std::vector<int> hits_, misses_, copies_;
  GpuTierCounters counters_;    // the forward thread's
  mutable std::mutex mutex_;
  GpuTierCounters published_;  // copied from counters_ after each layer, under mutex_
};

}  // namespace strata::tier
