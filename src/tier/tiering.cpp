#include "tier/tiering.h"

#include <algorithm>
#include <cstdio>

#include "ops/thread_pool.h"
#include "tier/plan/device_speed.h"
#include "util/error.h"

namespace strata::tier {

namespace {

// Per layer, the experts a plan keeps resident, most probable first, at most `limit` in all.
std::vector<std::vector<int>> pinned_experts(const Plan& plan, size_t limit) {
  std::vector<const PlanUnit*> units;
  for (const PlanUnit& u : plan.units)
    if (u.kind == UnitKind::expert && u.resident) units.push_back(&u);
  std::stable_sort(units.begin(), units.end(),
                   [](const PlanUnit* a, const PlanUnit* b) { return a->probability > b->probability; });
  std::vector<std::vector<int>> pinned(size_t(plan.config.n_layer));
  for (size_t i = 0; i < units.size() && i < limit; ++i) pinned[size_t(units[i]->layer)].push_back(units[i]->expert);
  for (auto& layer : pinned) std::sort(layer.begin(), layer.end());
  return pinned;
}

}  // namespace

// Forwards to the expert streamer and revises the plan as routing statistics accumulate. Its
// hook is the streamer's guesses, behind the routing override where one is asked for (with no
// streamer, the override alone: every expert resident).
class Tiering::Reviser : public ExpertSource {
 public:
  explicit Reviser(Tiering& t) : t_(t) {
    if (t_.override_) t_.override_->wrap(t_.experts_ ? t_.experts_->hook() : nullptr);
  }
  bool streams(int layer) const override { return t_.experts_ && t_.experts_->streams(layer); }
  void begin_layer(int layer, const int32_t* experts, int n, const int32_t* chosen, int n_tokens) override {
    // A pass visits streamed layers in ascending order: a layer not above the last one begins
    // the next forward pass, the token boundary where a revised plan may take effect.
    if (layer <= last_layer_) t_.apply_revision();
    last_layer_ = layer;
    t_.experts_->begin_layer(layer, experts, n, chosen, n_tokens);
    const uint64_t seen = t_.experts_->routing().tokens_seen();
    if (t_.options_.revise_every > 0 && seen >= t_.revised_at_ + uint64_t(t_.options_.revise_every))
      t_.request_revision();
  }
  int next_ready(WeightView& g, WeightView& u, WeightView& d) override { return t_.experts_->next_ready(g, u, d); }
  void done(int expert) override { t_.experts_->done(expert); }
  void prefetch(int layer, const int32_t* experts, int n, bool replace) override {
    if (t_.experts_) t_.experts_->prefetch(layer, experts, n, replace);
  }
  ForwardHook* hook() override {
    if (t_.override_) return t_.override_.get();
    return t_.experts_->hook();
  }

