#pragma once
// The models `strata serve` can run: the *.gguf files of one folder (or one given file), named by
// file stem ("smollm2" or "smollm2:latest" for smollm2.gguf). A model is loaded on first use and
// stays loaded until its keep-alive runs out; keep_alive 0 unloads it after the request.
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
#include "tier/tiering.h"
#include "server/prompt.h"
#include "tokenizer/tokenizer.h"

namespace strata::server {

struct RegistryOptions {
  std::string models_dir;    // every *.gguf here is a model
  std::string single_file;   // when set, the only model
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
  // Where the weights live under the budget; sessions are connected to its streamers.
  std::unique_ptr<tier::Tiering> tiering;
  double load_seconds = 0;

  // One generation at a time: a Session is one KV cache and is not thread-safe. Callers hold
  // run_mutex while they use session_for()'s result.
  std::mutex run_mutex;
  // The session for these parameters (n_ctx, n_threads; 0: the server's defaults), recreated
  // when they change. Keeping it lets the next request reuse the evaluated prompt prefix.
  Session& session_for(int n_ctx, int n_threads);
  // A second session for embeddings, so that embedding never disturbs the chat KV cache (and
  // its reusable prompt prefix). Also used under run_mutex.
  Session& embed_session(int n_threads);
  // The context a session with this n_ctx gets (clamped to the model's training context).
  int effective_n_ctx(int n_ctx) const;

  SessionParams defaults;

 private:
  friend class ModelRegistry;
  std::unique_ptr<Session> session_;
  std::unique_ptr<Session> embed_session_;
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
  double load_seconds() const { return load_seconds_; }  // 0 unless this request loaded the model

 private:
  ModelRegistry& registry_;
  std::shared_ptr<LoadedModel> model_;
  std::optional<double> keep_alive_s_;
  double load_seconds_;
};

// A model in memory, for /api/ps.
struct LoadedInfo {
  std::string name;
  std::string path;
  uint64_t size_bytes = 0;  // file + session memory
  int n_ctx = 0;
  std::optional<std::chrono::system_clock::time_point> expires_at;  // nullopt: never
  tier::TierStats tier;  // placement and streaming statistics
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
  // The file's metadata (opened once per file version; shared with a loaded model).
  std::shared_ptr<const gguf::File> metadata(const ModelEntry& entry);
  // The file's SHA-256 (hex), computed once per file version (path, size, modification time).
  std::string digest(const ModelEntry& entry);

  // Loads the model if needed and admits one request to it: HttpError 404 (unknown), 500 (load
  // failed), 503 (max_queue requests already hold it).
  std::shared_ptr<ModelLease> lease(const std::string& requested, std::optional<double> keep_alive_s);
  // Unloads a model now (once its running requests end). Returns whether it was loaded.
  bool unload(const std::string& requested);
  std::vector<LoadedInfo> loaded() const;

 private:
  friend class ModelLease;
  void release(LoadedModel& model, std::optional<double> keep_alive_s);
  void reap_loop();
  // With load_mutex_ held: unloads idle models until `need` bytes are free (or none is idle);
  // returns the budget left for a new model.
  uint64_t make_room(uint64_t need);

  RegistryOptions options_;
  uint64_t budget_bytes_ = 0;  // options_.budget_bytes, or detected at start
  mutable std::mutex mutex_;  // guards models_, files_ and LoadedModel's keep-alive fields
  std::mutex load_mutex_;     // one load at a time, so two requests never load the same model twice
  std::map<std::string, std::shared_ptr<LoadedModel>> models_;
  struct CachedFile {
    uint64_t size_bytes;
    int64_t modified_unix;
    std::shared_ptr<const gguf::File> file;
  };
  std::map<std::string, CachedFile> files_;  // by path
  struct CachedDigest {
    uint64_t size_bytes;
    int64_t modified_unix;
    std::string sha256;
  };
  std::mutex digest_mutex_;                      // held while hashing, so a file is hashed once however many ask
  std::map<std::string, CachedDigest> digests_;  // by path
  std::condition_variable reap_cv_;
  bool stopping_ = false;
  std::thread reaper_;
};

}  // namespace strata::server
