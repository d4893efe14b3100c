// The CPU backend: the seam's ops as calls into today's kernels (src/ops, src/tensor). Memory is
// plain host memory; every op runs to completion before it returns.
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "backend/backend.h"
#include "ops/ops.h"
#include "ops/thread_pool.h"
#include "ops/vec.h"
#include "tensor/kernels.h"
#include "util/error.h"

namespace strata::backend {
namespace {

class CpuBackend final : public Backend {
 public:
  CpuBackend(ThreadPool& pool, ops::MatmulScratch* mm, ops::AttentionScratch* attn)
      : pool_(pool), mm_(mm ? *mm : own_mm_), attn_(attn), own_attn_(attn == nullptr) {
    if (own_attn_) attn_ = &own_attn_scratch_;
  }

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
  void prepare_matmul(DType type, int64_t n_cols, const float* x, int64_t x_stride, int n_tokens) override {
    prepared_ = ops::prepare_input(type, n_cols, x, x_stride, n_tokens, pool_, mm_);
  }
  void matmul_prepared(const WeightView& piece, float* y, int64_t y_stride) override {
    ops::matmul_prepared(piece, prepared_, y, y_stride, pool_);
  }

  void get_rows(const WeightView& w, const int32_t* ids, int n, float* out, int64_t out_stride) override {
    for (int i = 0; i < n; ++i) ops::get_row(w, ids[i], out + size_t(i) * out_stride);
  }

  void rms_norm(const float* x, const float* weight, float* out, int64_t n, int n_rows, float eps) override {
    for (int r = 0; r < n_rows; ++r) ops::rms_norm(x + r * n, weight, out + r * n, n, eps);
  }

