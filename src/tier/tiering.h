#pragma once
// A model's weights placed under a memory budget: the plan (tier/plan) and the streamers that
// carry it out (tier/stream). When the model fits, nothing streams and the sources are null, so
// a session runs exactly as without tiering. One Tiering serves one forward pass at a time.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "model/model.h"
#include "tier/plan/plan.h"
#include "tier/gpu/gpu_experts.h"
#include "tier/plan/replanner.h"
#include "tier/stats.h"
#include "tier/stream/dense_ffn_streamer.h"
#include "tier/stream/expert_streamer.h"
#include "tier/stream/resident_copy.h"
#include "tier/trace/routing_override.h"

namespace strata::tier {

struct TieringOptions {
  uint64_t budget_bytes = 0;  // 0: detect_memory_budget() (machine or cgroup, less a margin)
  int n_ctx = 4096;
  int n_batch = 512;
  DType kv_type = DType::F16;  // the session's KV cache type (the plan counts its bytes)
  bool kv_type_auto = false;    // the plan picks kv_type instead (PlanInputs::kv_type_auto)
  int stream_ffn = 0;           // > 0: stream the dense FFN blocks of the last N layers, whatever the plan
  int prefetch = 2;             // with stream_ffn: read-ahead depth: a ring of dense_ring_pieces(depth) 16 MiB pieces
  bool persist_routing = true;  // MoE: load and save routing statistics (RoutingStats::default_path)
  int revise_every = 256;       // MoE: tokens between plan revisions from observed routing (0: never)
  bool look_ahead = true;       // MoE: read ahead the next layer's router's guess (ExpertStreamerOptions)
  bool co_predict = true;       // MoE: ... and co-activation's
  // The planner's speeds; 0: this machine's (device_speed.h: measured once, cached), looked up
  // only when the plan streams. Tests give them, so that their plans do not depend on the disk.
  double ram_gbps = 0, ssd_gbps = 0;
  int n_threads = 0;  // the threads that run the model (RAM bandwidth depends on them); 0: physical cores
  // Benchmarks only: a routing trace whose experts the MoE layers run instead of their router's
  // (tier/trace/routing_override.h); "": none.
  std::string routing_override;
  // --gpu-mem: VRAM the plan may use on each GPU (the three-tier plan, plan_three_tiers); empty:
  // the two-tier plan (host RAM and SSD).
  std::vector<uint64_t> gpu_mem;
  // With gpu_mem: the GPU session's VRAM besides the routed experts and the expert tier's slot, as
  // the runtime counts them (GpuDevice::session_bytes, expert_slot_bytes; tier/gpu/gpu_session.h
  // fills them); 0: the plan counts its own.
  uint64_t gpu_session_bytes = 0, gpu_expert_slot_bytes = 0;
};


// The plan a Tiering of these options starts from (this machine's speeds where the options give
// none and the plan streams). The server checks a larger context with it before taking memory.
Plan plan_for(const Model& model, const TieringOptions& options);

class Tiering {
 public:
  Tiering(const Model& model, const TieringOptions& options);
  ~Tiering();  // saves routing statistics

  FfnSource* ffn_source() { return dense_.get(); }
  // Null when no layer streams its experts and no routing override is asked for.
  ExpertSource* expert_source();
  // A GPU session's expert tier (VRAM cache, CPU share, PCIe copies): owned here, its counters in
  // stats(); the session computes its MoE layers through it (Session::set_expert_compute).
  void attach_gpu(std::unique_ptr<GpuExperts> gpu) { gpu_ = std::move(gpu); }
  GpuExperts* gpu_experts() { return gpu_.get(); }
  // With --gpu-mem (TieringOptions::gpu_mem) and routing statistics kept: where the GPU tier
  // records the routing (GpuExpertOptions::routing), saved with the tiering; else null.
  RoutingStats* gpu_routing() { return gpu_routing_.get(); }
  bool streaming() const { return dense_ || experts_; }
  // The plan as it stands; a revision replaces it at a token boundary on the thread that runs the
  // model, so only that thread reads it. Other threads use stats() and planned_bytes().
  const Plan& plan() const { return plan_; }
  uint64_t planned_bytes() const;
  TierStats stats() const;  // safe from any thread
  // One line for a person: what streams and the predicted speed.
  std::string summary() const;
  // Several lines (tier::describe_stats) for a run of n_forward tokens in `seconds`.
  std::string describe_stats(const TierStats& s, int n_forward, double seconds) const;

 private:
  class Reviser;
  // A revision from the routing seen so far, solved off the forward thread (Replanner).
  void request_revision();
  // At a token boundary: the revised plan, when one is ready, takes effect.
  void apply_revision();

  const Model& model_;
  TieringOptions options_;
  mutable std::mutex plan_mutex_;  // guards plan_ against readers on other threads
  Plan plan_;
  std::unique_ptr<DenseFfnStreamer> dense_;
  std::unique_ptr<ExpertStreamer> experts_;
  std::unique_ptr<RoutingOverride> override_;  // TieringOptions::routing_override
  std::unique_ptr<ExpertSource> reviser_;   // wraps experts_ (if any): counts tokens, revises the plan
  std::unique_ptr<ResidentCopy> resident_;  // when streaming: resident weights in anonymous memory
  std::unique_ptr<Replanner> replanner_;    // with experts_
  std::string routing_path_;                // where routing statistics are saved ("": nowhere)
  uint64_t revised_at_ = 0;                 // routing tokens seen at the last revision request
  uint64_t n_revisions_ = 0;                // revised plans taken effect (under plan_mutex_)
  int n_pool_slots_ = 0;                    // expert slots beyond the pinned ones, fixed at construction
  std::unique_ptr<GpuExperts> gpu_;         // a GPU session's expert tier, or null
  std::unique_ptr<RoutingStats> gpu_routing_;  // what it routes, from earlier runs on (gpu_mem)
};

}  // namespace strata::tier
