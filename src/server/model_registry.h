#pragma once
// The models `strata serve` runs, put together from its parts: the model catalogue (files, names,
// metadata, digests), the memory arbiter (one budget, which idle model goes), the model hosts
// (a loaded model, its plan and session) and the keep-alive reaper. A model is loaded on first
// use and stays loaded until its keep-alive runs out (default 5 minutes, as Ollama's;
// keep_alive 0 unloads it after the request).
//
// A model is planned (tier/) for one context: its KV cache is counted in the memory budget for
// that many tokens. A request asking for more (options.num_ctx) re-plans it for the larger
// context, as Ollama reloads a model for a new num_ctx, or is refused when that cannot fit.
// Every failure is a domain error (errors.h); the API layer maps it to an HTTP status.
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "server/keep_alive.h"
#include "server/memory_arbiter.h"
#include "server/model_catalogue.h"
#include "server/model_host.h"
#include "tier/stats.h"

namespace strata::server {

struct RegistryOptions {
  std::string models_dir;   // every *.gguf here is a model
  std::string single_file;  // when set, the only model
  // Folders /api/create ("from") and /api/pull may take local GGUF files from, besides the
  // models folder; no request reads a file anywhere else.
  std::vector<std::string> import_dirs;
  SessionParams session;  // defaults for sessions: n_ctx, n_batch, n_threads
  int max_queue = 32;     // requests per model running or waiting; more get 503
  // How long a model stays loaded after a request that gives no keep_alive; < 0: forever.
  // Ollama's default (5 minutes); `strata serve` takes --keep-alive or OLLAMA_KEEP_ALIVE.
  double keep_alive_s = kDefaultKeepAliveSeconds;
  // Memory for all loaded models together (weights, KV cache, scratch, streaming pools); 0: what
  // the machine or its cgroup has available when the server starts, less a margin. A model that
  // does not fit what is left streams its weights from the SSD (tier/); idle models are unloaded
  // first when that makes room.
  uint64_t budget_bytes = 0;
  // The planner's speeds (GB/s); 0: this machine's. Tests give them.
  double ram_gbps = 0, ssd_gbps = 0;
  // --kv-type auto: each model's plan picks its KV cache type (session.kv_type is ignored).
  bool kv_type_auto = false;
  // --gpu-mem (as `run` and `bench`): VRAM a MoE model's session may use, its routed experts in
  // host RAM through the GPU expert tier (tier/gpu/gpu_session.h); 0: none asked for.
  uint64_t gpu_mem = 0;
  double gpu_copy_share = -1;  // --gpu-copy-share; < 0: the plan's
};

// The model hosts are what API code works with; LoadedModel is their older name.
using LoadedModel = ModelHost;

class ModelRegistry;

// One request's hold on a loaded model (see ModelRegistry::lease). Releasing it starts the
// model's keep-alive.
class ModelLease {
 public:
  ModelLease(ModelRegistry& registry, std::shared_ptr<ModelHost> model, std::optional<double> keep_alive_s,
             double load_seconds)
      : registry_(registry), model_(std::move(model)), keep_alive_s_(keep_alive_s), load_seconds_(load_seconds) {}
  ~ModelLease();
  ModelLease(const ModelLease&) = delete;
  ModelLease& operator=(const ModelLease&) = delete;

  ModelHost& model() const { return *model_; }
  // Re-plans the model for a context of n_ctx tokens if it was planned for fewer (see
  // ModelRegistry::fit_context).
  void fit_context(int n_ctx) const;
  double load_seconds() const { return load_seconds_; }  // 0 unless this request loaded the model

 private:
  ModelRegistry& registry_;
  std::shared_ptr<ModelHost> model_;
  std::optional<double> keep_alive_s_;
  double load_seconds_;
};

// A model in memory, for /api/ps: n_ctx is the context it is planned for.
struct LoadedInfo {
  std::string name;
  std::string path;
  uint64_t size_bytes = 0;  // file + session memory
  int n_ctx = 0;
  std::optional<std::chrono::system_clock::time_point> expires_at;  // nullopt: never
  tier::TierStats tier;                                             // placement and streaming statistics
  uint64_t vram_bytes = 0;  // what its session holds in GPU memory (0 on the CPU)
};

class ModelRegistry {
 public:
  explicit ModelRegistry(RegistryOptions options);
  ~ModelRegistry();

  const RegistryOptions& options() const { return options_; }
  ModelCatalogue& catalogue() { return catalogue_; }
  const MemoryArbiter& arbiter() const { return arbiter_; }

  // --- the catalogue's answers (see ModelCatalogue)
  std::vector<ModelEntry> list() const { return catalogue_.list(); }
  ModelEntry resolve(const std::string& requested) const { return catalogue_.resolve(requested); }
  std::string path_for(const std::string& requested) const { return catalogue_.path_for(requested); }
  std::optional<std::string> importable_gguf(const std::string& requested_path) const {
    return catalogue_.importable_gguf(requested_path);
  }
  std::shared_ptr<const gguf::File> metadata(const ModelEntry& entry) { return catalogue_.metadata(entry); }
  std::string digest(const ModelEntry& entry) { return catalogue_.digest(entry); }

  // Loads the model if needed and admits one request to it, re-planned for a context of n_ctx
  // tokens when that is more than it was planned for (0: the server's default context):
  // not_found (unknown), load_failed, does_not_fit (the context or the model's minimum does not
  // fit the budget), busy (max_queue requests already hold it).
  std::shared_ptr<ModelLease> lease(const std::string& requested, std::optional<double> keep_alive_s, int n_ctx = 0);
  // Makes the loaded model's plan count a KV cache of n_ctx tokens (clamped to its training
  // context; 0: the default), when it counts fewer: waits for the request running on it, then
  // plans the weights again under what the budget leaves (unloading idle models to make room),
  // the old sessions dropped. does_not_fit naming the model, the context and the planner's
  // reason when even the minimum does not fit; the model then keeps its context.
  void fit_context(ModelHost& model, int n_ctx);
  // Unloads a model now (once its running requests end). Returns whether it was loaded.
  bool unload(const std::string& requested);
  std::vector<LoadedInfo> loaded() const;

 private:
  friend class ModelLease;
  // lease() without the context: loads the model if needed and admits the request.
  std::shared_ptr<ModelLease> admit_loaded(const std::string& requested, std::optional<double> keep_alive_s);
  void release(ModelHost& model, std::optional<double> keep_alive_s);
  // The reaper's callback: unloads the idle models whose keep-alive ran out; the next expiry.
  std::optional<Clock::time_point> reap(Clock::time_point now);
  // With load_mutex_ held: unloads the idle models the arbiter picks so `need` bytes fit; returns
  // the budget left for a new model, or for `replanning` (whose plan is not counted).
  uint64_t make_room(uint64_t need, const ModelHost* replanning = nullptr);
  std::vector<Tenant> tenants() const;  // with mutex_ held

  RegistryOptions options_;
  ModelCatalogue catalogue_;
  MemoryArbiter arbiter_;
  mutable std::mutex mutex_;  // guards models_ and the hosts' n_active_ and keep_alive_
  std::mutex load_mutex_;     // one load or re-plan at a time: nothing else plans against the budget meanwhile
  std::map<std::string, std::shared_ptr<ModelHost>> models_;
  KeepAliveReaper reaper_;  // last: its thread stops before the rest goes
};

}  // namespace strata::server
