#include "server/model_registry.h"

#include <cstdio>

#include "server/errors.h"

namespace strata::server {

namespace {
CatalogueOptions catalogue_options(const RegistryOptions& o) { return {o.models_dir, o.single_file, o.import_dirs}; }
}  // namespace

// --- ModelLease

ModelLease::~ModelLease() { registry_.release(*model_, keep_alive_s_); }

void ModelLease::fit_context(int n_ctx) const { registry_.fit_context(*model_, n_ctx); }

// --- ModelRegistry

ModelRegistry::ModelRegistry(RegistryOptions options)
    : options_(std::move(options)),
      catalogue_(catalogue_options(options_)),
      arbiter_(options_.budget_bytes),
      reaper_([this](Clock::time_point now) { return reap(now); }) {}

ModelRegistry::~ModelRegistry() = default;

std::shared_ptr<ModelLease> ModelRegistry::lease(const std::string& requested, std::optional<double> keep_alive_s,
                                                 int n_ctx) {
  std::shared_ptr<ModelLease> lease = admit_loaded(requested, keep_alive_s);
  fit_context(lease->model(), n_ctx);  // on a throw, the lease is released
  return lease;
}

std::shared_ptr<ModelLease> ModelRegistry::admit_loaded(const std::string& requested,
                                                        std::optional<double> keep_alive_s) {
  const ModelEntry entry = resolve(requested);
  auto admit = [&](const std::shared_ptr<ModelHost>& m, double load_seconds) {
    // Called with mutex_ held.
    if (m->n_active_ >= options_.max_queue)
      throw busy("server busy, please try again: " + std::to_string(options_.max_queue) +
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
  const auto t0 = Clock::now();
  std::shared_ptr<ModelHost> m =
      ModelHost::open(entry, {options_.session, options_.ram_gbps, options_.ssd_gbps, options_.kv_type_auto,
                              options_.gpu_mem, options_.gpu_copy_share});
  m->plan(0, make_room(m->bytes_wanted(0)));
  m->load_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  std::fprintf(stderr, "loaded %s in %.2f s (chat format: %s%s)\n%s\n", entry.path.c_str(), m->load_seconds,
               m->prompt_format->name().c_str(),
               m->prompt_format->fallback_reason().empty() ? "" : ("; " + m->prompt_format->fallback_reason()).c_str(),
               m->summary().c_str());
  std::lock_guard<std::mutex> lock(mutex_);
  models_[entry.name] = m;
  return admit(m, m->load_seconds);
}

void ModelRegistry::fit_context(ModelHost& m, int n_ctx) {
  const int want = m.effective_n_ctx(n_ctx);
  if (want <= m.planned_n_ctx()) return;  // it only grows, so a stale read just takes the slow way
  // The running request's session is about to go; the requests waiting behind this one find the
  // larger plan.
  std::lock_guard<std::timed_mutex> run_lock(m.run_mutex);
  if (want <= m.planned_n_ctx()) return;
  std::lock_guard<std::mutex> load_lock(load_mutex_);
  const int had = m.planned_n_ctx();
  uint64_t budget = 0;
  try {
    budget = make_room(m.bytes_wanted(want), &m);
    // The plan alone (no memory taken) says whether the context fits; the model keeps its
    // current plan and sessions until it does.
    m.check_plan(want, budget);
  } catch (const ServerError& e) {
    throw ServerError(e.kind(),
                      std::string(e.what()) + " (it stays loaded with a context of " + std::to_string(had) + ")");
  }
  try {
    m.plan(want, budget);
  } catch (const ServerError& e) {
    // The plan fitted a moment ago, so this is unexpected: the model has no plan left, so it goes.
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = models_.find(m.name);
    if (it != models_.end() && it->second.get() == &m) models_.erase(it);
    throw ServerError(e.kind(), std::string(e.what()) + "; it was unloaded");
  }
  std::fprintf(stderr, "planned %s again for a context of %d tokens (was %d)\n%s\n", m.path.c_str(), want, had,
               m.summary().c_str());
}

std::vector<Tenant> ModelRegistry::tenants() const {
  std::vector<Tenant> out;
  for (const auto& [name, m] : models_) out.push_back({name, m->planned_bytes(), m->n_active_ == 0, m->keep_alive_});
  return out;
}

uint64_t ModelRegistry::make_room(uint64_t need, const ModelHost* replanning) {
  std::vector<std::shared_ptr<ModelHost>> unloaded;  // freed after the lock is released
  std::lock_guard<std::mutex> lock(mutex_);
  const MemoryArbiter::Room room = arbiter_.make_room(tenants(), need, replanning ? replanning->name : "");
  for (const std::string& name : room.evict) {
    std::fprintf(stderr, "unloading %s to make room\n", name.c_str());
    auto it = models_.find(name);
    unloaded.push_back(it->second);
    models_.erase(it);
  }
  return room.available;
}

bool ModelRegistry::unload(const std::string& requested) {
  const std::string name = ModelCatalogue::stem_for(requested);
  std::shared_ptr<ModelHost> gone;  // freed after the lock is released
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = models_.find(name);
    if (it == models_.end()) return false;
    if (it->second->n_active_ == 0) {
      gone = it->second;
      models_.erase(it);
    } else {  // the last running request's release unloads it
      it->second->unload_when_idle_ = true;
    }
  }
  return true;
}

void ModelRegistry::release(ModelHost& m, std::optional<double> keep_alive_s) {
  std::shared_ptr<ModelHost> gone;  // freed after the lock is released
  {
    std::lock_guard<std::mutex> lock(mutex_);
    --m.n_active_;
    const double keep = keep_alive_s.value_or(options_.keep_alive_s);
    m.keep_alive_.restart(keep, Clock::now());
    if (m.n_active_ == 0 && (keep == 0 || m.unload_when_idle_)) {
      auto it = models_.find(m.name);
      if (it != models_.end() && it->second.get() == &m) {
        gone = it->second;
        models_.erase(it);
      }
    }
  }
  reaper_.wake();
}

std::optional<Clock::time_point> ModelRegistry::reap(Clock::time_point now) {
  std::vector<std::shared_ptr<ModelHost>> expired;  // freed after the lock is released
  std::optional<Clock::time_point> next;
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto it = models_.begin(); it != models_.end();) {
    const ModelHost& m = *it->second;
    if (m.n_active_ == 0 && m.keep_alive_.expired(now)) {
      std::fprintf(stderr, "unloading %s: its keep-alive ran out\n", it->first.c_str());
      expired.push_back(it->second);
      it = models_.erase(it);
      continue;
    }
    if (m.n_active_ == 0 && !m.keep_alive_.forever && (!next || m.keep_alive_.expires_at < *next))
      next = m.keep_alive_.expires_at;
    ++it;
  }
  return next;
}

std::vector<LoadedInfo> ModelRegistry::loaded() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<LoadedInfo> out;
  const auto now = Clock::now();
  const auto wall_now = std::chrono::system_clock::now();
  for (const auto& [name, m] : models_) {
    LoadedInfo info{name, m->path, m->model->file().file_size(), m->planned_n_ctx(), std::nullopt, {}};
    // The session belongs to whoever holds run_mutex, so count the KV cache the plan allows
    // rather than touching it.
    info.size_bytes += tier::kv_cache_bytes(m->model->config(), info.n_ctx, m->defaults.n_batch, m->kv_type());
    if (m->has_plan()) {
      info.tier = m->stats();
      if (info.tier.streaming) info.size_bytes = info.tier.planned_bytes;  // not the file: it does not all fit
    }
    info.vram_bytes = m->vram_bytes();
    if (!m->keep_alive_.forever)
      info.expires_at =
          wall_now + std::chrono::duration_cast<std::chrono::system_clock::duration>(m->keep_alive_.expires_at - now);
    out.push_back(std::move(info));
  }
  return out;
}

}  // namespace strata::server
