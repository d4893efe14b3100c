#pragma once
// The GPU expert tier (issue 14's runtime) for a GPU session whose routed experts do not fit in
// VRAM: attention, norms, router and shared experts run on the GPU (the session uploads them);
// every routed expert lives in pinned host RAM, and a VRAM arena of expert slots holds
//   - a cache: the experts the plan keeps in VRAM (three_tier.cpp: the hottest) to begin with,
//     computed by the GPU; its policy is the CPU's expert cache's (ExpertCache, lfu with ageing:
//     one policy, two tiers): a decode step's copies replace the least used experts of any
//     layer, so the cache follows the routing; prompt batches count their uses but copy to
//     staging (a batch routes to nearly every expert: admitting them would flush the cache);
//   - staging slots that copies over PCIe land in when no cache slot may be given up.
// Decode (a few tokens): the routing comes to the host once per layer; cached experts are
// computed on the GPU while the CPU computes the misses from host RAM, except the plan's share of
// them (LayerPlacement::copy_share), copied over PCIe and computed by the GPU (PCIe and host-RAM
// bandwidth used at once); the CPU's slots are copied back at the boundary. Prompt batches: each
// layer's needed experts not cached are copied to staging once per batch, in waves (double-
// buffered when staging holds two) overlapped with the GPU's compute of the previous wave.
//
// Nothing is allocated per token: host buffers (pinned) and device buffers are sized at
// construction for n_batch tokens. Slot layout: an expert's gate, up and down slices in one slot
// of slot_bytes, the same in VRAM and in the host arena, so one copy moves an expert.
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "backend/backend.h"
#include "model/blocks.h"
#include "model/model.h"
#include "ops/thread_pool.h"
#include "tier/plan/plan.h"
#include "tier/stats.h"
#include "tier/stream/expert_cache.h"
#include "tier/stream/routing_stats.h"

namespace strata::tier {

struct ExpertRef {
  int layer = 0, expert = 0;
};

struct GpuExpertOptions {
  uint64_t vram_bytes = 0;  // for the slot arena (cache and staging); below minimum_vram(): an error
  // The experts the cache starts with, hottest first (the plan's experts in VRAM); the cache has
  // a slot for each (the coldest left out where vram_bytes cannot hold them beside staging).
  std::vector<ExpertRef> cached;
  // Per layer: of a decode step's misses, the share copied to the GPU rather than computed by the
  // CPU (the plan's LayerPlacement::copy_share); layers past the end: 0.
  std::vector<double> copy_share;
  int min_staging = 0;  // staging slots at least (the plan's); 0: one per routed rank (k)
  // Of a prompt batch's needed experts not cached, the share copied to the GPU (the plan's
  // prompt_copy_share); the CPU computes the rest from host RAM meanwhile, those with the fewest
  // tokens. 1: every one copied (no CPU scratch for a batch is allocated).
  double prompt_copy_share = 1.0;
  int n_batch = 512;
  // Where each layer's routing is recorded (the Tiering saves it: the next run's plan knows which
  // experts are hot); null: nowhere.
  RoutingStats* routing = nullptr;
};

// The tier's options from a plan with a GPU (plan_three_tiers): its experts in VRAM, hottest
// first; each layer's copy share; its staging (GpuUse::staging_bytes in slots of slot_bytes).
GpuExpertOptions gpu_expert_options(const Plan& plan, uint64_t vram_bytes, uint64_t slot_bytes, int n_batch);

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
  uint64_t vram_bytes() const { return uint64_t(n_slots_) * slot_bytes_; }  // the arena
  int n_staging_slots() const { return n_stage_; }
  uint64_t host_bytes() const { return host_bytes_; }
  // Bytes of the model's mapping given back once the arena held the experts (page cache included).
  uint64_t released_bytes() const { return released_bytes_; }
  // Where layer's expert sits in the VRAM cache now (an arena slot), or -1.
  int cache_slot(int layer, int expert) const { return cache_.find(layer, expert); }
  GpuTierCounters counters() const {  // safe from any thread: as of the last layer computed
    std::lock_guard<std::mutex> lock(mutex_);
    return published_;
  }

