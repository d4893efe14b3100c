#pragma once
// Shared pieces of transformer layers (attention, FFN, MoE FFN, norms, output head) that the
// architecture files compose. A ForwardPass evaluates one batch of tokens at consecutive
// positions; every buffer it uses is sized up front (nothing allocates per token).
#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/weight_source.h"
#include "model/weights.h"
#include "ops/attention.h"
#include "ops/ops.h"
#include "ops/thread_pool.h"

namespace strata {

// The activations a pass computes on, in its backend's memory: a CPU pass's point into its
// ForwardBuffers, a device pass's into DeviceBuffers (model/device_model.h).
struct Activations {
  float *x = nullptr, *h = nullptr, *o = nullptr;  // [n_batch x n_embd]
  float *q = nullptr, *k = nullptr, *v = nullptr, *att = nullptr;
  float *gate = nullptr, *up = nullptr;
  // MoE layers: router logits [n_batch x n_expert], the routing [n_batch x k] (experts, weights),
  // the weighted expert outputs per (token, rank) slot [n_batch x k x n_embd], and the shared
  // expert's output [n_batch x n_embd] and gate logit [n_batch]. Null for dense models.
  float* router_logits = nullptr;
  int32_t* chosen = nullptr;
  float* chosen_weight = nullptr;
  float* expert_results = nullptr;
  float *shexp_out = nullptr, *shexp_gate = nullptr;
  // [logits_rows x n_vocab], or null: ForwardBuffers::logits (host), which all-logits evaluation grows.
  float* logits = nullptr;
  int logits_rows = 0;
  const int32_t* tokens = nullptr;  // the batch's token ids in device memory, or null: ForwardPass::tokens
};

// Scratch for one batch of up to n_batch tokens. Its sizes are decided in one place
// (ForwardBuffers::sizes): init allocates them and the planner asks bytes_for, so the plan counts
// exactly what a session allocates.
struct ForwardBuffers {
  int n_batch = 0;
  std::vector<float> x;          // residual stream [n_batch x n_embd]
  std::vector<float> h;          // normalized input of a block [n_batch x n_embd]
  std::vector<float> o;          // output of a block [n_batch x n_embd]
  std::vector<float> q, k, v;    // projections [n_batch x n_head * head_dim_k] ...
  std::vector<float> att;        // attention output [n_batch x n_head * head_dim_v]
  std::vector<float> gate, up;   // FFN [n_batch x config.max_ff()]
  ops::AttentionScratch attn;    // tiles of the attention kernel (per thread) and its split-K partials
  // MoE routing: [n_batch x n_expert] router logits, chosen experts and weights [n_batch x k],
  // per-expert gathered inputs and outputs, per-token expert outputs [n_batch x k x n_embd].
  std::vector<float> router_logits;
  std::vector<int32_t> chosen;
  std::vector<float> chosen_weight;
  std::vector<int32_t> expert_tokens;
  std::vector<int32_t> experts_used;  // distinct experts routed to [n_expert]
  std::vector<float> expert_in, expert_out, expert_results;
  std::vector<float> shexp_scale;  // shared expert: sigmoid(gate . x) per token [n_batch]
  // [n_vocab]: one row. All-logits evaluation (eval_each) grows it to its batch once; the token
  // loop never does.
  std::vector<float> logits;
  ops::MatmulScratch mm;  // activations converted for matmul: n_batch rows of the widest input

  // Elements of every buffer (per thread where it says so).
  struct Sizes {
    size_t x = 0, h = 0, o = 0, q = 0, k = 0, v = 0, att = 0, gate = 0, up = 0;
    size_t attn_bytes = 0;  // ops::AttentionScratch for the batch and threads
    size_t router_logits = 0, chosen = 0, chosen_weight = 0, expert_tokens = 0, experts_used = 0;
    size_t expert_in = 0, expert_out = 0, expert_results = 0, shexp_scale = 0;
    size_t logits = 0;
    size_t mm_bytes = 0;
  };
  static Sizes sizes(const ModelConfig& config, int n_batch, int n_ctx, int n_threads);
  // What init allocates for these arguments, in bytes (the planner's scratch figure).
  static size_t bytes_for(const ModelConfig& config, int n_batch, int n_ctx, int n_threads);

