#include "server/model_registry.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "server/errors.h"
#include "server/limits.h"
#include "server/model_settings.h"
#include "util/error.h"

namespace strata::server {

namespace fs = std::filesystem;

namespace {

constexpr const char* kExtension = ".gguf";

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string stem_of(const std::string& path) { return fs::path(path).stem().string(); }

// A regular file (after symlinks): its size and modification time.
std::optional<ModelEntry> stat_model(const std::string& name, const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  return ModelEntry{name, path, uint64_t(st.st_size), int64_t(st.st_mtim.tv_sec)};
}

// The file name a requested model has: "name", "name:latest" and "name.gguf" all mean name.gguf.
// Anything that could name a path outside the folder is refused.
std::string file_stem_for(const std::string& requested) {
  std::string name = requested;
  if (ends_with(name, ":latest")) name.resize(name.size() - 7);
  if (ends_with(name, kExtension)) name.resize(name.size() - 5);
  if (name.empty()) throw bad_request("model is required");
  const bool bad = name.size() > 255 || name[0] == '.' ||
                   name.find_first_of(std::string("/\\\0", 3)) != std::string::npos ||
                   std::any_of(name.begin(), name.end(), [](char c) { return (unsigned char)c < 0x20; });
  if (bad) throw bad_request("invalid model name \"" + requested + "\"");
  return name;
}

}  // namespace

// --- LoadedModel

int LoadedModel::effective_n_ctx(int n_ctx) const {
  if (n_ctx <= 0) n_ctx = defaults.n_ctx;
  const int train = model->config().n_ctx_train;
  return n_ctx <= 0 || (train > 0 && n_ctx > train) ? train : n_ctx;
}

Session& LoadedModel::session_for(int n_ctx, int n_threads) {
  SessionParams p = defaults;
  p.n_ctx = effective_n_ctx(n_ctx);
  if (n_threads > 0) p.n_threads = n_threads;
  if (!tiering) throw Error("model \"" + name + "\" was unloaded: planning it again failed");
  if (p.n_ctx > planned_n_ctx_)
    throw Error("model \"" + name + "\" is planned for a context of " + std::to_string(planned_n_ctx_) +
                " tokens, not " + std::to_string(p.n_ctx));
  const bool same_threads = p.n_threads <= 0 || (session_ && session_->n_threads() == p.n_threads);
  if (!session_ || session_->n_ctx() != p.n_ctx || !same_threads) {
    session_.reset();  // free the old KV cache before allocating the new one
    session_ = std::make_unique<Session>(*model, p);
    if (tiering) {
      session_->set_ffn_source(tiering->ffn_source());
      session_->set_expert_source(tiering->expert_source());
    }
  }
  return *session_;
}

Session& LoadedModel::embed_session(int n_threads) {
  if (!tiering) throw Error("model \"" + name + "\" was unloaded: planning it again failed");
  if (session_ && (n_threads <= 0 || session_->n_threads() == n_threads)) return *session_;
  return session_for(0, n_threads);
}

// --- ModelLease

ModelLease::~ModelLease() { registry_.release(*model_, keep_alive_s_); }

void ModelLease::fit_context(int n_ctx) const { registry_.fit_context(*model_, n_ctx); }

// --- ModelRegistry

ModelRegistry::ModelRegistry(RegistryOptions options) : options_(std::move(options)) {
  budget_bytes_ = options_.budget_bytes > 0 ? options_.budget_bytes : tier::detect_memory_budget();
  reaper_ = std::thread([this] { reap_loop(); });
  std::vector<FileVersion> files;
  for (const ModelEntry& e : list()) files.push_back({e.path, e.size_bytes, e.modified_unix});
  digests_.hash_in_background(std::move(files));
}

ModelRegistry::~ModelRegistry() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  reap_cv_.notify_all();
  reaper_.join();
}

std::vector<ModelEntry> ModelRegistry::list() const {
  std::vector<ModelEntry> out;
  if (!options_.single_file.empty()) {
    if (auto e = stat_model(stem_of(options_.single_file), options_.single_file)) out.push_back(*e);
    return out;
  }
  std::error_code ec;
  for (const auto& de : fs::directory_iterator(options_.models_dir, ec)) {
    const std::string file = de.path().filename().string();
    if (!ends_with(file, kExtension) || file[0] == '.') continue;
    if (auto e = stat_model(stem_of(file), de.path().string())) out.push_back(*e);
  }
  std::sort(out.begin(), out.end(), [](const ModelEntry& a, const ModelEntry& b) { return a.name < b.name; });
  return out;
}

