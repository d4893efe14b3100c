#pragma once
// The device seam of compute: every op the forward pass runs, behind one interface that the CPU
// (today's kernels in src/ops and src/tensor) and CUDA (src/backend/cuda) implement. No CUDA type
// appears here: a CUDA build only adds an implementation behind make_cuda_backend.
//
// Pointers passed to a backend's ops live in that backend's memory (alloc/upload/download move
// bytes in and out); WeightView::data too. Layout is the forward pass's: activations row-major
// [n_tokens x width] with a row stride in floats, weights as WeightView (GGUF ne[0] contiguous).
// Ops of one backend run in order; only download (and synchronize) wait for them.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "ops/ops.h"
#include "ops/weight.h"

namespace strata {
class ThreadPool;
}

namespace strata::backend {

enum class DeviceKind { cpu, cuda };
enum class GatedActivation { silu, gelu_tanh };  // gate = act(gate) * up

// Self-attention of a batch of n_tokens at positions pos0.. over one layer's f16 KV cache (rows of
// k_width / v_width halves, row p holding position p; the batch's own keys and values already stored
// with store_kv). Head h of a token reads kv head h / (n_head / n_head_kv), positions
// [first, pos] with first = max(0, pos - window + 1) for window > 0, else 0.
struct AttentionArgs {
  const float* q = nullptr;  // [n_tokens x q_stride], head h at h * head_dim_k (roped)
  int64_t q_stride = 0;
  const uint16_t* k_cache = nullptr;
  const uint16_t* v_cache = nullptr;
  int64_t k_width = 0, v_width = 0;
  float* out = nullptr;  // [n_tokens x out_stride], head h at h * head_dim_v
  int64_t out_stride = 0;
  int n_tokens = 0, n_head = 0, n_head_kv = 0, head_dim_k = 0, head_dim_v = 0;
  int64_t pos0 = 0;
  int window = 0;         // sliding window in positions; 0: the whole context
  float kq_scale = 1.0f;  // scores = scale * q.k
};

// Bounds of what the CUDA kernels handle (head dims of every supported architecture, experts of
// the MoE models); checked on entry with an error naming the value.
constexpr int kMaxHeadDim = 256;
constexpr int kMaxExperts = 256;
constexpr int kMaxExpertsUsed = 32;

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
  // out[i] = dequantized row ids[i] of w, i < n (ids in this device's memory).
  virtual void get_rows(const WeightView& w, const int32_t* ids, int n, float* out, int64_t out_stride) = 0;
  // Per row of n floats: out = x / rms(x) * weight (weight may be null); rows contiguous.
  virtual void rms_norm(const float* x, const float* weight, float* out, int64_t n, int n_rows, float eps) = 0;
  // Rotates n_heads heads of head_dim floats of token t (row t, stride x_stride) at position pos0 + t.
  virtual void rope(float* x, int64_t x_stride, int n_tokens, int n_heads, int head_dim, int n_rot, int64_t pos0,
                    float freq_base, float freq_scale, ops::RopeKind kind, const float* freq_factors) = 0;
  virtual void softmax(float* x, int64_t n, int n_rows) = 0;  // in place, per row of n
  virtual void gated_activation(float* gate, const float* up, int64_t n, GatedActivation act) = 0;
  virtual void add(float* x, const float* y, int64_t n) = 0;  // x += y
  virtual void scale(float* x, float s, int64_t n) = 0;
  // k, v: [n_tokens x k_width] / [n_tokens x v_width] floats into cache rows pos0.. as f16.
  virtual void store_kv(const float* k, const float* v, int n_tokens, uint16_t* k_cache, uint16_t* v_cache,
                        int64_t k_width, int64_t v_width, int64_t pos0) = 0;
  virtual void attention(const AttentionArgs& a) = 0;
  // MoE routing per token: softmax over n_expert logits, the k most probable experts (best first,
  // ties to the lower index) and their probabilities, renormalized to sum 1 if normalize.
  virtual void route_top_k(const float* logits, int n_tokens, int n_expert, int k, bool normalize, int32_t* chosen,
                           float* weights) = 0;
};

// Today's CPU kernels (src/ops, src/tensor) on a thread pool the caller owns.
std::unique_ptr<Backend> make_cpu_backend(ThreadPool& pool);

// Whether this build has the CUDA backend, and how many devices the driver shows (0 without
// either; never throws).
bool cuda_built();
int cuda_device_count();
// The CUDA backend on device `device`; throws strata::Error when the build has none or the device
// cannot be used (the message says which).
std::unique_ptr<Backend> make_cuda_backend(int device = 0);
// Bytes free on CUDA device `device` now (the planner's default VRAM budget); 0 without CUDA or
// without that device (never throws).
uint64_t cuda_free_memory(int device);

}  // namespace strata::backend
