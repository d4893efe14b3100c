#pragma once
// The device seam of compute: every op the forward pass runs, behind one interface that the CPU
// (today's kernels in src/ops and src/tensor) and CUDA (src/backend/cuda) implement. No CUDA type
// appears here: a CUDA build only adds an implementation behind make_cuda_backend.
//
// Pointers passed to a backend's ops live in that backend's memory (alloc/upload/download move
// bytes in and out); WeightView::data and KvLayerView::data too. Layout is the forward pass's: activations row-major
// [n_tokens x width] with a row stride in floats, weights as WeightView (GGUF ne[0] contiguous).
// Ops of one backend run in order; only download (and synchronize) wait for them.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "ops/attention.h"
#include "ops/ops.h"
#include "ops/weight.h"

namespace strata {
class ThreadPool;
}

namespace strata::backend {

enum class DeviceKind { cpu, cuda };
enum class GatedActivation { silu, gelu_tanh };  // gate = act(gate) * up

// Bounds of what the CUDA kernels handle (head dims of every supported architecture, experts of
// the MoE models); checked on entry with an error naming the value.
constexpr int kMaxHeadDim = 256;
constexpr int kMaxExperts = 256;
constexpr int kMaxExpertsUsed = 32;

// ---- mixture of experts (the routed-expert ops; see Backend::moe_experts)

// One MoE layer's routed experts as moe_experts reads them. gate/up/down have one expert's shape
// (type, n_rows, n_cols, row_bytes); expert e's matrices are at data + slot * *_stride with
// slot = e (the stacked 3-D tensors as bound), or slot_of[e] where slot_of is given (an expert's
// slot in a cache, < 0: not here), or 0 for e == single where single >= 0 (one expert handed out
// alone, every other not here). Pointers in the backend's memory.
struct ExpertWeights {
  WeightView gate, up, down;
  size_t gate_stride = 0, up_stride = 0, down_stride = 0;
  const int32_t* slot_of = nullptr;  // [n_expert] or null
  int single = -1;
  // The expert's slot, or -1 where it is not here.
  int slot(int expert) const {
    if (slot_of) return slot_of[expert];
    if (single >= 0) return expert == single ? 0 : -1;
    return expert;
  }
};

// A batch's routing and where the weighted expert outputs go, in the backend's memory except the
// host scratch: a backend computing on the host (the CPU) gathers each expert's tokens there, a
// device backend keeps scratch of its own.
struct ExpertBatch {
  const float* x = nullptr;  // [n_tokens x n_embd], n_embd = gate.n_cols
  int n_tokens = 0;
  int n_expert = 0, k = 0;
  const int32_t* chosen = nullptr;  // [n_tokens x k] expert ids, each < n_expert
  const float* weights = nullptr;   // [n_tokens x k]
  GatedActivation act = GatedActivation::silu;
  // [n_tokens x k x n_embd]: slot t * k + j gets weights[t, j] * down(act(gate x_t) * (up x_t)) of
  // expert chosen[t, j] where that expert is here; the other slots are left as they are.
  float* out = nullptr;
  struct HostScratch {  // rows of n_tokens: in, down_out [.. x n_embd], gate, up [.. x n_ff], slots
    float *in = nullptr, *gate = nullptr, *up = nullptr, *down_out = nullptr;
    int32_t* slots = nullptr;
  } host;
};

// ---- gpt-oss's experts (see Backend::moe_experts_biased)
// Its clamped SwiGLU (ggml's swiglu_oai): x = min(gate, limit), y = clamp(up, -limit, limit),
// gate = x * sigmoid(alpha * x) * (y + 1).
struct SwigluOai {
  float alpha = 1.702f;
  float limit = 7.0f;
};
// A bias after each expert matrix, in the backend's memory, indexed by expert id (every expert's
// biases are resident even where its matrices are not): expert e's at gate + e * n_ff, up + e * n_ff,
// down + e * n_embd.
struct ExpertBiases {
  const float *gate = nullptr, *up = nullptr, *down = nullptr;
  SwigluOai act;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual DeviceKind kind() const = 0;
  virtual std::string name() const = 0;  // "cpu (avx2, 8 threads)", "cuda:0 NVIDIA H100 ..."