ModelEntry ModelRegistry::resolve(const std::string& requested) const {
  const std::string name = file_stem_for(requested);
  std::optional<ModelEntry> entry;
  if (!options_.single_file.empty()) {
    if (name == stem_of(options_.single_file)) entry = stat_model(name, options_.single_file);
  } else {
    entry = stat_model(name, (fs::path(options_.models_dir) / (name + kExtension)).string());
  }
  if (!entry) throw HttpError(404, "model \"" + requested + "\" not found");
  return *entry;
}

std::string ModelRegistry::path_for(const std::string& requested) const {
  const std::string name = file_stem_for(requested);
  if (!options_.single_file.empty())
    throw bad_request("strata serve was given one model file; start it with --models to manage models");
  return (fs::path(options_.models_dir) / (name + kExtension)).string();
}

std::optional<std::string> ModelRegistry::importable_gguf(const std::string& requested_path) const {
  std::error_code ec;
  const fs::path real = fs::canonical(requested_path, ec);
  if (ec || !fs::is_regular_file(real, ec) || ec) return std::nullopt;
  auto inside = [&](const std::string& dir) {
    std::error_code dir_ec;
    const fs::path root = fs::canonical(dir, dir_ec);
    if (dir_ec || dir.empty()) return false;
    const fs::path rel = real.lexically_relative(root);
    return !rel.empty() && *rel.begin() != ".." && rel.is_relative();
  };
  bool allowed = options_.single_file.empty() && inside(options_.models_dir);
  for (const std::string& dir : options_.import_dirs) allowed = allowed || inside(dir);
  if (!allowed) return std::nullopt;
  std::ifstream in(real, std::ios::binary);
  char magic[4] = {};
  if (!in.read(magic, 4) || std::string(magic, 4) != "GGUF") return std::nullopt;
  return real.string();
}

std::shared_ptr<const gguf::File> ModelRegistry::metadata(const ModelEntry& entry) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = files_.find(entry.path);
    if (it != files_.end() && it->second.size_bytes == entry.size_bytes &&
        it->second.modified_unix == entry.modified_unix)
      return it->second.file;
  }
  std::shared_ptr<const gguf::File> file = gguf::File::open(entry.path);  // throws strata::Error naming the problem
  std::lock_guard<std::mutex> lock(mutex_);
  files_[entry.path] = CachedFile{entry.size_bytes, entry.modified_unix, file};
  return file;
}

std::string ModelRegistry::digest(const ModelEntry& entry) {
  return digests_.get({entry.path, entry.size_bytes, entry.modified_unix});
}

std::shared_ptr<ModelLease> ModelRegistry::lease(const std::string& requested, std::optional<double> keep_alive_s,
                                                 int n_ctx) {
  std::shared_ptr<ModelLease> lease = admit_loaded(requested, keep_alive_s);
  fit_context(lease->model(), n_ctx);  // on a throw, the lease is released
  return lease;
}