 private:
  Tiering& t_;
  int last_layer_ = -1;
};

Plan plan_for(const Model& model, const TieringOptions& options) {
  PlanInputs in;
  in.budget_bytes = options.budget_bytes;
  in.n_ctx = options.n_ctx > 0 ? options.n_ctx : 4096;
  in.n_batch = options.n_batch;
  in.kv_type = options.kv_type;
  in.kv_type_auto = options.kv_type_auto;
  in.n_threads = options.n_threads > 0 ? options.n_threads : ThreadPool::physical_cores();
  if (options.ram_gbps > 0) in.ram_gbps = options.ram_gbps;
  if (options.ssd_gbps > 0) in.ssd_gbps = options.ssd_gbps;
  GpuOverrides gpu;
  gpu.mem_given = !options.gpu_mem.empty();
  gpu.mem_bytes = options.gpu_mem;
  gpu.session_bytes = options.gpu_session_bytes;
  gpu.expert_slot_bytes = options.gpu_expert_slot_bytes;
  return plan_on_this_machine(model.file(), model.config(), in, options.ram_gbps > 0, options.ssd_gbps > 0,
                              options.n_threads > 0 ? options.n_threads : ThreadPool::physical_cores(), false,
                              gpu.mem_given ? &gpu : nullptr);
}

Tiering::Tiering(const Model& model, const TieringOptions& options) : model_(model), options_(options) {
  const ModelConfig& c = model.config();
  plan_ = plan_for(model, options);

  std::string routing_path;
  if (c.n_expert > 0 && options.persist_routing) {
    routing_path = RoutingStats::default_path(model.file().path(), model.file().file_size());
    RoutingStats seen(c.n_layer, c.n_expert, std::max(1, c.n_expert_used));
    if (seen.load(routing_path) && seen.tokens_seen() > 0) {
      plan_ = revise(plan_, seen.frequencies());  // start from what earlier runs observed
      revised_at_ = seen.tokens_seen();
    }
    if (!options.gpu_mem.empty()) {  // the GPU tier goes on counting (no expert streamer on a GPU)
      gpu_routing_ = std::make_unique<RoutingStats>(std::move(seen));
      routing_path_ = routing_path;
    }
  }

  std::vector<StreamedMatrix> dense_matrices;
  size_t ring_bytes = DenseFfnStreamer::kDefaultRingBytes;
  if (options.stream_ffn > 0) {
    std::vector<int> layers;
    for (int l = std::max(0, c.n_layer - options.stream_ffn); l < c.n_layer; ++l) layers.push_back(l);
    dense_matrices = DenseFfnStreamer::whole_layers(c, layers);
    ring_bytes = size_t(dense_ring_pieces(options.prefetch)) * DenseFfnStreamer::kDefaultPieceBytes;
  } else {
    for (const PlanUnit& u : plan_.units)
      if (u.kind == UnitKind::dense_ffn && !u.resident) dense_matrices.push_back({u.layer, FfnPart(u.part)});
    ring_bytes = size_t(plan_.n_dense_slots) * plan_.dense_slot_bytes;
  }
  if (!dense_matrices.empty()) dense_ = std::make_unique<DenseFfnStreamer>(model, dense_matrices, ring_bytes);

  if (plan_.n_expert_units > plan_.n_expert_resident) {
    ExpertStreamerOptions eo;
    eo.pinned = pinned_experts(plan_, size_t(plan_.n_expert_resident));
    eo.n_pool_slots = n_pool_slots_ = std::max(1, plan_.n_expert_slots);
    eo.look_ahead = options.look_ahead;
    eo.co_predict = options.co_predict;
    eo.stats_path = routing_path_ = routing_path;
    experts_ = std::make_unique<ExpertStreamer>(model, std::move(eo));
    replanner_ = std::make_unique<Replanner>();
  }
  if (!options.routing_override.empty()) override_ = std::make_unique<RoutingOverride>(options.routing_override, c);
  if (experts_ || override_) reviser_ = std::make_unique<Reviser>(*this);
  // Under a budget that streams, page cache is what the budget is short of: the resident weights
  // leave it (the streamers took their file offsets above), and what is still read through the
  // mapping, an embedding row per token, is read without read-ahead. When everything fits, the
  // mapping stays as it is and costs nothing.
  if (streaming()) {
    resident_ = std::make_unique<ResidentCopy>(model.file(), plan_);
    model.file().advise_random_access(true);
  }
}

Tiering::~Tiering() {
  if (resident_) model_.file().advise_random_access(false);
  if (gpu_ && gpu_routing_ && !routing_path_.empty() && gpu_routing_->tokens_seen() > 0) {
    try {
      gpu_routing_->save(routing_path_);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "warning: %s\n", e.what());
    }
  }
  if (!experts_) return;
  replanner_.reset();  // its statistics file is written before the last one below
  try {
    experts_->save_stats();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "warning: %s\n", e.what());
  }
}

ExpertSource* Tiering::expert_source() { return reviser_.get(); }

void Tiering::request_revision() {
  const RoutingStats& routing = experts_->routing();
  const ExpertStats e = experts_->stats();
  // The predictor's measured recall replaces the planner's assumption of none.
  Plan base = plan_;
  if (e.prefetch_hits + e.misses > 0)
    base.inputs.expert_prefetch_recall = double(e.prefetch_hits) / double(e.prefetch_hits + e.misses);
  if (replanner_->submit(std::move(base), routing, routing_path_)) revised_at_ = routing.tokens_seen();
}

