#include "server/model_host.h"

#include <chrono>
#include <cstdio>

#include "server/errors.h"
#include "server/model_settings.h"
#include "tier/gpu/gpu_session.h"
#include "tier/plan/plan.h"
#include "util/error.h"

namespace strata::server {

std::shared_ptr<ModelHost> ModelHost::open(const ModelEntry& entry, const HostOptions& options) {
  auto h = std::make_shared<ModelHost>();
  h->name = entry.name;
  h->path = entry.path;
  h->defaults = options.session;
  h->kv_type_ = options.session.kv_type;
  h->ram_gbps_ = options.ram_gbps;
  h->ssd_gbps_ = options.ssd_gbps;
  h->gpu_mem_ = options.gpu_mem;
  h->gpu_copy_share_ = options.gpu_copy_share;
  try {
    h->model = Model::load(entry.path);
    h->tokenizer = Tokenizer::from_gguf(h->model->file());
    h->prompt_format =
        std::make_unique<PromptFormat>(*h->model, *h->tokenizer, load_settings(entry.path).template_text);
    SessionParams f16 = h->defaults;
    f16.kv_type = DType::F16;
    // Sessions on the GPU take the widest cache type that keeps them there; the plan picks elsewhere.
    const std::optional<DType> gpu = f16.device == Device::cpu ? std::nullopt : gpu_kv_type(*h->model, f16);
    h->kv_type_auto_ = options.kv_type_auto && !gpu;
    if (options.kv_type_auto && gpu) h->kv_type_ = *gpu;
  } catch (const std::exception& e) {
    throw load_failed("failed to load model \"" + entry.name + "\": " + e.what());
  }
  return h;
}

ModelHost::~ModelHost() { detach_gpu_tier(); }

void ModelHost::detach_gpu_tier() {
  std::lock_guard<std::mutex> lock(tiering_mutex_);
  if (tiering_) tiering_->attach_gpu(nullptr);
}

void ModelHost::attach_gpu_tier(Session& s) {
  if (gpu_mem_ == 0) return;
  const std::string gpu_mem = std::to_string(gpu_mem_ >> 20) + "M";
  std::lock_guard<std::mutex> lock(tiering_mutex_);
  const std::string said = model->config().n_expert > 0
                               ? tier::attach_gpu_experts(*model, s, *tiering_, s.n_batch(), gpu_copy_share_)
                               : tier::check_dense_gpu_budget(s, gpu_mem_, gpu_mem);
  std::fprintf(stderr, "%s: %s\n", name.c_str(), said.c_str());
  vram_bytes_ = s.vram_bytes() + (tiering_->gpu_experts() ? tiering_->gpu_experts()->vram_bytes() : 0);
}

int ModelHost::effective_n_ctx(int n_ctx) const {
  if (n_ctx <= 0) n_ctx = defaults.n_ctx;
  const int train = model->config().n_ctx_train;
  return n_ctx <= 0 || (train > 0 && n_ctx > train) ? train : n_ctx;
}

Session& ModelHost::session_for(int n_ctx, int n_threads) {
  SessionParams p = defaults;
  p.n_ctx = effective_n_ctx(n_ctx);
  if (n_threads > 0) p.n_threads = n_threads;
  p.kv_type = kv_type_;
  if (!has_plan()) throw internal_error("model \"" + name + "\" was unloaded: planning it again failed");
  if (p.n_ctx > planned_n_ctx_)
    throw internal_error("model \"" + name + "\" is planned for a context of " + std::to_string(planned_n_ctx_) +
                         " tokens, not " + std::to_string(p.n_ctx));
  const bool same_threads = p.n_threads <= 0 || (session_ && session_->n_threads() == p.n_threads);
  if (!session_ || session_->n_ctx() != p.n_ctx || !same_threads) {
    detach_gpu_tier();
    session_.reset();  // free the old KV cache (and VRAM) before allocating the new one
    vram_bytes_ = 0;
    session_ = std::make_unique<Session>(*model, p);
    vram_bytes_ = session_->vram_bytes();
    {
      std::lock_guard<std::mutex> lock(tiering_mutex_);
      session_->set_ffn_source(tiering_->ffn_source());
      session_->set_expert_source(tiering_->expert_source());
    }
    attach_gpu_tier(*session_);
  }
  return *session_;
}

Session& ModelHost::embed_session(int n_threads) {
  if (!has_plan()) throw internal_error("model \"" + name + "\" was unloaded: planning it again failed");
  if (session_ && (n_threads <= 0 || session_->n_threads() == n_threads)) return *session_;
  return session_for(0, n_threads);
}

uint64_t ModelHost::bytes_wanted(int n_ctx) const {
  const tier::TieringOptions t = tiering_options(n_ctx, 0);
  const ModelConfig& c = model->config();
  // With kv_type_auto, f16: what the model wants with every weight resident at the widest type.
  return model->file().file_size() + tier::kv_cache_bytes(c, t.n_ctx, t.n_batch, t.kv_type_auto ? DType::F16 : t.kv_type) +
         tier::scratch_bytes(c, t.n_ctx, t.n_batch, t.n_threads);
}

tier::TieringOptions ModelHost::tiering_options(int n_ctx, uint64_t budget_bytes) const {
  tier::TieringOptions t;
  t.n_ctx = effective_n_ctx(n_ctx);
  t.n_batch = defaults.n_batch;
  t.kv_type = kv_type_;
  t.kv_type_auto = kv_type_auto_;
  t.n_threads = defaults.n_threads;
  t.budget_bytes = budget_bytes;
  t.ram_gbps = ram_gbps_;
  t.ssd_gbps = ssd_gbps_;
  if (gpu_mem_ > 0 && model->config().n_expert > 0) {  // the three-tier plan of a --gpu-mem session
    SessionParams p = defaults;
    p.n_ctx = t.n_ctx;
    p.kv_type = kv_type_;
    tier::set_gpu_tier_options(*model, p, gpu_mem_, t);
  }
  return t;
}

void ModelHost::check_plan(int n_ctx, uint64_t budget_bytes) const {
  try {
    tier::plan_for(*model, tiering_options(n_ctx, budget_bytes));
  } catch (const std::exception& e) {
    throw does_not_fit("model \"" + name + "\" does not fit the memory budget with a context of " +
                       std::to_string(effective_n_ctx(n_ctx)) + " tokens: " + e.what());
  }
}

void ModelHost::plan(int n_ctx, uint64_t budget_bytes) {
  const tier::TieringOptions t = tiering_options(n_ctx, budget_bytes);
  std::unique_ptr<tier::Tiering> old;
  detach_gpu_tier();
  {
    std::lock_guard<std::mutex> lock(tiering_mutex_);
    old = std::move(tiering_);
  }
  session_.reset();  // the KV cache and streaming pools go before the new ones are taken
  vram_bytes_ = 0;
  old.reset();
  std::unique_ptr<tier::Tiering> fresh;
  try {
    fresh = std::make_unique<tier::Tiering>(*model, t);
  } catch (const std::exception& e) {
    throw does_not_fit("model \"" + name + "\" does not fit the memory budget with a context of " +
                       std::to_string(t.n_ctx) + " tokens: " + e.what());
  }
  std::lock_guard<std::mutex> lock(tiering_mutex_);
  kv_type_ = fresh->plan().inputs.kv_type;
  planned_n_ctx_ = t.n_ctx;
  tiering_ = std::move(fresh);
}

uint64_t ModelHost::planned_bytes() const {
  std::lock_guard<std::mutex> lock(tiering_mutex_);
  return tiering_ ? tiering_->planned_bytes() : 0;
}

bool ModelHost::has_plan() const {
  std::lock_guard<std::mutex> lock(tiering_mutex_);
  return tiering_ != nullptr;
}

tier::TierStats ModelHost::stats() const {
  std::lock_guard<std::mutex> lock(tiering_mutex_);
  return tiering_ ? tiering_->stats() : tier::TierStats{};
}

bool ModelHost::streaming() const {
  std::lock_guard<std::mutex> lock(tiering_mutex_);
  return tiering_ && tiering_->streaming();
}

std::string ModelHost::summary() const {
  std::lock_guard<std::mutex> lock(tiering_mutex_);
  return tiering_ ? tiering_->summary() : "(no plan)";
}

}  // namespace strata::server