  void init(const ModelConfig& config, int n_batch, int n_ctx, int n_threads);
  size_t bytes() const;  // what the buffers hold now (capacities)
  Activations activations();  // pointers into these buffers, for a CPU pass
};

class DeviceWeights;  // model/device_model.h

// Sees the routing of every MoE layer and the guesses made of it (src/tier/trace records them).
// Called on the forward thread.
class RoutingObserver {
 public:
  virtual ~RoutingObserver() = default;
  // chosen: [n_tokens x k] experts of the tokens at positions pos0.., best first.
  virtual void routed(int layer, int64_t pos0, const int32_t* chosen, int n_tokens) = 0;
  // A guess of the experts `layer` will route to (distinct, likeliest first), made before it runs;
  // refined: made after the previous layer's FFN.
  virtual void guessed(int layer, const int32_t* experts, int n_experts, bool refined) = 0;
};

struct ForwardPass {
  const ModelConfig& config;
  const ModelWeights& weights;
  ForwardBuffers& buf;
  KvCache& kv;
  ThreadPool& pool;
  const int32_t* tokens;
  int n_tokens;
  int64_t pos0;
  bool all_logits;  // logits for every token of the batch, or only the last
  // Every FFN matrix and expert comes from here, wherever its bytes are.
  WeightSource& source;
  ForwardHook* hook = nullptr;  // policies called at fixed points (tier's expert guesses), or null
  // Stop output_head after the final norm: buf.h holds the normalized hidden state of every
  // token (embeddings) and no logits are computed.
  bool hidden_only = false;
  RoutingObserver* routing_observer = nullptr;  // null: routing is not traced
  // Where compute runs and on what: every op goes to `backend`, reading and writing `act`; the
  // weights' bytes are `device`'s copies (null: as bound, in host memory). The KV cache lives in
  // the backend's memory too (KvCache::init).
  backend::Backend* backend = nullptr;
  Activations act;
  const DeviceWeights* device = nullptr;
  // MoE layers whose experts are computed elsewhere than as bound (a GPU expert tier), or null.
  ExpertCompute* expert_compute = nullptr;
};

struct AttentionSpec {
  float rope_base;
  float rope_scale;
  bool sliding;        // sliding-window layer
  bool scale_q_first;  // q is scaled before q·k (gemma3); otherwise the scores are scaled
};

namespace blocks {

void embed(ForwardPass& p);  // x = token_embd[tokens] * embd_scale
// Rows of p.act (p.act.x, p.act.h, p.act.o), [n_tokens x n_embd].
void norm_rows(ForwardPass& p, const float* in, float* out, const std::vector<float>& weight);
void add_rows(ForwardPass& p, float* x, const float* y);  // x += y
// Self-attention of layer `layer` reading p.act.h, writing p.act.o.
void attention(ForwardPass& p, int layer, const AttentionSpec& spec);
// Gated FFN of `layer` reading p.act.h, writing p.act.o (its matrices from p.source).
void ffn(ForwardPass& p, int layer, Activation act);
// Mixture-of-experts FFN (softmax routing, top-k; the shared expert where the model has one)
// reading p.act.h, writing p.act.o. Calls p.hook->after_routing once the experts are asked for.
// Experts the source holds resident are computed by one backend op over the stacked tensors (the
// routing stays in the backend's memory); experts it hands out one by one (streamed) are computed
// as they arrive, with the routing read on the host.
void moe_ffn(ForwardPass& p, int layer, Activation act);
// The distinct experts of a routing [n_entries = tokens x k], ascending, into out; returns how many.
int distinct_experts(const int32_t* chosen, int n_entries, int n_expert, int32_t* out);
// After layer `layer`'s FFN output was added to the residual: calls p.hook->after_ffn.
void after_ffn(ForwardPass& p, int layer);
// The k highest of n scores, best first (ties to the lower index).
using backend::top_k;
// Final norm and output projection into p.act.logits (p.buf.logits where null); hidden_only: the
// normalized rows into p.act.h.
void output_head(ForwardPass& p);

}  // namespace blocks
}  // namespace strata
