// The CPU backend: the seam's ops as calls into today's kernels (src/ops, src/tensor). Memory is
// plain host memory; every op runs to completion before it returns.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "backend/backend.h"
#include "ops/ops.h"
#include "ops/thread_pool.h"
#include "ops/vec.h"
#include "tensor/fp16.h"
#include "tensor/kernels.h"
#include "util/error.h"

namespace strata::backend {
namespace {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(ThreadPool& pool)
      : pool_(pool),
        q16_(size_t(pool.n_threads())),
        scores_(size_t(pool.n_threads())),
        acc_(size_t(pool.n_threads())) {}

  DeviceKind kind() const override { return DeviceKind::cpu; }
  std::string name() const override {
    return std::string("cpu (") + kernels::isa_name(kernels::active_isa()) + ", " + std::to_string(pool_.n_threads()) +
           " threads)";
  }

  void* alloc(size_t bytes) override {
    void* p = std::aligned_alloc(64, (std::max<size_t>(bytes, 1) + 63) / 64 * 64);
    if (!p) throw Error("cpu backend: cannot allocate " + std::to_string(bytes) + " bytes");
    return p;
  }
  void free(void* p) override { std::free(p); }
  void upload(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void download(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void copy(void* dst, const void* src, size_t bytes) override { std::memmove(dst, src, bytes); }
  void synchronize() override {}

  void matmul(const WeightView& w, const float* x, int64_t x_stride, int n_tokens, float* y,
              int64_t y_stride) override {
    ops::matmul(w, x, x_stride, n_tokens, y, y_stride, pool_, mm_);
  }

  void get_rows(const WeightView& w, const int32_t* ids, int n, float* out, int64_t out_stride) override {
    for (int i = 0; i < n; ++i) ops::get_row(w, ids[i], out + size_t(i) * out_stride);
  }

  void rms_norm(const float* x, const float* weight, float* out, int64_t n, int n_rows, float eps) override {
    for (int r = 0; r < n_rows; ++r) ops::rms_norm(x + r * n, weight, out + r * n, n, eps);
  }

  void rope(float* x, int64_t x_stride, int n_tokens, int n_heads, int head_dim, int n_rot, int64_t pos0,
            float freq_base, float freq_scale, ops::RopeKind kind, const float* freq_factors) override {
    // The backend seam carries linear scaling only so far; YaRN goes through ops::RopeParams once
    // the forward pass calls the backend.
    ops::RopeParams params;
    params.n_rot = n_rot;
    params.kind = kind;
    params.freq_base = freq_base;
    params.freq_scale = freq_scale;
    params.freq_factors = freq_factors;
    for (int t = 0; t < n_tokens; ++t) ops::rope(x + t * x_stride, n_heads, head_dim, pos0 + t, params);
  }

  void softmax(float* x, int64_t n, int n_rows) override {
    for (int r = 0; r < n_rows; ++r) ops::softmax(x + r * n, n);
  }

  void gated_activation(float* gate, const float* up, int64_t n, GatedActivation act) override {
    if (act == GatedActivation::silu)
      ops::silu_mul(gate, up, n);
    else
      ops::gelu_tanh_mul(gate, up, n);
  }
  void add(float* x, const float* y, int64_t n) override { ops::add(x, y, n); }
  void scale(float* x, float s, int64_t n) override { ops::scale(x, s, n); }

  void store_kv(const float* k, const float* v, int n_tokens, uint16_t* k_cache, uint16_t* v_cache, int64_t k_width,
                int64_t v_width, int64_t pos0) override {
    for (int t = 0; t < n_tokens; ++t) {
      uint16_t* kr = k_cache + (pos0 + t) * k_width;
      uint16_t* vr = v_cache + (pos0 + t) * v_width;
      for (int64_t i = 0; i < k_width; ++i) kr[i] = f32_to_fp16(k[t * k_width + i]);
      for (int64_t i = 0; i < v_width; ++i) vr[i] = f32_to_fp16(v[t * v_width + i]);
    }
  }

  // One (token, head) pair at a time: scores over the visible positions, softmax, weighted V. As in
  // llama.cpp's default CPU path, q and the probabilities are rounded to f16 before their dots.
  void attention(const AttentionArgs& a) override {
    const kernels::TypeKernels& f16 = kernels::kernels_for(DType::F16);
    const int group = a.n_head / a.n_head_kv;
    const int64_t n_ctx = a.pos0 + a.n_tokens;
    for (size_t i = 0; i < q16_.size(); ++i) {  // grows to the longest context once
      if (int64_t(scores_[i].size()) < n_ctx) scores_[i].resize(size_t(n_ctx));
      if (int(q16_[i].size()) < a.head_dim_k) q16_[i].resize(size_t(a.head_dim_k));
      if (int(acc_[i].size()) < a.head_dim_v) acc_[i].resize(size_t(a.head_dim_v));
    }
    pool_.parallel_for(int64_t(a.n_tokens) * a.n_head, [&](int64_t i0, int64_t i1, int thread) {
      uint16_t* q16 = q16_[size_t(thread)].data();
      float* scores = scores_[size_t(thread)].data();
      float* acc = acc_[size_t(thread)].data();
      for (int64_t i = i0; i < i1; ++i) {
        const int t = int(i / a.n_head);
        const int head = int(i % a.n_head);
        const int kv_head = head / group;
        const int64_t pos = a.pos0 + t;
        const int64_t first = a.window > 0 ? std::max<int64_t>(0, pos - a.window + 1) : 0;
        const float* q = a.q + t * a.q_stride + int64_t(head) * a.head_dim_k;
        for (int d = 0; d < a.head_dim_k; ++d) q16[d] = f32_to_fp16(q[d]);
        const int64_t n_seen = pos - first + 1;
        for (int64_t j = 0; j < n_seen; ++j) {
          const uint16_t* kr = a.k_cache + (first + j) * a.k_width + int64_t(kv_head) * a.head_dim_k;
          scores[j] = f16.vec_dot(a.head_dim_k, kr, q16) * a.kq_scale;
        }
        ops::softmax(scores, n_seen);
        std::fill(acc, acc + a.head_dim_v, 0.0f);
        for (int64_t j = 0; j < n_seen; ++j) {
          const float w = fp16_to_f32(f32_to_fp16(scores[j]));
          const uint16_t* vr = a.v_cache + (first + j) * a.v_width + int64_t(kv_head) * a.head_dim_v;
          ops::axpy_f16(acc, w, vr, a.head_dim_v);
        }
        std::copy(acc, acc + a.head_dim_v, a.out + t * a.out_stride + int64_t(head) * a.head_dim_v);
      }
    });
  }

  void route_top_k(const float* logits, int n_tokens, int n_expert, int k, bool normalize, int32_t* chosen,
                   float* weights) override {
    if (int(probs_.size()) < n_expert) probs_.resize(size_t(n_expert));
    for (int t = 0; t < n_tokens; ++t) {
      float* probs = probs_.data();
      std::copy(logits + size_t(t) * n_expert, logits + size_t(t + 1) * n_expert, probs);
      ops::softmax(probs, n_expert);
      int32_t* c = chosen + size_t(t) * k;
      float* w = weights + size_t(t) * k;
      for (int j = 0; j < k; ++j) {  // k is small: repeated arg-max, ties to the lower index
        int best = -1;
        for (int e = 0; e < n_expert; ++e) {
          bool taken = false;
          for (int i = 0; i < j; ++i) taken |= c[i] == e;
          if (!taken && (best < 0 || probs[e] > probs[best])) best = e;
        }
        c[j] = best;
        w[j] = probs[best];
      }
      if (normalize) {
        float sum = 0.0f;
        for (int j = 0; j < k; ++j) sum += w[j];
        for (int j = 0; j < k; ++j) w[j] /= sum;
      }
    }
  }

 private:
  ThreadPool& pool_;
  ops::MatmulScratch mm_;
  std::vector<std::vector<uint16_t>> q16_;
  std::vector<std::vector<float>> scores_, acc_;
  std::vector<float> probs_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(ThreadPool& pool) { return std::make_unique<CpuBackend>(pool); }

#if !defined(STRATA_HAVE_CUDA)
bool cuda_built() { return false; }
int cuda_device_count() { return 0; }
std::unique_ptr<Backend> make_cuda_backend(int) {
  throw Error("this build of Strata has no CUDA backend (configure with -DSTRATA_CUDA=ON where nvcc is installed)");
}
uint64_t cuda_free_memory(int) { return 0; }
#endif

}  // namespace strata::backend
