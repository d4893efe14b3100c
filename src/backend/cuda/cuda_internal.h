#pragma once
// Internal to src/backend/cuda: the launchers shared by its .cu files, and error checking.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "backend/backend.h"
#include "ops/weight.h"
#include "util/error.h"

namespace strata::backend::cuda {

[[noreturn]] inline void fail(cudaError_t e, const char* what, const char* file, int line) {
  throw Error(std::string("cuda: ") + what + " failed at " + file + ":" + std::to_string(line) + ": " +
              cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}
#define STRATA_CUDA_CHECK(expr)                                                                                    \
  do {                                                                                                             \
    const cudaError_t strata_cuda_err = (expr);                                                                    \
    if (strata_cuda_err != cudaSuccess) ::strata::backend::cuda::fail(strata_cuda_err, #expr, __FILE__, __LINE__); \
  } while (0)
// Every kernel launch is checked with STRATA_CUDA_LAUNCHED, which also counts it: device data
// derived from an activation (the decode matmul's int8 copy, cuda_backend.cu) stays valid only
// while no kernel that might write that activation has been launched since. Other writes of device
// memory (copies, memsets) must drop such data themselves.
inline std::atomic<uint64_t> launches{0};
#define STRATA_CUDA_LAUNCHED()                                                         \
  do {                                                                                 \
    ::strata::backend::cuda::launches.fetch_add(1, std::memory_order_relaxed);         \
    STRATA_CUDA_CHECK(cudaGetLastError());                                             \
  } while (0)

// Self-attention of a batch of n_tokens at positions pos0.. over one layer's f16 KV cache (rows of
// k_width / v_width halves, position p in row p % n_slots; the batch's own keys and values already
// stored). Head h of a token reads kv head h / (n_head / n_head_kv), positions [first, pos] with
// first = max(0, pos - window + 1) for window > 0, else 0.
struct AttentionArgs {
  const float* q = nullptr;  // [n_tokens x q_stride], head h at h * head_dim_k (roped)
  int64_t q_stride = 0;
  const uint16_t* k_cache = nullptr;
  const uint16_t* v_cache = nullptr;
  int64_t k_width = 0, v_width = 0;
  int64_t n_slots = 0;   // rows of the cache (a sliding-window ring holds fewer than the context)
  float* out = nullptr;  // [n_tokens x out_stride], head h at h * head_dim_v
  int64_t out_stride = 0;
  int n_tokens = 0, n_head = 0, n_head_kv = 0, head_dim_k = 0, head_dim_v = 0;
  int64_t pos0 = 0;
  int window = 0;         // sliding window in positions; 0: the whole context
  float kq_scale = 1.0f;  // scores = scale * q.k
  // A replayable decode graph's position: read from here at run time instead of pos0 (device
  // memory; null: pos0), with the context split among the most blocks the shape takes, so that the
  // launch does not depend on the position.
  const int64_t* pos_dev = nullptr;
  // Where given (decode, head_dim_v a multiple of 32, out_stride n_head * head_dim_v): the output
  // also quantized for the matmul that reads it, int8 [n_tokens x out_stride] with a scale per 32.
  int8_t* out_q = nullptr;
  float* out_qd = nullptr;
  // Where given (zeros, attention_counters_max of them): a split context's blocks count themselves
  // done there and the last combines the partial results, in the same launch; else a second kernel
  // combines them. Each count is back at zero when the launch ends.
  int* split_counters = nullptr;
};

// Types whose rows decode through chunks.h (dp4a matvec on int8 activations).
bool is_chunked(DType type);
// Types read as plain floats (F32, F16, BF16).
bool is_float(DType type);
// Most tokens the matvec kernels take at once; larger batches go through the f16 GEMM.
constexpr int kMaxMatvecTokens = 8;

// x [n_tokens x x_stride] to int8 chunks of 32 with one float scale each: xq [n_tokens x n_cols],
// xd [n_tokens x n_cols / 32] (n_cols a multiple of 32).
void quantize_q8(const float* x, int64_t x_stride, int n_tokens, int64_t n_cols, int8_t* xq, float* xd,
                 cudaStream_t stream);
// Warps the one-token matvec gives each row (1, 2 or 4; anything else: the shape decides), for
// benchmarks (bench/cuda_ops.cu) and STRATA_CUDA_MATVEC_WARPS.
void set_matvec_warps_per_row(int warps);
// y[t, r] = W[r, :] . x[t, :] for n_tokens <= kMaxMatvecTokens: chunked types read xq/xd, float
// types read x.
void matvec(const WeightView& w, const int8_t* xq, const float* xd, const float* x, int64_t x_stride, int n_tokens,
            float* y, int64_t y_stride, cudaStream_t stream);
// out[r] = act(gate[r] . x) * (up[r] . x) for one token (act: GELU as ggml where gelu, else SiLU),
// gate and up chunked of one type and shape, xq/xd as quantize_q8's.
void gate_up(const WeightView& gate, const WeightView& up, const int8_t* xq, const float* xd, int n_tokens, bool gelu,
             float* out, cudaStream_t stream);
// All of w as f16 rows [n_rows x n_cols].
void dequantize_f16(const WeightView& w, __half* out, cudaStream_t stream);
// x [n_tokens x x_stride] floats to f16 [n_tokens x n_cols].
void to_f16(const float* x, int64_t x_stride, int n_tokens, int64_t n_cols, __half* out, cudaStream_t stream);
// out[i] = dequantized row ids[i] of w; an id outside w's rows gives a row of zeros and sets
// *bad_id (device-visible, may be null) to 1 + i if it was 0.
void get_rows(const WeightView& w, const int32_t* ids, int n, float* out, int64_t out_stride, int* bad_id,
              cudaStream_t stream);

// Attention (attention.cu) over the f16 KV cache; the context is split among blocks when the batch
// alone would leave multiprocessors idle, with attention_partials_bytes of scratch for their
// partial results (partials may be null when that is 0, or to forbid splitting).
size_t attention_partials_bytes(const AttentionArgs& a, int n_sm);
// The most attention_partials_bytes can be for this batch and heads at any context length (decode
// reserves it before a graph is captured, since the split grows with the context).
size_t attention_partials_bytes_max(const AttentionArgs& a);
// The counts a.split_counters must hold for this batch and heads.
size_t attention_counters_max(const AttentionArgs& a);
// True where it also quantized the output into a.out_q / a.out_qd.
bool attention(const AttentionArgs& a, float* partials, int n_sm, cudaStream_t stream);
// Prompt attention on the tensor cores (attention_mma.cu) where it applies (at least 16 tokens,
// equal key and value head dims of 64, 128 or 256); false, having done nothing, elsewhere.
bool attention_mma(const AttentionArgs& a, cudaStream_t stream);

// ---- mixture of experts (moe.cu)
// The slots of a batch's routing [n_tokens x k] (n_slots = n_tokens * k) and where each slot's
// expert lives (ExpertWeights' rule, read on the device: chosen and slot_of in device memory).
struct ExpertSlots {
  const int32_t* chosen = nullptr;
  int n_slots = 0, k = 1, n_expert = 0;
  const int32_t* slot_of = nullptr;
  int single = -1;
};
// g[s], u[s] = gate and up rows of slot s's expert against its token's row (xq/xd for chunked
// types, in [n_tokens x n_cols] for float types); slots whose expert is not here are skipped.
void moe_gate_up(const ExpertSlots& x, const WeightView& gate, size_t gate_stride, const WeightView& up,
                 size_t up_stride, const int8_t* xq, const float* xd, const float* in, float* g, float* u,
                 cudaStream_t stream);
// out[s] = weights[s] * down rows of slot s's expert against the slot's own activations row s
// (aq/ad or a [n_slots x n_cols]).
void moe_down(const ExpertSlots& x, const WeightView& down, size_t stride, const int8_t* aq, const float* ad,
              const float* a, const float* weights, float* out, cudaStream_t stream);
// The prompt path: out[i] = the row of the token of slot perm[i] (perm[i] / k); and
// out[perm[i]] = d[i] * weights[perm[i]], for i < count, rows of n.
void moe_gather(const float* x, int64_t n, const int32_t* perm, int k, int count, float* out, cudaStream_t stream);
void moe_scatter(const float* d, int64_t n, const int32_t* perm, const float* weights, int count, float* out,
                 cudaStream_t stream);
void moe_sum(const float* slots, int n_tokens, int k, int64_t n, float* out, cudaStream_t stream);
void add_sigmoid_gated(float* x, const float* y, const float* gate_logit, int n_tokens, int64_t n,
                       cudaStream_t stream);

// ---- the KV cache's types, attention sinks, rope scalings and gpt-oss's ops (gpufeat: kv_quant.cu,
// rope_ext.cu, gptoss_ops.cu)
enum class KvType { f16, q8_0, q4_0 };
// The cache types the kernels read; false for any other.
bool kv_type_of(DType type, KvType& out);
// Rows t of src [n_tokens x width] into the cache's slots (pos0 + t) % n_slots, in the cache's type,
// byte for byte as ops::kv_store writes them (pos_dev: a replayable graph's position, or null).
void store_kv_any(const float* src, int64_t width, int n_tokens, int64_t pos0, const int64_t* pos_dev,
                  const ops::KvLayerView& cache, cudaStream_t stream);
// Attention over a cache of any KvType (keys and values each), with sinks where given: one block
// per (head, token). Fields as AttentionArgs; the cache's rows by bytes.
struct AttentionExtArgs {
  const float* q = nullptr;
  int64_t q_stride = 0;
  const uint8_t* k = nullptr;
  const uint8_t* v = nullptr;
  KvType k_type = KvType::f16, v_type = KvType::f16;
  size_t k_row_bytes = 0, k_head_bytes = 0, v_row_bytes = 0, v_head_bytes = 0;
  int64_t n_slots = 0;
  float* out = nullptr;
  int64_t out_stride = 0;
  int n_tokens = 0, n_head = 0, n_head_kv = 0, head_dim_k = 0, head_dim_v = 0;
  int64_t pos0 = 0;
  const int64_t* pos_dev = nullptr;
  int window = 0;
  float kq_scale = 1.0f;
  const float* sinks = nullptr;  // [n_head] or null
};
void attention_ext(const AttentionExtArgs& a, cudaStream_t stream);
// Whether ops::rope's parameters need rope_ext (YaRN, or a magnitude other than 1).
bool rope_needs_ext(const ops::RopeParams& p);
void rope_ext(float* x, int64_t x_stride, int n_tokens, int n_heads, int head_dim, int64_t pos0,
              const int64_t* pos_dev, const ops::RopeParams& p, cudaStream_t stream);
// gpt-oss: Backend::swiglu_oai and route_top_k_softmax; rows[s] += (weights ? weights[s] : 1) *
// bias[expert of slot s] for rows of n, slots whose expert is not here skipped.
void swiglu_oai(float* gate, const float* up, int64_t n, float alpha, float limit, cudaStream_t stream);
void route_top_k_softmax(const float* logits, int n_tokens, int n_expert, int k, int32_t* chosen, float* weights,
                         cudaStream_t stream);
void add_slot_bias(float* rows, int64_t n, const float* bias, const ExpertSlots& x, const float* weights,
                   cudaStream_t stream);

}  // namespace strata::backend::cuda
