#pragma once
// Shared pieces of transformer layers (attention, FFN, MoE FFN, norms, output head) that the
// architecture files compose. A ForwardPass evaluates one batch of tokens at consecutive
// positions; every buffer it uses is sized up front (nothing allocates per token).
#include <cstdint>
#include <vector>

#include "model/config.h"
#include "model/kv_cache.h"
#include "model/weights.h"
#include "ops/attention.h"
#include "ops/ops.h"
#include "ops/thread_pool.h"

namespace strata {

// Scratch for one batch of up to n_batch tokens.
struct ForwardBuffers {
  int n_batch = 0;
  std::vector<float> x;          // residual stream [n_batch x n_embd]
  std::vector<float> h;          // normalized input of a block [n_batch x n_embd]
  std::vector<float> o;          // output of a block [n_batch x n_embd]
  std::vector<float> q, k, v;    // projections [n_batch x n_head * head_dim_k] ...
  std::vector<float> att;        // attention output [n_batch x n_head * head_dim_v]
  std::vector<float> gate, up;   // FFN [n_batch x max(n_ff, n_ff_expert)]
  ops::AttentionScratch attn;    // tiles of the attention kernel (per thread) and its split-K partials
  // MoE routing: [n_batch x n_expert] router logits, chosen experts and weights [n_batch x k],
  // per-expert gathered inputs and outputs, per-token expert outputs [n_batch x k x n_embd].
  std::vector<float> router_logits;
  std::vector<int32_t> chosen;
  std::vector<float> chosen_weight;
  std::vector<int32_t> expert_tokens;
  std::vector<int32_t> experts_used;  // distinct experts routed to, then a guess for the next layer
  std::vector<float> expert_in, expert_out, expert_results;
  std::vector<float> logits;     // [n_batch x n_vocab] (or one row)
  ops::MatmulScratch mm;

  void init(const ModelConfig& config, int n_batch, int n_ctx, int n_threads);
  size_t bytes() const;
};

// Supplies the dense FFN matrices that are not resident (src/tier/stream implements it by reading
// them from the model file), a piece of whole rows at a time, so that little memory is needed
// for the matrix being computed. Used on the forward thread only.
class FfnSource {
 public:
  virtual ~FfnSource() = default;
  virtual bool streams(int layer, FfnPart part) const = 0;
  // Starts handing out the row pieces of one matrix, first row first.
  virtual void begin(int layer, FfnPart part) = 0;
  // The next piece: rows [row0, row0 + piece.n_rows) of the matrix, waiting for its read; false
  // once every piece was handed out. A piece stays valid until the next call.
  virtual bool next(WeightView& piece, int64_t& row0) = 0;
};

// Supplies expert slices of MoE layers that are not all resident (src/tier/stream implements it
// with an expert cache fed from the model file). Protocol per MoE layer, on the forward thread:
// begin_layer with the experts the batch routed to; then next_ready hands them out one at a time
// (those in memory first, the rest as their reads arrive) until it returns -1, each followed by
// done once its compute is finished. prefetch may be called at any time with a guess of a later
// layer's experts.
class ExpertSource {
 public:
  virtual ~ExpertSource() = default;
  virtual bool streams(int layer) const = 0;
  // experts: the distinct experts routed to, ascending; chosen: [n_tokens x k] routing (statistics).
  virtual void begin_layer(int layer, const int32_t* experts, int n_experts, const int32_t* chosen, int n_tokens) = 0;
  // Returns an expert of the current layer whose slices are in memory (waiting if none is), with
  // its views, or -1 when every expert of begin_layer was handed out.
  virtual int next_ready(WeightView& gate, WeightView& up, WeightView& down) = 0;
  virtual void done(int expert) = 0;
  // A guess of the experts `layer` will route to (distinct, most likely first); reads start if
  // room allows, in that order, so that the least likely are the ones still unread (and dropped)
  // when routing proves them wrong. replace: a later, better guess for the same layer; earlier
  // guesses not in it are dropped where the disk has not read them yet.
  virtual void prefetch(int layer, const int32_t* experts, int n_experts, bool replace) = 0;
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
  FfnSource* ffn_source = nullptr;  // null: every FFN is resident
  ExpertSource* expert_source = nullptr;  // null: every expert is resident
  // Stop output_head after the final norm: buf.h holds the normalized hidden state of every
  // token (embeddings) and no logits are computed.
  bool hidden_only = false;
};

struct AttentionSpec {
  float rope_base;
  float rope_scale;
  bool sliding;        // sliding-window layer
  bool scale_q_first;  // q is scaled before q·k (gemma3); otherwise the scores are scaled
};

namespace blocks {

void embed(ForwardPass& p);  // x = token_embd[tokens] * embd_scale
void norm_rows(ForwardPass& p, const float* in, float* out, const std::vector<float>& weight);
void add_rows(ForwardPass& p, float* x, const float* y);  // x += y, [n_tokens x n_embd]
// Self-attention of layer `layer` reading p.buf.h, writing p.buf.o.
void attention(ForwardPass& p, int layer, const AttentionSpec& spec);
// Gated FFN of `layer` reading p.buf.h, writing p.buf.o (weights resident or from p.ffn_source).
void ffn(ForwardPass& p, int layer, Activation act);
// Mixture-of-experts FFN (softmax routing, top-k) reading p.buf.h, writing p.buf.o.
void moe_ffn(ForwardPass& p, int layer, Activation act);
// After MoE layer `layer` has added its output to the residual: the next layer's guess again,
// from the residual its router will see but for one attention block (replacing moe_ffn's).
void refine_expert_guess(ForwardPass& p, int layer);
// The whole forward pass of a pre-norm decoder (llama, qwen2, qwen3 and their MoE forms):
// embed; per layer x += attn(norm(x)); x += ffn_or_moe(norm(x)); output head.
void pre_norm_decoder(ForwardPass& p, const AttentionSpec& spec);
// Final norm and output projection into p.buf.logits.
void output_head(ForwardPass& p);

}  // namespace blocks
}  // namespace strata
