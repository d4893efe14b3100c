#pragma once
// The models `strata serve` can run: the *.gguf files of one folder (or one given file), named by
// file stem ("smollm2" or "smollm2:latest" for smollm2.gguf). A model is loaded on first use and
// stays loaded until its keep-alive runs out; keep_alive 0 unloads it after the request.
//
// A model is planned (tier/) for one context: its KV cache is counted in the memory budget for
// that many tokens. A request asking for more (options.num_ctx) re-plans it for the larger
// context, as Ollama reloads a model for a new num_ctx, or is refused when that cannot fit.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gguf/gguf.h"
#include "model/model.h"
#include "runtime/session.h"
#include "server/digest_cache.h"
#include "server/prompt.h"
#include "tier/tiering.h"
#include "tokenizer/tokenizer.h"

namespace strata::server {

struct RegistryOptions {
  std::string models_dir;   // every *.gguf here is a model
  std::string single_file;  // when set, the only model
  // Folders /api/create ("from") and /api/pull may take local GGUF files from, besides the
  // models folder; no request reads a file anywhere else.
  std::vector<std::string> import_dirs;
  SessionParams session;     // defaults for sessions: n_ctx, n_batch, n_threads
  int max_queue = 32;        // requests per model running or waiting; more get 503
  double keep_alive_s = -1;  // how long a model stays loaded after a request; < 0: forever
  // Memory for all loaded models together (weights, KV cache, scratch, streaming pools); 0: what
  // the machine or its cgroup has available when the server starts, less a margin. A model that
  // does not fit what is left streams its weights from the SSD (tier/); idle models are unloaded
  // first when that makes room.
  uint64_t budget_bytes = 0;
};

// A model file on disk.
struct ModelEntry {
  std::string name;  // file stem
  std::string path;
  uint64_t size_bytes = 0;
  int64_t modified_unix = 0;  // seconds
};

using Clock = std::chrono::steady_clock;

class LoadedModel {
 public:
  std::string name;
  std::string path;
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<PromptFormat> prompt_format;
  // Where the weights live under the budget; sessions are connected to its streamers. Replaced
  // (ModelRegistry::fit_context) only with run_mutex and the registry's mutex held.
  std::unique_ptr<tier::Tiering> tiering;
  double load_seconds = 0;

  // One generation at a time: a Session is one KV cache and is not thread-safe. Callers hold
  // run_mutex while they use session_for()'s result.
  std::timed_mutex run_mutex;
  // The session for these parameters (n_ctx, n_threads; 0: the server's defaults), recreated
  // when they change. Keeping it lets the next request reuse the evaluated prompt prefix.
  // Throws when the context is larger than the one the model is planned for (fit_context()
  // first).
  Session& session_for(int n_ctx, int n_threads);
  // The session embeddings run in: the one session_for() keeps, whatever its context (a second
  // session would hold a second KV cache the memory plan does not count). Embedding clears its
  // history, so the next generation evaluates its whole prompt. Also used under run_mutex.
  Session& embed_session(int n_threads);
  // The context a session with this n_ctx gets (clamped to the model's training context).
  int effective_n_ctx(int n_ctx) const;
  // The context the memory plan counts a KV cache for: the largest a session may have. It only
  // grows while the model is loaded (ModelRegistry::fit_context).
  int planned_n_ctx() const { return planned_n_ctx_; }

  SessionParams defaults;

 private:
  friend class ModelRegistry;
  std::unique_ptr<Session> session_;
  // Written with run_mutex and the registry's mutex held, so either lock makes it stable.
  std::atomic<int> planned_n_ctx_{0};
  // Guarded by the registry's mutex.
  int n_active_ = 0;  // admitted requests, running or waiting for run_mutex
  bool keep_forever_ = true;
  Clock::time_point expires_at_{};
};

class ModelRegistry;

// One request's hold on a loaded model (see ModelRegistry::lease). Releasing it starts the
// model's keep-alive.
class ModelLease {
 public:
  ModelLease(ModelRegistry& registry, std::shared_ptr<LoadedModel> model, std::optional<double> keep_alive_s,
             double load_seconds)
      : registry_(registry), model_(std::move(model)), keep_alive_s_(keep_alive_s), load_seconds_(load_seconds) {}
  ~ModelLease();
  ModelLease(const ModelLease&) = delete;
  ModelLease& operator=(const ModelLease&) = delete;