std::shared_ptr<ModelLease> ModelRegistry::admit_loaded(const std::string& requested,
                                                        std::optional<double> keep_alive_s) {
  const ModelEntry entry = resolve(requested);
  auto admit = [&](const std::shared_ptr<LoadedModel>& m, double load_seconds) {
    // Called with mutex_ held.
    if (m->n_active_ >= options_.max_queue)
      throw HttpError(503, "server busy, please try again: " + std::to_string(options_.max_queue) +
                               " requests are already running or waiting for model \"" + entry.name + "\"");
    ++m->n_active_;
    return std::make_shared<ModelLease>(*this, m, keep_alive_s, load_seconds);
  };
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = models_.find(entry.name);
    if (it != models_.end()) return admit(it->second, 0);
  }
  std::lock_guard<std::mutex> load_lock(load_mutex_);
  {
    std::lock_guard<std::mutex> lock(mutex_);  // another request may have loaded it meanwhile
    auto it = models_.find(entry.name);
    if (it != models_.end()) return admit(it->second, 0);
  }
  auto m = std::make_shared<LoadedModel>();
  m->name = entry.name;
  m->path = entry.path;
  m->defaults = options_.session;
  const auto t0 = Clock::now();
  try {
    m->model = Model::load(entry.path);
    m->tokenizer = Tokenizer::from_gguf(m->model->file());
    m->prompt_format =
        std::make_unique<PromptFormat>(*m->model, *m->tokenizer, load_settings(entry.path).template_text);
  } catch (const std::exception& e) {
    throw HttpError(500, "failed to load model \"" + requested + "\": " + e.what());
  }
  try {
    tier::TieringOptions t;
    t.n_ctx = m->effective_n_ctx(0);
    t.n_batch = m->defaults.n_batch;
    t.kv_type = m->defaults.kv_type;
    t.n_threads = m->defaults.n_threads;
    const ModelConfig& c = m->model->config();
    t.budget_bytes = make_room(m->model->file().file_size() + tier::kv_cache_bytes(c, t.n_ctx, t.n_batch, t.kv_type) +
                               tier::scratch_bytes(c, t.n_ctx, t.n_batch, t.n_threads));
    m->tiering = std::make_unique<tier::Tiering>(*m->model, t);
    m->planned_n_ctx_ = t.n_ctx;
  } catch (const std::exception& e) {
    throw HttpError(500, "cannot load model \"" + requested + "\" within the memory budget: " + e.what());
  }
  m->load_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  std::fprintf(stderr, "loaded %s in %.2f s (chat format: %s%s)\n%s\n", entry.path.c_str(), m->load_seconds,
               m->prompt_format->name().c_str(),
               m->prompt_format->fallback_reason().empty() ? "" : ("; " + m->prompt_format->fallback_reason()).c_str(),
               m->tiering->summary().c_str());
  std::lock_guard<std::mutex> lock(mutex_);
  models_[entry.name] = m;
  return admit(m, m->load_seconds);
}

void ModelRegistry::fit_context(LoadedModel& m, int n_ctx) {
  const int want = m.effective_n_ctx(n_ctx);
  if (want <= m.planned_n_ctx_) return;  // it only grows, so a stale read just takes the slow way
  // The running request's session is about to go; the requests waiting behind this one find the
  // larger plan.
  std::lock_guard<std::timed_mutex> run_lock(m.run_mutex);
  if (want <= m.planned_n_ctx_) return;
  std::lock_guard<std::mutex> load_lock(load_mutex_);  // nothing else plans against the budget meanwhile
  const ModelConfig& c = m.model->config();
  const int had = m.planned_n_ctx_;
  tier::TieringOptions t;
  t.n_ctx = want;
  t.n_batch = m.defaults.n_batch;
  t.kv_type = m.defaults.kv_type;
  t.n_threads = m.defaults.n_threads;
  try {
    t.budget_bytes = make_room(
        m.model->file().file_size() + tier::kv_cache_bytes(c, want, t.n_batch, t.kv_type) +
            tier::scratch_bytes(c, want, t.n_batch, t.n_threads),
        &m);
    // The plan alone (no memory taken) says whether the context fits; the model keeps its
    // current plan and sessions until it does.
    tier::plan_for(*m.model, t);
  } catch (const std::exception& e) {
    throw HttpError(500, "model \"" + m.name + "\" cannot use a context of " + std::to_string(n_ctx) +
                             " tokens within the memory budget (it stays loaded with a context of " +
                             std::to_string(had) + "): " + e.what());
  }
  std::unique_ptr<tier::Tiering> old;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    old = std::move(m.tiering);
  }
  m.session_.reset();  // the KV cache and streaming pools go before the new ones are taken
  old.reset();
  std::unique_ptr<tier::Tiering> fresh;
  try {
    fresh = std::make_unique<tier::Tiering>(*m.model, t);
  } catch (const std::exception& e) {
    // The plan fitted a moment ago, so this is unexpected: the model has no plan left, so it goes.
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = models_.find(m.name);
    if (it != models_.end() && it->second.get() == &m) models_.erase(it);
    throw HttpError(500, "model \"" + m.name + "\" failed to load for a context of " + std::to_string(n_ctx) +
                             " tokens and was unloaded: " + e.what());
  }
  std::fprintf(stderr, "planned %s again for a context of %d tokens (was %d)\n%s\n", m.path.c_str(), want, had,
               fresh->summary().c_str());
  std::lock_guard<std::mutex> lock(mutex_);
  m.tiering = std::move(fresh);
  m.planned_n_ctx_ = want;
}