// The revised plan's prediction and statistics replace the old ones. Only pinned_lru moves
// experts for it; under lfu (the default) the cache already follows the routing the revision
// learned from, and the slot count is fixed for the session.
void Tiering::apply_revision() {
  std::optional<Plan> revised = replanner_->take();
  if (!revised) return;
  if (experts_->policy() == ExpertCachePolicy::pinned_lru) {
    const size_t n_pinned = size_t(experts_->stats().slots - n_pool_slots_);
    experts_->repin(pinned_experts(*revised, n_pinned));
  }
  std::lock_guard<std::mutex> lock(plan_mutex_);
  plan_ = std::move(*revised);
  ++n_revisions_;
}

uint64_t Tiering::planned_bytes() const {
  std::lock_guard<std::mutex> lock(plan_mutex_);
  return plan_.used_bytes;
}

TierStats Tiering::stats() const {
  TierStats s;
  std::unique_lock<std::mutex> lock(plan_mutex_);
  s.streaming = streaming();
  s.budget_bytes = plan_.inputs.budget_bytes;
  s.planned_bytes = plan_.used_bytes;
  s.resident_weight_bytes = plan_.resident_weight_bytes;
  s.predicted_tok_s = plan_.tokens_per_second;
  s.plan_revisions = n_revisions_;
  lock.unlock();
  s.direct_io = dense_ ? dense_->direct_io() : experts_ ? experts_->direct_io() : false;
  if (dense_) {
    s.has_dense = true;
    s.dense = dense_->stats();
    s.pool_bytes += dense_->pool_bytes();
  }
  if (experts_) {
    s.has_experts = true;
    s.experts = experts_->stats();
    s.pool_bytes += experts_->memory_bytes();
  }
  if (resident_) s.resident_copy_bytes = resident_->bytes();
  if (gpu_) {
    s.gpu = gpu_->counters();
    std::lock_guard<std::mutex> again(plan_mutex_);
    GpuTierCounters& g = s.gpu;
    g.predicted_gen_tok_s = plan_.tokens_per_second;
    g.predicted_prompt_tok_s = plan_.prompt_tokens_per_second;
    double routed = 0, in_vram = 0;
    for (const PlanUnit& u : plan_.units) {
      if (u.kind != UnitKind::expert) continue;
      routed += u.probability;
      if (u.tier == Tier::vram) in_vram += u.probability, ++g.plan_vram_experts;
    }
    g.predicted_vram_hit_rate = routed > 0 ? in_vram / routed : 0.0;
  }
  return s;
}

std::string Tiering::summary() const {
  char buf[512];
  if (!streaming()) {
    std::snprintf(buf, sizeof buf, "tiering: everything resident (%s of a %s budget)",
                  format_bytes(double(plan_.used_bytes)).c_str(),
                  format_bytes(double(plan_.inputs.budget_bytes)).c_str());
    return buf;
  }
  std::snprintf(buf, sizeof buf,
                "tiering: budget %s; %d/%d FFN matrices and %d/%d expert slices resident, %d pool slots, prefetch "
                "depth %d; predicted %.2f tok/s (%s)",
                format_bytes(double(plan_.inputs.budget_bytes)).c_str(), plan_.n_dense_resident, plan_.n_dense_units,
                plan_.n_expert_resident, plan_.n_expert_units, plan_.n_dense_slots + plan_.n_expert_slots,
                plan_.prefetch_depth, plan_.tokens_per_second, limit_name(plan_.limit));
  return buf;
}

std::string Tiering::describe_stats(const TierStats& s, int n_forward, double seconds) const {
  TierStats run = s;
  run.n_tokens = uint64_t(std::max(0, n_forward));
  run.seconds = seconds;
  return tier::describe_stats(run);
}

}  // namespace strata::tier
