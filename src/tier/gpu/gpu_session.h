#pragma once
// --gpu-mem's one path, for the commands and the server alike: a GPU session whose routed experts
// live in host RAM, planned by the three-tier plan and computed through the GPU expert tier.
// Header-only: it joins the runtime's Session and the tier, which do not depend on each other, in
// the front ends that link both.
//
// The session's VRAM is counted once, by the runtime (gpu_session_vram_bytes): the plan takes it
// as the GPU's fixed part and gives the rest of the budget to the expert tier (staging and cached
// experts in slots of GpuExperts::slot_bytes), so the plan's minimum, its VRAM experts and the
// tier's arena are one computation.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "model/model.h"
#include "runtime/session.h"
#include "tier/gpu/gpu_experts.h"
#include "tier/tiering.h"
#include "util/error.h"

namespace strata::tier {

// The tiering options' GPU part for sessions of `params` under a VRAM budget of gpu_mem bytes:
// the budget, the runtime's count of such a session (routed experts left out) and the tier's slot.
inline void set_gpu_tier_options(const Model& model, SessionParams params, uint64_t gpu_mem, TieringOptions& t) {
  params.routed_experts_on_gpu = false;
  t.gpu_mem = {gpu_mem};
  t.gpu_session_bytes = gpu_session_vram_bytes(model, params);
  t.gpu_expert_slot_bytes = GpuExperts::slot_bytes(model);
}

// A dense model under --gpu-mem: every weight in VRAM (its layers are not split between VRAM and
// host RAM yet), so a budget below the session is an error naming both. Returns the line to tell.
inline std::string check_dense_gpu_budget(const Session& session, uint64_t budget, const std::string& budget_text) {
  const uint64_t fixed = session.vram_bytes() + session.vram_reserved_bytes();
  if (fixed > budget)
    throw Error("--gpu-mem " + budget_text + " with a dense model: the GPU session holds every weight in VRAM (" +
                std::to_string(fixed >> 20) + " MiB with KV cache, activations and " +
                std::to_string(session.vram_reserved_bytes() >> 20) +
                " MiB scratch), above the budget; a dense model's layers are not split between VRAM and host "
                "RAM: give a larger --gpu-mem, or --cpu");
  return "--gpu-mem " + budget_text + ": a dense model, every weight in VRAM (" + std::to_string(fixed >> 20) +
         " MiB of the budget)";
}

// The GPU expert tier for `session`, as the tiering's plan (planned with set_gpu_tier_options)
// says: the VRAM the plan leaves besides the session, its experts there hottest first, its copy
// shares (copy_share >= 0 overrides decode's in every layer, prompt_copy_share >= 0 the prompt's).
// The tiering owns the tier and must let it go before the session ends (attach_gpu(nullptr)).
// Returns the lines to tell.
inline std::string attach_gpu_experts(const Model& model, Session& session, Tiering& tiering, int n_batch,
                                      double copy_share = -1, double prompt_copy_share = -1) {
  const Plan& plan = tiering.plan();
  if (plan.gpus.empty() || plan.gpus.front().session_bytes == 0)
    throw Error("gpu expert tier: the plan has no GPU session to follow (plan it with set_gpu_tier_options)");
  const GpuUse& use = plan.gpus.front();
  // The session as allocated, against the plan's count of it (weights another session of the model
  // holds are shared: fewer). More would be a sizing function that disagrees with an allocation.
  const uint64_t held = session.vram_bytes() + session.vram_reserved_bytes();
  std::string said;
  if (held > use.session_bytes)
    said = "warning: the GPU session holds " + std::to_string(held >> 20) + " MiB of VRAM, the plan counted " +
           std::to_string(use.session_bytes >> 20) + " MiB for it\n";
  GpuExpertOptions g =
      gpu_expert_options(plan, use.budget_bytes - use.session_bytes, GpuExperts::slot_bytes(model), n_batch);
  g.routing = tiering.gpu_routing();
  const ModelConfig& c = model.config();
  if (copy_share >= 0) g.copy_share.assign(size_t(c.n_layer), std::min(1.0, copy_share));
  if (prompt_copy_share >= 0) g.prompt_copy_share = std::min(1.0, prompt_copy_share);
  tiering.attach_gpu(std::make_unique<GpuExperts>(model, session.backend(), session.pool(), g));
  session.set_expert_compute(tiering.gpu_experts());
  const GpuExperts& x = *tiering.gpu_experts();
  double share = 0;
  int n_moe = 0;
  for (int l = 0; l < c.n_layer; ++l)
    if (c.is_moe_layer(l)) share += g.copy_share[size_t(l)], ++n_moe;
  char text[640];
  std::snprintf(text, sizeof text,
                "gpu experts: plan: session %llu MiB of VRAM, %zu experts in VRAM, %.0f%% of decode misses copied "
                "(mean over layers), %.0f%% of a prompt's; predicted generation %.1f tok/s (%s), prompt %.0f tok/s "
                "(%s)\n"
                "gpu experts: %d cached and %d staging slots of %.1f MB in VRAM, %.2f GB pinned host RAM",
                (unsigned long long)(use.session_bytes >> 20), g.cached.size(), n_moe ? 100.0 * share / n_moe : 0.0,
                100.0 * g.prompt_copy_share, plan.tokens_per_second, limit_name(plan.limit),
                plan.prompt_tokens_per_second, limit_name(plan.prompt_limit), x.n_cache_slots(), x.n_staging_slots(),
                double(GpuExperts::slot_bytes(model)) / 1e6, double(x.host_bytes()) / 1e9);
  return said + text;
}

}  // namespace strata::tier