uint64_t ModelRegistry::make_room(uint64_t need, const LoadedModel* replanning) {
  std::vector<std::shared_ptr<LoadedModel>> unloaded;  // freed after the lock is released
  std::lock_guard<std::mutex> lock(mutex_);
  auto used = [&] {
    uint64_t n = 0;
    for (const auto& [name, m] : models_)
      if (m.get() != replanning) n += m->tiering ? m->tiering->planned_bytes() : 0;
    return n;
  };
  while (used() + need > budget_bytes_) {
    // The idle model whose keep-alive ends first goes first.
    auto victim = models_.end();
    for (auto it = models_.begin(); it != models_.end(); ++it)
      if (it->second->n_active_ == 0 &&
          (victim == models_.end() || (victim->second->keep_forever_ && !it->second->keep_forever_) ||
           (victim->second->keep_forever_ == it->second->keep_forever_ &&
            it->second->expires_at_ < victim->second->expires_at_)))
        victim = it;
    if (victim == models_.end()) break;
    std::fprintf(stderr, "unloading %s to make room\n", victim->first.c_str());
    unloaded.push_back(victim->second);
    models_.erase(victim);
  }
  const uint64_t in_use = used();
  return budget_bytes_ > in_use ? budget_bytes_ - in_use : 0;
}

bool ModelRegistry::unload(const std::string& requested) {
  const std::string name = file_stem_for(requested);
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = models_.find(name);
  if (it == models_.end()) return false;
  if (it->second->n_active_ == 0) {
    models_.erase(it);
  } else {  // the last running request's release unloads it
    it->second->keep_forever_ = false;
    it->second->expires_at_ = Clock::now();
  }
  return true;
}

void ModelRegistry::release(LoadedModel& m, std::optional<double> keep_alive_s) {
  std::lock_guard<std::mutex> lock(mutex_);
  --m.n_active_;
  const double keep = keep_alive_s.value_or(options_.keep_alive_s);
  // Past limits::kKeepAliveForeverSeconds is forever: 1e300 s must not wrap to a past date.
  m.keep_forever_ = keep < 0 || !(keep < limits::kKeepAliveForeverSeconds);
  m.expires_at_ =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(keep < 0 ? 0 : keep));
  if (m.n_active_ == 0 && keep == 0) {
    auto it = models_.find(m.name);
    if (it != models_.end() && it->second.get() == &m) models_.erase(it);
  }
}

std::vector<LoadedInfo> ModelRegistry::loaded() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<LoadedInfo> out;
  const auto now = Clock::now();
  const auto wall_now = std::chrono::system_clock::now();
  for (const auto& [name, m] : models_) {
    LoadedInfo info{name, m->path, m->model->file().file_size(), m->planned_n_ctx_, std::nullopt, {}};
    // The session belongs to whoever holds run_mutex, so count the KV cache the plan allows
    // rather than touching it.
    info.size_bytes += tier::kv_cache_bytes(m->model->config(), info.n_ctx, m->defaults.n_batch, m->defaults.kv_type);
    if (m->tiering) {
      info.tier = m->tiering->stats();
      if (info.tier.streaming) info.size_bytes = info.tier.planned_bytes;  // not the file: it does not all fit
    }
    if (!m->keep_forever_)
      info.expires_at =
          wall_now + std::chrono::duration_cast<std::chrono::system_clock::duration>(m->expires_at_ - now);
    out.push_back(std::move(info));
  }
  return out;
}

void ModelRegistry::reap_loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    reap_cv_.wait_for(lock, std::chrono::seconds(1));
    const auto now = Clock::now();
    std::vector<std::shared_ptr<LoadedModel>> expired;  // freed after the lock is released
    for (auto it = models_.begin(); it != models_.end();) {
      const LoadedModel& m = *it->second;
      if (m.n_active_ == 0 && !m.keep_forever_ && m.expires_at_ <= now) {
        expired.push_back(it->second);
        it = models_.erase(it);
      } else {
        ++it;
      }
    }
    if (!expired.empty()) {
      lock.unlock();
      expired.clear();
      lock.lock();
    }
  }
}

}  // namespace strata::server