  void rope(float* x, int64_t x_stride, int n_tokens, int n_heads, int head_dim, int64_t pos0,
            const ops::RopeParams& params) override {
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

  void store_kv(const ops::KvLayerView& k_cache, const ops::KvLayerView& v_cache, const float* k, const float* v,
                int n_tokens, int64_t pos0, int n_head_kv, int head_dim_k, int head_dim_v) override {
    const int64_t k_dim = int64_t(n_head_kv) * head_dim_k, v_dim = int64_t(n_head_kv) * head_dim_v;
    for (int t = 0; t < n_tokens; ++t) {
      ops::kv_store(k_cache, pos0 + t, k + t * k_dim, n_head_kv, head_dim_k);
      ops::kv_store(v_cache, pos0 + t, v + t * v_dim, n_head_kv, head_dim_v);
    }
  }

  void attention(const ops::AttentionShape& shape, const float* q, int n_tokens, int64_t pos0,
                 const ops::KvLayerView& k_cache, const ops::KvLayerView& v_cache, float* out) override {
    // No session scratch: grown on the first calls to the largest shape, batch and cache seen; for
    // every position the cache holds and (a sliding window's ring holds fewer slots than positions)
    // up to the batch's last position.
    if (own_attn_)
      attn_->reserve(shape, n_tokens, std::max<int64_t>(k_cache.n_slots, pos0 + n_tokens), pool_.n_threads());
    ops::attention(shape, q, n_tokens, pos0, k_cache, v_cache, out, pool_, *attn_);
  }

  void route_top_k(const float* logits, int n_tokens, int n_expert, int k, bool normalize, int32_t* chosen,
                   float* weights) override {
    if (int(probs_.size()) < n_expert) probs_.resize(size_t(n_expert));  // once: the model's expert count
    for (int t = 0; t < n_tokens; ++t) {
      float* probs = probs_.data();
      std::copy(logits + size_t(t) * n_expert, logits + size_t(t + 1) * n_expert, probs);
      ops::softmax(probs, n_expert);
      int32_t* c = chosen + size_t(t) * k;
      float* w = weights + size_t(t) * k;
      top_k(probs, n_expert, k, c);
      for (int j = 0; j < k; ++j) w[j] = probs[c[j]];
      if (normalize) {
        float sum = 0.0f;
        for (int j = 0; j < k; ++j) sum += w[j];
        for (int j = 0; j < k; ++j) w[j] /= sum;
      }
    }
  }

  // ---- mixture of experts
  // Each expert here once over the tokens routed to it (ascending expert ids), gathered into the
  // host scratch: the arithmetic of the CPU's MoE path before the seam, byte for byte.
  void moe_experts(const ExpertWeights& w, const ExpertBatch& b) override {
    const int64_t n_embd = w.gate.n_cols, ff = w.gate.n_rows;
    const ExpertBatch::HostScratch& s = b.host;
    each_expert(w, b, [&](int, const WeightView& gate, const WeightView& up, const WeightView& down, int n_sel) {
      matmul(gate, s.in, n_embd, n_sel, s.gate, ff);
      matmul(up, s.in, n_embd, n_sel, s.up, ff);
      gated_activation(s.gate, s.up, int64_t(n_sel) * ff, b.act);
      matmul(down, s.gate, ff, n_sel, s.down_out, n_embd);
    });
  }

  void moe_sum(const float* slots, int n_tokens, int k, int64_t n, float* out) override {
    for (int t = 0; t < n_tokens; ++t) {
      const float* r = slots + size_t(t) * k * n;
      float* o = out + size_t(t) * n;
      std::copy_n(r, n, o);
      for (int j = 1; j < k; ++j) ops::add(o, r + size_t(j) * n, n);
    }
  }

  void add_sigmoid_gated(float* x, const float* y, const float* gate_logit, int n_tokens, int64_t n) override {
    for (int t = 0; t < n_tokens; ++t) {
      const float scale = 1.0f / (1.0f + std::exp(-gate_logit[t]));
      float* o = x + size_t(t) * n;
      const float* v = y + size_t(t) * n;
      for (int64_t i = 0; i < n; ++i) o[i] += v[i] * scale;
    }
  }

  // ---- gpt-oss's ops: the arithmetic of its CPU path before the seam (arch_gptoss.cpp), byte for byte
  void route_top_k_softmax(const float* logits, int n_tokens, int n_expert, int k, int32_t* chosen,
                           float* weights) override {
    for (int t = 0; t < n_tokens; ++t) {
      int32_t* c = chosen + size_t(t) * k;
      float* w = weights + size_t(t) * k;
      top_k(logits + size_t(t) * n_expert, n_expert, k, c);
      for (int j = 0; j < k; ++j) w[j] = logits[size_t(t) * n_expert + size_t(c[j])];
      ops::softmax(w, k);
    }
  }

  void swiglu_oai(float* gate, const float* up, int64_t n, const SwigluOai& act) override {
    for (int64_t i = 0; i < n; ++i) {
      const float x = std::min(gate[i], act.limit);
      const float y = std::clamp(up[i], -act.limit, act.limit);
      gate[i] = x / (1.0f + std::exp(act.alpha * -x)) * (y + 1.0f);
    }
  }

  // As moe_experts, each expert here once over its tokens, a bias added to each matrix's rows.
  void moe_experts_biased(const ExpertWeights& w, const ExpertBiases& bias, const ExpertBatch& b) override {
    const int64_t n_embd = w.gate.n_cols, ff = w.gate.n_rows;
    const ExpertBatch::HostScratch& s = b.host;
    each_expert(w, b, [&](int e, const WeightView& gate, const WeightView& up, const WeightView& down, int n_sel) {
      matmul(up, s.in, n_embd, n_sel, s.up, ff);
      add_bias(s.up, bias.up + size_t(e) * ff, ff, n_sel);
      matmul(gate, s.in, n_embd, n_sel, s.gate, ff);
      add_bias(s.gate, bias.gate + size_t(e) * ff, ff, n_sel);
      swiglu_oai(s.gate, s.up, int64_t(n_sel) * ff, bias.act);
      matmul(down, s.gate, ff, n_sel, s.down_out, n_embd);
      add_bias(s.down_out, bias.down + size_t(e) * n_embd, n_embd, n_sel);
    });
  }

  // ---- timing the two queues (tier14): the host runs both in order as they come, so a mark is
  // the host's clock when it was made.
  int mark(bool) override {
    const int id = int(next_mark_++ % uint64_t(kMarks));
    marks_[size_t(id)] = std::chrono::steady_clock::now();
    return id;
  }
  double seconds_between(int from, int to) override {
    if (from < 0 || to < 0) return 0.0;
    return std::chrono::duration<double>(marks_[size_t(to)] - marks_[size_t(from)]).count();
  }

 private:
  // The MoE paths' one walk: for each expert here (ascending ids) with tokens routed to it, those
  // tokens' rows gathered into b.host.in, compute(e, gate, up, down, n_sel) leaving its rows in
  // b.host.down_out, each scattered to its slot times the slot's weight.
  template <class Compute>
  void each_expert(const ExpertWeights& w, const ExpertBatch& b, Compute&& compute) {
    const int64_t n_embd = w.gate.n_cols;
    const ExpertBatch::HostScratch& s = b.host;
    for (int e = 0; e < b.n_expert; ++e) {
      const int slot = w.slot(e);
      if (slot < 0) continue;
      int n_sel = 0;
      for (int t = 0; t < b.n_tokens; ++t)
        for (int j = 0; j < b.k; ++j)
          if (b.chosen[size_t(t) * b.k + j] == e) {
            s.slots[n_sel] = t * b.k + j;
            std::copy_n(b.x + size_t(t) * n_embd, n_embd, s.in + size_t(n_sel) * n_embd);
            ++n_sel;
          }
      if (n_sel == 0) continue;
      WeightView gate = w.gate, up = w.up, down = w.down;
      gate.data += size_t(slot) * w.gate_stride;
      up.data += size_t(slot) * w.up_stride;
      down.data += size_t(slot) * w.down_stride;
      compute(e, gate, up, down, n_sel);
      for (int i = 0; i < n_sel; ++i) {
        const int slot_id = s.slots[i];
        const float wt = b.weights[slot_id];
        float* dst = b.out + size_t(slot_id) * n_embd;
        const float* src = s.down_out + size_t(i) * n_embd;
        for (int64_t c = 0; c < n_embd; ++c) dst[c] = src[c] * wt;
      }
    }
  }

  ThreadPool& pool_;
  ops::MatmulScratch own_mm_;
  ops::MatmulScratch& mm_;
  ops::PreparedInput prepared_;
  ops::AttentionScratch* attn_;
  bool own_attn_;
  ops::AttentionScratch own_attn_scratch_;
  std::vector<float> probs_;
  std::array<std::chrono::steady_clock::time_point, kMarks> marks_{};  // mark()'s ring (tier14)
  uint64_t next_mark_ = 0;
};

}  // namespace

void top_k(const float* scores, int n, int k, int32_t* out) {
  for (int j = 0; j < k; ++j) {  // k is small: repeated arg-max
    int best = -1;
    for (int e = 0; e < n; ++e) {
      bool taken = false;
      for (int i = 0; i < j; ++i) taken |= out[i] == e;
      if (!taken && (best < 0 || scores[e] > scores[best])) best = e;
    }
    out[j] = best;
  }
}

std::unique_ptr<Backend> make_cpu_backend(ThreadPool& pool, ops::MatmulScratch* matmul_scratch,
                                          ops::AttentionScratch* attention_scratch) {
  return std::make_unique<CpuBackend>(pool, matmul_scratch, attention_scratch);
}

#if !defined(STRATA_HAVE_CUDA)
bool cuda_built() { return false; }
int cuda_device_count() { return 0; }
bool cuda_memory(int, size_t&, size_t&) { return false; }
bool cuda_supports(DType) { return false; }
std::unique_ptr<Backend> make_cuda_backend(int) {
  throw Error("this build of Strata has no CUDA backend (configure with -DSTRATA_CUDA=ON where nvcc is installed)");
}
uint64_t cuda_free_memory(int) { return 0; }
#endif

}  // namespace strata::backend