  LoadedModel& model() const { return *model_; }
  // Re-plans the model for a context of n_ctx tokens if it was planned for fewer (see
  // ModelRegistry::fit_context).
  void fit_context(int n_ctx) const;
  double load_seconds() const { return load_seconds_; }  // 0 unless this request loaded the model

 private:
  ModelRegistry& registry_;
  std::shared_ptr<LoadedModel> model_;
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
};

class ModelRegistry {
 public:
  explicit ModelRegistry(RegistryOptions options);
  ~ModelRegistry();

  const RegistryOptions& options() const { return options_; }
  // The models on disk, sorted by name.
  std::vector<ModelEntry> list() const;
  // The file of a requested name: HttpError 400 for an empty or invalid name (one that would
  // leave the models folder), 404 when there is no such model.
  ModelEntry resolve(const std::string& requested) const;
  // Where a model of this name lives in the models folder (it need not exist): HttpError 400 for
  // an invalid name, or when the server serves one given file (nothing can be added).
  std::string path_for(const std::string& requested) const;
  // The real path of a GGUF file a request named for import (create's "from", pull's local
  // path): a regular file starting with the GGUF magic, inside the models folder or an import
  // folder after links are followed. nullopt for anything else, whatever the reason, so that the
  // answer tells a client nothing about files it may not use.
  std::optional<std::string> importable_gguf(const std::string& requested_path) const;
  // The file's metadata (opened once per file version; shared with a loaded model).
  std::shared_ptr<const gguf::File> metadata(const ModelEntry& entry);
  // The file's SHA-256 (hex), computed once per file version (path, size, modification time),
  // most often already by the background hashing started with the registry; else this waits.
  std::string digest(const ModelEntry& entry);

  // Loads the model if needed and admits one request to it, re-planned for a context of n_ctx
  // tokens when that is more than it was planned for (0: the server's default context):
  // HttpError 404 (unknown), 500 (load failed, or the context does not fit the budget), 503
  // (max_queue requests already hold it).
  std::shared_ptr<ModelLease> lease(const std::string& requested, std::optional<double> keep_alive_s, int n_ctx = 0);
  // Makes the loaded model's plan count a KV cache of n_ctx tokens (clamped to its training
  // context; 0: the default), when it counts fewer: waits for the request running on it, then
  // plans the weights again under what the budget leaves (unloading idle models to make room),
  // the old sessions dropped. HttpError 500 naming the model, the context and the planner's
  // reason when even the minimum does not fit; the model then keeps its context.
  void fit_context(LoadedModel& model, int n_ctx);
  // Unloads a model now (once its running requests end). Returns whether it was loaded.
  bool unload(const std::string& requested);
  std::vector<LoadedInfo> loaded() const;

 private:
  friend class ModelLease;
  // lease() without the context: loads the model if needed and admits the request.
  std::shared_ptr<ModelLease> admit_loaded(const std::string& requested, std::optional<double> keep_alive_s);
  void release(LoadedModel& model, std::optional<double> keep_alive_s);
  void reap_loop();
  // With load_mutex_ held: unloads idle models until `need` bytes are free (or none is idle);
  // returns the budget left for a new model, or for `replanning` (whose plan is not counted).
  uint64_t make_room(uint64_t need, const LoadedModel* replanning = nullptr);

  RegistryOptions options_;
  uint64_t budget_bytes_ = 0;  // options_.budget_bytes, or detected at start
  mutable std::mutex mutex_;   // guards models_, files_ and LoadedModel's keep-alive fields
  std::mutex load_mutex_;      // one load at a time, so two requests never load the same model twice
  std::map<std::string, std::shared_ptr<LoadedModel>> models_;
  struct CachedFile {
    uint64_t size_bytes;
    int64_t modified_unix;
    std::shared_ptr<const gguf::File> file;
  };
  std::map<std::string, CachedFile> files_;  // by path
  // Its background thread hashes every model listed at start.
  DigestCache digests_;
  std::condition_variable reap_cv_;
  bool stopping_ = false;
  std::thread reaper_;
};

}  // namespace strata::server
