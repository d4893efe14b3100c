#pragma once
// One model in memory: the model, its tokenizer and chat format, where its weights live under its
// share of the budget (tier::Tiering, planned for one context) and the session generations run
// in. The registry decides when a host is made, re-planned and dropped; the host does the work
// and throws domain errors (load_failed, does_not_fit) naming the model.
#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "model/model.h"
#include "runtime/session.h"
#include "server/keep_alive.h"
#include "server/model_catalogue.h"
#include "server/prompt.h"
#include "tier/tiering.h"
#include "tokenizer/tokenizer.h"

namespace strata::server {

// How hosts are planned: the session defaults and the planner's speeds.
struct HostOptions {
  SessionParams session;  // n_ctx, n_batch, n_threads, kv_type defaults
  // The planner's speeds (GB/s); 0: this machine's, measured once when a plan streams. Tests
  // give them so that plans do not depend on the disk.
  double ram_gbps = 0, ssd_gbps = 0;
  // The plan picks the KV cache type (PlanInputs::kv_type_auto) instead of session.kv_type; where
  // sessions run on the GPU, the widest type that keeps them there (gpu_kv_type).
  bool kv_type_auto = false;
  // --gpu-mem: a MoE model's session on the GPU within this much VRAM, its routed experts in host
  // RAM (tier/gpu/gpu_session.h); 0: none. gpu_copy_share < 0: the plan's.
  uint64_t gpu_mem = 0;
  double gpu_copy_share = -1;
};

class ModelHost {
 public:
  ModelHost() = default;
  ~ModelHost();  // the GPU expert tier goes before the session whose backend it uses
  ModelHost(const ModelHost&) = delete;
  ModelHost& operator=(const ModelHost&) = delete;
  // Loads the model file, its tokenizer and chat format (the template /api/create stored, else
  // the file's): nothing is planned yet (plan()). load_failed naming the file and the reason.
  static std::shared_ptr<ModelHost> open(const ModelEntry& entry, const HostOptions& options);

  std::string name;
  std::string path;
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<PromptFormat> prompt_format;
  double load_seconds = 0;  // open() and the first plan
  SessionParams defaults;

  // One generation at a time: a Session is one KV cache and is not thread-safe. Callers hold
  // run_mutex while they use session_for()'s result.
  std::timed_mutex run_mutex;
  // The session for these parameters (n_ctx, n_threads; 0: the server's defaults), recreated
  // when they change. Keeping it lets the next request reuse the evaluated prompt prefix.
  // Throws when the context is larger than the one the model is planned for (the registry's
  // fit_context() first).
  Session& session_for(int n_ctx, int n_threads);
  // The session embeddings run in: the one session_for() keeps, whatever its context (a second
  // session would hold a second KV cache the memory plan does not count). Embedding clears its
  // history, so the next generation evaluates its whole prompt. Also used under run_mutex.
  Session& embed_session(int n_threads);
  // The context a session with this n_ctx gets (clamped to the model's training context; 0:
  // the default).
  int effective_n_ctx(int n_ctx) const;
  // The context the memory plan counts a KV cache for: the largest a session may have. It only
  // grows while the model is loaded.
  int planned_n_ctx() const { return planned_n_ctx_; }
  // The KV cache type sessions get: the default's, or with kv_type_auto the current plan's.
  DType kv_type() const { return kv_type_; }

  // --- planning (the registry calls these; it holds run_mutex for a re-plan)
  // What a plan for this context would hold with every weight resident: the file, the KV cache
  // and scratch.
  uint64_t bytes_wanted(int n_ctx) const;
  // Plans the weights for a context of n_ctx tokens (effective) under budget_bytes and takes the
  // memory; the old plan and session go first. does_not_fit naming the model, the context and
  // the planner's reason.
  void plan(int n_ctx, uint64_t budget_bytes);
  // Whether plan() would fit, without taking memory: does_not_fit as plan() would throw it.
  void check_plan(int n_ctx, uint64_t budget_bytes) const;
  // Bytes the current plan holds (0 when none); placement and streaming statistics.
  uint64_t planned_bytes() const;
  bool has_plan() const;
  tier::TierStats stats() const;
  bool streaming() const;
  std::string summary() const;  // the plan, for the log
  // GPU memory the session holds now (weights, KV cache, activations; 0 on the CPU or without a
  // session): /api/ps's size_vram. Readable from any thread.
  uint64_t vram_bytes() const { return vram_bytes_.load(); }

 private:
  friend class ModelRegistry;
  tier::TieringOptions tiering_options(int n_ctx, uint64_t budget_bytes) const;

  // A new session's GPU expert tier, as the plan says (--gpu-mem on a MoE model); under run_mutex.
  void attach_gpu_tier(Session& session);
  // The tier goes before its session (it queues on the session's backend).
  void detach_gpu_tier();

  double ram_gbps_ = 0, ssd_gbps_ = 0;
  uint64_t gpu_mem_ = 0;
  double gpu_copy_share_ = -1;
  // Replaced only with run_mutex held; tiering_mutex_ guards the pointer against readers
  // (stats, planned bytes) on other threads.
  mutable std::mutex tiering_mutex_;
  std::unique_ptr<tier::Tiering> tiering_;
  std::unique_ptr<Session> session_;  // under run_mutex
  std::atomic<int> planned_n_ctx_{0};
  bool kv_type_auto_ = false;
  std::atomic<DType> kv_type_{DType::F16};
  std::atomic<uint64_t> vram_bytes_{0};  // session_'s, updated wherever session_ changes
  // Guarded by the registry's mutex.
  int n_active_ = 0;  // admitted requests, running or waiting for run_mutex
  KeepAlive keep_alive_;
  bool unload_when_idle_ = false;  // unloaded while requests ran: the last one's release unloads it
};

}  // namespace strata::server