  // ---- memory of this device
  virtual void* alloc(size_t bytes) = 0;  // throws strata::Error naming the size when out of memory
  virtual void free(void* p) = 0;
  virtual void upload(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void download(void* host_dst, const void* src, size_t bytes) = 0;  // waits for pending ops
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;           // within the device
  virtual void synchronize() = 0;
  // Measured bandwidth of this device's memory in GB/s (bytes read plus bytes written by a large
  // copy within the device), the bound of memory-bound decode; 0 where not measured (the CPU: the
  // tier code measures RAM itself).
  virtual double memory_gbps() { return 0.0; }

  // Decode issues the same ops every token: between begin_graph and end_graph a backend may record
  // them and run them at end_graph as one unit (CUDA: a graph, updated in place when only arguments
  // changed since the last one, so a token costs one launch). The CPU runs ops as they come. Inside,
  // nothing may wait for the device (no download or synchronize) and no scratch may grow: run the
  // same step once outside a graph first.
  virtual void begin_graph() {}
  virtual void end_graph() {}

  // ---- ops
  // y[t, r] = sum_c W[r, c] * x[t, c] for t < n_tokens, r < w.n_rows.
  virtual void matmul(const WeightView& w, const float* x, int64_t x_stride, int n_tokens, float* y,
                      int64_t y_stride) = 0;
  // One matrix in row pieces (a streamed tensor): the activations are converted once by
  // prepare_matmul for weights of `type` with n_cols columns, then each piece [rows x n_cols]
  // multiplies them into y (its rows at y). Valid until the next matmul or prepare_matmul.
  virtual void prepare_matmul(DType type, int64_t n_cols, const float* x, int64_t x_stride, int n_tokens) = 0;
  virtual void matmul_prepared(const WeightView& piece, float* y, int64_t y_stride) = 0;
  // out[i] = dequantized row ids[i] of w, i < n (ids in this device's memory).
  virtual void get_rows(const WeightView& w, const int32_t* ids, int n, float* out, int64_t out_stride) = 0;
  // Per row of n floats: out = x / rms(x) * weight (weight may be null); rows contiguous; out may be x.
  virtual void rms_norm(const float* x, const float* weight, float* out, int64_t n, int n_rows, float eps) = 0;
  // Rotates n_heads heads of head_dim floats of token t (row t, stride x_stride) at position
  // pos0 + t, as ops::rope (params.freq_factors in this device's memory).
  virtual void rope(float* x, int64_t x_stride, int n_tokens, int n_heads, int head_dim, int64_t pos0,
                    const ops::RopeParams& params) = 0;
  virtual void softmax(float* x, int64_t n, int n_rows) = 0;  // in place, per row of n
  virtual void gated_activation(float* gate, const float* up, int64_t n, GatedActivation act) = 0;
  virtual void add(float* x, const float* y, int64_t n) = 0;  // x += y
  virtual void scale(float* x, float s, int64_t n) = 0;
  // Keys k [n_tokens x n_head_kv * head_dim_k] and values v [n_tokens x n_head_kv * head_dim_v]
  // of the tokens at positions pos0.. into their cache slots (position % n_slots), in the
  // cache's type (ops::kv_store).
  virtual void store_kv(const ops::KvLayerView& k_cache, const ops::KvLayerView& v_cache, const float* k,
                        const float* v, int n_tokens, int64_t pos0, int n_head_kv, int head_dim_k,
                        int head_dim_v) = 0;
  // ops::attention's contract: q [n_tokens x n_head * head_dim_k] (roped, own keys and values
  // already stored), out [n_tokens x n_head * head_dim_v].
  virtual void attention(const ops::AttentionShape& shape, const float* q, int n_tokens, int64_t pos0,
                         const ops::KvLayerView& k_cache, const ops::KvLayerView& v_cache, float* out) = 0;
  // MoE routing per token: softmax over n_expert logits, the k most probable experts (best first,
  // ties to the lower index, as top_k) and their probabilities, renormalized to sum 1 if normalize.
  virtual void route_top_k(const float* logits, int n_tokens, int n_expert, int k, bool normalize, int32_t* chosen,
                           float* weights) = 0;

  // ---- decode steps replayed (a device that records graphs overrides these)
  // Decode steps that differ only in their position: begin_position_graph(pos) is begin_graph for a
  // step at position pos (every op taking a position must get pos) that the backend records with
  // the position read from its own memory; replay_graph(pos) then runs that recording for another
  // position without the ops being issued again and returns true, or returns false (having done
  // nothing) where there is no recording to replay (none made, or scratch it used has moved).
  // The caller replays only steps whose ops would be the same but for the position.
  virtual void begin_position_graph(int64_t) { begin_graph(); }
  virtual bool replay_graph(int64_t) { return false; }

  // ---- batched forms of the ops above (a default in terms of them; a device overrides to save launches)
  // rows[t * n + i] += bias[i] for t < n_rows, i < n: a bias added to every token of a batch.
  virtual void add_bias(float* rows, const float* bias, int64_t n, int n_rows) {
    for (int t = 0; t < n_rows; ++t) add(rows + int64_t(t) * n, bias, n);
  }

  // ---- mixture of experts (grouped here: added with the MoE path)
  // Every routed (token, rank) slot whose expert is here, as ExpertBatch::out says; an expert's
  // weights are read once per batch where the backend can (prompt batches grouped per expert), and
  // the routing is read from the backend's memory (decode needs no host round trip).
  virtual void moe_experts(const ExpertWeights& w, const ExpertBatch& batch) = 0;
  // out[t] = slots[t, 0] + slots[t, 1] + ... + slots[t, k - 1] (in that order) for rows of n.
  virtual void moe_sum(const float* slots, int n_tokens, int k, int64_t n, float* out) = 0;
  // x[t] += sigmoid(gate_logit[t]) * y[t] for rows of n (the shared expert's gate).
  virtual void add_sigmoid_gated(float* x, const float* y, const float* gate_logit, int n_tokens, int64_t n) = 0;

  // ---- copies beside compute (grouped here: added with the GPU expert tier)
  // Host memory this device copies from at the link's full speed (CUDA: pinned); where the device
  // is the host, its own memory.
  virtual void* alloc_host(size_t bytes) { return alloc(bytes); }
  virtual void free_host(void* p) { free(p); }
  // A copy from host memory (alloc_host's) into this device, queued beside the ops (CUDA: on a
  // copy stream of its own); the host memory must stay as it is until the ops wait for it.
  virtual void upload_async(void* dst, const void* host_src, size_t bytes) { upload(dst, host_src, bytes); }
  // Fences between the two queues: ops queued later wait for the copies queued so far; copies
  // queued later wait for the ops queued so far.
  virtual void ops_after_copies() {}
  virtual void copies_after_ops() {}

  // ---- fused forms (grouped here: added for fewer decode launches; a default in terms of the ops
  // above, which a device overrides)
  // gate_out = act(gate x) * (up x), rows of gate.n_rows, for an FFN whose gate and up matrices are
  // both whole here (x: n_tokens rows of gate.n_cols); up_out is scratch the default puts up x in.
  virtual void ffn_gate_up(const WeightView& gate, const WeightView& up, const float* x, int n_tokens, float* gate_out,
                           float* up_out, GatedActivation act) {
    prepare_matmul(gate.type, gate.n_cols, x, gate.n_cols, n_tokens);
    matmul_prepared(gate, gate_out, gate.n_rows);
    prepare_matmul(up.type, up.n_cols, x, up.n_cols, n_tokens);
    matmul_prepared(up, up_out, up.n_rows);
    gated_activation(gate_out, up_out, int64_t(n_tokens) * gate.n_rows, act);
  }

  // ---- gpt-oss's ops and the KV cache's types (grouped here: added with gpt-oss on the GPU; the
  // cache ops above take f16, q8_0 and q4_0 caches and attention's sinks on every backend)
  // gpt-oss's routing (llama.cpp's softmax-weight gating): per token the k highest logits (best
  // first, ties to the lower index, as top_k) and a softmax over those k.
  virtual void route_top_k_softmax(const float* logits, int n_tokens, int n_expert, int k, int32_t* chosen,
                                   float* weights) = 0;
  virtual void swiglu_oai(float* gate, const float* up, int64_t n, const SwigluOai& act) = 0;
  // moe_experts for gpt-oss: each matrix's output plus its expert's bias, the clamped SwiGLU
  // between (batch.act unused): slot t * k + j gets weights[t, j] * (down(swiglu_oai(gate x_t +
  // b_gate, up x_t + b_up)) + b_down) where its expert is here.
  virtual void moe_experts_biased(const ExpertWeights& w, const ExpertBiases& bias, const ExpertBatch& batch) = 0;

  // ---- timing the two queues (grouped here: tier14, the GPU expert tier's telemetry)
  // mark(copies) records the point the copy queue (true) or the op queue (false) has reached
  // among what is queued so far and returns its id, good until kMarks later marks; -1 where the
  // backend keeps no marks. seconds_between(from, to): the time between two marks of one queue,
  // waiting until `to` is reached; 0 for an id of -1.
  static constexpr int kMarks = 256;
  virtual int mark(bool copies) {
    (void)copies;
    return -1;
  }
  virtual double seconds_between(int from, int to) {
    (void)from, (void)to;
    return 0.0;
  }
};

// The k highest of n scores into out, best first (ties to the lower index): routing's one top-k.
void top_k(const float* scores, int n, int k, int32_t* out);

// Today's CPU kernels (src/ops, src/tensor) on a thread pool the caller owns. The scratch of
// matmul and attention is the caller's where given (a session's ForwardBuffers, sized up front),
// else the backend's own, grown on use.
std::unique_ptr<Backend> make_cpu_backend(ThreadPool& pool, ops::MatmulScratch* matmul_scratch = nullptr,
                                          ops::AttentionScratch* attention_scratch = nullptr);

// Whether this build has the CUDA backend, and how many devices the driver shows (0 without
// either; never throws).
bool cuda_built();
int cuda_device_count();
// Free and total memory of CUDA device `device`; false where there is none.
bool cuda_memory(int device, size_t& free_bytes, size_t& total_bytes);
// Whether the CUDA backend multiplies and gathers weights of this type (false without CUDA).
bool cuda_supports(DType type);
// The CUDA backend on device `device`; throws strata::Error when the build has none or the device
// cannot be used (the message says which).
std::unique_ptr<Backend> make_cuda_backend(int device = 0);
// Bytes free on CUDA device `device` now (the planner's default VRAM budget); 0 without CUDA or
// without that device (never throws).
uint64_t cuda_free_memory(int device);

}  // namespace strata::backend