 private:
  struct LayerSlots {                // offsets of an expert's slices in its slot, and their views
    backend::ExpertWeights arena;    // over the VRAM arena (slot_of set per call)
    backend::ExpertWeights host;     // over the host arena, slot = layer's first + expert
    int first_host_slot = 0;
  };
  struct Span {  // two marks of one queue (Backend::mark) and the counter their time goes to
    int from = -1, to = -1;
    double GpuTierCounters::*counter = nullptr;
  };
  void release();  // device and pinned memory back (the destructor, a failed constructor)
  // The routing to the host, its distinct experts split into hits_ (cached) and misses_; counts.
  void route(int layer, const backend::ExpertBatch& batch);
  void decode(int layer, const backend::ExpertBatch& batch);
  void prompt(int layer, const backend::ExpertBatch& batch);
  // Queues copies of `experts` into staging slots from `first_stage`; fills map[e] with their slots.
  void stage(const LayerSlots& L, const std::vector<int>& experts, int first_stage, int32_t* map);
  // Queues the copy of `layer`'s expert e into the cache slot the policy gives up; fills map[e].
  // False (nothing queued): no slot may be given up now.
  bool admit(int layer, int e, int32_t* map);
  // The GPU's share of a prompt batch: hits, then the misses left to it in waves of copies.
  void prompt_gpu(int layer, const LayerSlots& L, const backend::ExpertBatch& b);
  // The CPU computes `experts` of the batch from host RAM (x_, chosen_ and weights_ on the host)
  // into out_, slots marked in cpu_map_; upload_cpu_slots sends those slots to b.out.
  void compute_on_cpu(const LayerSlots& L, const backend::ExpertBatch& b, const std::vector<int>& experts);
  void upload_cpu_slots(const backend::ExpertBatch& b);
  // The worker thread (prompt batches with a CPU share): runs one job at a time.
  struct CpuJob {
    const LayerSlots* slots = nullptr;
    const backend::ExpertBatch* batch = nullptr;
  };
  void cpu_worker();
  void cpu_start(const LayerSlots& L, const backend::ExpertBatch& b);  // computes cpu_experts_
  double cpu_wait();                                                   // its seconds; rethrows its exception
  // The GPU computes the experts map `wave` names (map_, pinned; uploaded to map_dev_'s same
  // map): the map's upload, the fence after the copies queued before, the compute, timed.
  // overlap: copies queued later wait only for the ops before this compute.
  void compute_on_gpu(const LayerSlots& L, const backend::ExpertBatch& batch, int wave, bool overlap);
  // Slot maps: one per prompt wave (each wave at least one expert) and decode's.
  size_t n_maps() const { return size_t(model_.config().n_expert) + 1; }
  // Copies and compute of earlier layers, timed on the device: their seconds into the counters
  // (all reached: the routing's download waited for the ops, the ops for the copies).
  void collect_spans();

  const Model& model_;
  backend::Backend& gpu_;
  std::unique_ptr<backend::Backend> cpu_;
  GpuExpertOptions options_;
  int cpu_rows_ = 0;  // tokens the CPU's host buffers hold: a decode batch's, or a prompt's with a CPU share
  uint64_t slot_bytes_ = 0, host_bytes_ = 0, released_bytes_ = 0;
  int n_slots_ = 0, n_stage_ = 0, n_cache_ = 0;  // arena slots: cache first, then staging (this order: set in it)
  uint8_t* arena_ = nullptr;                     // VRAM
  uint8_t* host_arena_ = nullptr;                // pinned: [moe layers x n_expert] slots
  std::vector<LayerSlots> layers_;               // per layer (dense layers unused)
  ExpertCache cache_;                            // the cache's policy: its slot i is arena slot i
  int32_t* map_dev_ = nullptr;  // device: slot maps [n_maps() x n_expert]
  // Pinned host mirrors of what crosses: the routing, inputs, weights, the CPU's slots, the maps.
  int32_t* chosen_ = nullptr;
  float *x_ = nullptr, *weights_ = nullptr, *out_ = nullptr;
  int32_t* map_ = nullptr;  // [n_maps() x n_expert]
  // The CPU's scratch (ExpertBatch::HostScratch), sized for n_batch tokens.
  std::vector<float> in_, gate_, up_, down_out_;
  std::vector<int32_t> slots_, cpu_map_;
  std::vector<int> used_, hits_, misses_, copies_, experts_, staged_, cpu_experts_;
  std::vector<int> n_tokens_of_;  // a prompt batch's tokens per expert
  std::thread worker_;            // with a prompt CPU share
  std::mutex worker_mutex_;
  std::condition_variable worker_cv_;
  std::optional<CpuJob> worker_job_;  // under worker_mutex_, with the two below; none: idle
  std::exception_ptr worker_error_;
  double worker_seconds_ = 0;
  bool worker_quit_ = false;
  std::vector<Span> spans_;   // timed on the device, not collected yet (reserved: no growth)
  GpuTierCounters counters_;  // the forward thread's
  mutable std::mutex mutex_;
  GpuTierCounters published_;  // copied from counters_ after each layer, under mutex_
};

}  // namespace strata::tier
