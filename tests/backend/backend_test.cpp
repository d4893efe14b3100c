// The device seam: the CPU backend against plain references, and every op of the CUDA backend,
// for every tensor type, against the CPU backend within stated tolerances. CUDA tests skip where
// the build has no CUDA backend or the machine no GPU; STRATA_REQUIRE_GPU=1 (make test-gpu) turns
// such a skip into a failure.
//
// Tolerances (err = max |a - b| / max |b| over the output):
// - matmul, quantized weights: both sides quantize activations to int8 (the GPU per 32 elements,
//   the CPU as ggml: Q8_0/Q8_1 per 32, Q8_K per 256), so the GPU must be within 2e-2 of the CPU,
//   and no farther from the exact product (dequantized weights x float activations, in double)
//   than 1.5x the CPU's distance plus 3e-3 (f16 rounding of both operands on the GEMM path);
// - matmul through the f16 GEMM (more than 8 tokens) and float weights: 2e-2 and the same rule;
// - get_rows, rms_norm, rope, softmax, activations, routing weights: 1e-5 (GELU 2e-3: f16 results);
// - attention: 2e-3 (both round q to f16 and keep f16 K/V; the CPU also rounds probabilities).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "ops/thread_pool.h"
#include "tensor/fp16.h"
#include "util/error.h"
#include "tensor/kernels.h"

namespace strata::backend {
namespace {

float rel_err(const std::vector<float>& got, const std::vector<float>& want) {
  float max_diff = 0.0f, max_ref = 0.0f;
  for (size_t i = 0; i < want.size(); ++i) {
    max_diff = std::max(max_diff, std::fabs(got[i] - want[i]));
    max_ref = std::max(max_ref, std::fabs(want[i]));
  }
  return max_ref > 0.0f ? max_diff / max_ref : max_diff;
}

std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f, float offset = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng) * scale + offset;
  return v;
}

// An f16 cache of n_slots rows of n_heads * head_dim values, as the KV cache lays it out.
ops::KvLayerView kv_view(uint16_t* data, int n_heads, int head_dim, int64_t n_slots) {
  return {reinterpret_cast<uint8_t*>(data), DType::F16, size_t(n_heads) * head_dim * 2, size_t(head_dim) * 2, n_slots};
}

ops::RopeParams rope_params(int n_rot, ops::RopeKind kind, float base, float scale, const float* factors) {
  ops::RopeParams p;
  p.n_rot = n_rot;
  p.kind = kind;
  p.freq_base = base;
  p.freq_scale = scale;
  p.freq_factors = factors;
  return p;
}

// ---- the CPU backend against references written out here

TEST(CpuBackend, AttentionMatchesDoubleReference) {
  ThreadPool pool(2);
  auto cpu = make_cpu_backend(pool);
  constexpr int kHead = 4, kHeadKv = 2, kDim = 64, kTokens = 9, kPos0 = 20, kWindow = 12;
  const int64_t kv_width = kHeadKv * kDim, n_ctx = kPos0 + kTokens;
  std::vector<uint16_t> k_cache(size_t(n_ctx * kv_width)), v_cache(size_t(n_ctx * kv_width));
  const std::vector<float> kv = random_floats(size_t(n_ctx * kv_width * 2), 1);
  for (size_t i = 0; i < k_cache.size(); ++i) {
    k_cache[i] = f32_to_fp16(kv[i]);
    v_cache[i] = f32_to_fp16(kv[k_cache.size() + i]);
  }
  const std::vector<float> q = random_floats(size_t(kTokens * kHead * kDim), 2);
  for (int window : {0, kWindow}) {
    std::vector<float> out(size_t(kTokens * kHead * kDim));
    const ops::AttentionShape shape{kHead, kHeadKv, kDim, kDim, 0.125f, window};
    cpu->attention(shape, q.data(), kTokens, kPos0, kv_view(k_cache.data(), kHeadKv, kDim, n_ctx),
                   kv_view(v_cache.data(), kHeadKv, kDim, n_ctx), out.data());
    std::vector<float> want(out.size());
    for (int t = 0; t < kTokens; ++t)
      for (int h = 0; h < kHead; ++h) {
        const int kvh = h / (kHead / kHeadKv);
        const int64_t pos = kPos0 + t, first = window ? std::max<int64_t>(0, pos - window + 1) : 0;
        std::vector<double> s;
        double mx = -1e300;
        for (int64_t j = first; j <= pos; ++j) {
          double dot = 0;
          for (int d = 0; d < kDim; ++d)
            dot += double(q[size_t((t * kHead + h) * kDim + d)]) *
                   fp16_to_f32(k_cache[size_t(j * kv_width + kvh * kDim + d)]);
          s.push_back(dot * 0.125);
          mx = std::max(mx, s.back());
        }
        double sum = 0;
        for (double& x : s) sum += (x = std::exp(x - mx));
        for (int d = 0; d < kDim; ++d) {
          double o = 0;
          for (int64_t j = first; j <= pos; ++j)
            o += s[size_t(j - first)] / sum * fp16_to_f32(v_cache[size_t(j * kv_width + kvh * kDim + d)]);
          want[size_t((t * kHead + h) * kDim + d)] = float(o);
        }
      }
    EXPECT_LT(rel_err(out, want), 2e-3f) << "window " << window;
  }
}

TEST(CpuBackend, RouteTopKPicksBestFirstTiesToLowerIndex) {
  ThreadPool pool(1);
  auto cpu = make_cpu_backend(pool);
  const std::vector<float> logits = {0.0f, 2.0f, 1.0f, 2.0f, -1.0f, 0.5f};  // two tokens of 3 experts
  std::vector<int32_t> chosen(4);
  std::vector<float> w(4);
  cpu->route_top_k(logits.data(), 2, 3, 2, true, chosen.data(), w.data());
  EXPECT_EQ(chosen, (std::vector<int32_t>{1, 2, 0, 2}));
  const double e0 = std::exp(2.0), e1 = std::exp(1.0);
  EXPECT_NEAR(w[0], e0 / (e0 + e1), 1e-6);
  EXPECT_NEAR(w[1], e1 / (e0 + e1), 1e-6);
  EXPECT_NEAR(w[2] + w[3], 1.0f, 1e-6);
}

// A sliding window's ring holds fewer slots than positions: the backend's own attention scratch
// must still cover the batch's positions (it keeps a row's scores over the context), and the
// result equal that of a cache holding every position.
TEST(CpuBackend, AttentionOnARingPastItsSlotsMatchesAFullCache) {
  ThreadPool pool(2);
  auto cpu = make_cpu_backend(pool);
  constexpr int kHead = 4, kHeadKv = 2, kDim = 64, kWindow = 16, kBatch = 8, kBatches = 5;
  const int64_t kv_width = int64_t(kHeadKv) * kDim, q_width = int64_t(kHead) * kDim;
  const ops::AttentionShape shape{kHead, kHeadKv, kDim, kDim, 0.125f, kWindow};
  const int64_t ring_slots = kWindow + kBatch, full_slots = int64_t(kBatch) * kBatches;
  std::vector<uint16_t> k_ring(size_t(ring_slots * kv_width)), v_ring(k_ring.size());
  std::vector<uint16_t> k_full(size_t(full_slots * kv_width)), v_full(k_full.size());
  const ops::KvLayerView kr = kv_view(k_ring.data(), kHeadKv, kDim, ring_slots), vr = kv_view(v_ring.data(), kHeadKv, kDim, ring_slots);
  const ops::KvLayerView kf = kv_view(k_full.data(), kHeadKv, kDim, full_slots), vf = kv_view(v_full.data(), kHeadKv, kDim, full_slots);
  for (int b = 0; b < kBatches; ++b) {
    const int64_t pos = int64_t(b) * kBatch;
    const std::vector<float> q = random_floats(size_t(kBatch * q_width), uint32_t(b + 30));
    const std::vector<float> k = random_floats(size_t(kBatch * kv_width), uint32_t(b + 31));
    const std::vector<float> v = random_floats(size_t(kBatch * kv_width), uint32_t(b + 32));
    std::vector<float> ring(size_t(kBatch * q_width)), full(ring.size());
    cpu->store_kv(kr, vr, k.data(), v.data(), kBatch, pos, kHeadKv, kDim, kDim);
    cpu->store_kv(kf, vf, k.data(), v.data(), kBatch, pos, kHeadKv, kDim, kDim);
    cpu->attention(shape, q.data(), kBatch, pos, kr, vr, ring.data());
    cpu->attention(shape, q.data(), kBatch, pos, kf, vf, full.data());
    EXPECT_EQ(ring, full) << "batch at " << pos;
  }
}

// ---- the CUDA backend against the CPU backend

bool gpu_required() {
  const char* v = std::getenv("STRATA_REQUIRE_GPU");
  return v && std::strcmp(v, "1") == 0;
}

class Cuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_built() || cuda_device_count() == 0) {
      const std::string why = !cuda_built() ? "this build has no CUDA backend (configure with -DSTRATA_CUDA=ON)"
                                            : "no CUDA device on this machine (run make test-gpu on a GPU machine)";
      if (gpu_required()) FAIL() << "STRATA_REQUIRE_GPU=1 but " << why;
      GTEST_SKIP() << why;
    }
    gpu_ = make_cuda_backend(0);
    cpu_ = make_cpu_backend(pool_);
  }
  void TearDown() override {
    for (void* p : owned_) gpu_->free(p);
  }

  template <typename T>
  T* to_gpu(const std::vector<T>& host) {
    void* p = gpu_->alloc(host.size() * sizeof(T));
    owned_.push_back(p);
    gpu_->upload(p, host.data(), host.size() * sizeof(T));
    return static_cast<T*>(p);
  }
  template <typename T>
  std::vector<T> from_gpu(const T* p, size_t n) {
    std::vector<T> host(n);
    gpu_->download(host.data(), p, n * sizeof(T));
    return host;
  }

  ThreadPool pool_{4};
  std::unique_ptr<Backend> cpu_, gpu_;
  std::vector<void*> owned_;
};

class CudaMatmul : public Cuda, public ::testing::WithParamInterface<DType> {};

TEST_P(CudaMatmul, MatchesCpu) {
  const DType type = GetParam();
  constexpr int64_t kCols = 768, kRows = 67;  // 3 super-blocks; an odd number of rows
  const kernels::TypeKernels& k = kernels::kernels_for(type);
  const size_t rb = row_bytes(type, kCols);
  std::vector<uint8_t> wq(rb * kRows);
  const std::vector<float> wf = random_floats(size_t(kCols * kRows), 3, 0.5f, 0.05f);
  for (int64_t r = 0; r < kRows; ++r) k.quantize(wf.data() + r * kCols, wq.data() + r * rb, kCols);
  std::vector<float> deq(wf.size());
  for (int64_t r = 0; r < kRows; ++r)
    kernels::kernels_for(type).dequantize(wq.data() + r * rb, deq.data() + r * kCols, kCols);
  WeightView w{type, wq.data(), kCols, kRows, rb};
  WeightView wg = w;
  wg.data = to_gpu(wq);
  for (int n_tokens : {1, 2, 3, 5, 8, 9, 40}) {
    const int64_t x_stride = kCols + 16, y_stride = kRows + 5;  // strides wider than the rows
    const std::vector<float> x = random_floats(size_t(n_tokens * x_stride), 4 + n_tokens);
    std::vector<float> y_cpu(size_t(n_tokens * y_stride), 0.0f);
    cpu_->matmul(w, x.data(), x_stride, n_tokens, y_cpu.data(), y_stride);
    float* yg = to_gpu(std::vector<float>(y_cpu.size(), 0.0f));
    gpu_->matmul(wg, to_gpu(x), x_stride, n_tokens, yg, y_stride);
    const std::vector<float> y_gpu = from_gpu(yg, y_cpu.size());
    std::vector<float> exact(y_cpu.size(), 0.0f);
    for (int t = 0; t < n_tokens; ++t)
      for (int64_t r = 0; r < kRows; ++r) {
        double s = 0;
        for (int64_t c = 0; c < kCols; ++c) s += double(deq[size_t(r * kCols + c)]) * x[size_t(t * x_stride + c)];
        exact[size_t(t * y_stride + r)] = float(s);
      }
    const float gpu_cpu = rel_err(y_gpu, y_cpu), gpu_exact = rel_err(y_gpu, exact), cpu_exact = rel_err(y_cpu, exact);
    std::printf("  %-5s n_tokens %2d: |gpu-cpu| %.2e  |gpu-exact| %.2e  |cpu-exact| %.2e\n", type_name(type), n_tokens,
                gpu_cpu, gpu_exact, cpu_exact);
    EXPECT_LT(gpu_cpu, 2e-2f) << type_name(type) << " n_tokens " << n_tokens;
    EXPECT_LT(gpu_exact, 1.5f * cpu_exact + 3e-3f) << type_name(type) << " n_tokens " << n_tokens;
  }
}

TEST_P(CudaMatmul, GetRowsMatchesCpu) {
  const DType type = GetParam();
  constexpr int64_t kCols = 512, kRows = 10;
  const kernels::TypeKernels& k = kernels::kernels_for(type);
  const size_t rb = row_bytes(type, kCols);
  std::vector<uint8_t> wq(rb * kRows);
  const std::vector<float> wf = random_floats(size_t(kCols * kRows), 5);
  for (int64_t r = 0; r < kRows; ++r) k.quantize(wf.data() + r * kCols, wq.data() + r * rb, kCols);
  const std::vector<int32_t> ids = {7, 0, 9, 7, 3};
  WeightView w{type, wq.data(), kCols, kRows, rb};
  std::vector<float> want(ids.size() * kCols);
  cpu_->get_rows(w, ids.data(), int(ids.size()), want.data(), kCols);
  WeightView wg = w;
  wg.data = to_gpu(wq);
  float* out = to_gpu(std::vector<float>(want.size()));
  gpu_->get_rows(wg, to_gpu(ids), int(ids.size()), out, kCols);
  EXPECT_LT(rel_err(from_gpu(out, want.size()), want), 1e-5f) << type_name(type);
}

// An id outside the tensor (the forward pass checks token ids, but get_rows is a general op) reads
// nothing outside the weights: the row comes out zero and the next wait throws, naming the op.
TEST_P(CudaMatmul, GetRowsRejectsIdsOutsideTheTensor) {
  const DType type = GetParam();
  constexpr int64_t kCols = 256, kRows = 4;
  const size_t rb = row_bytes(type, kCols);
  std::vector<uint8_t> wq(rb * kRows);
  const std::vector<float> wf = random_floats(size_t(kCols * kRows), 6);
  for (int64_t r = 0; r < kRows; ++r) kernels::kernels_for(type).quantize(wf.data() + r * kCols, wq.data() + r * rb, kCols);
  WeightView wg{type, nullptr, kCols, kRows, rb};
  wg.data = to_gpu(wq);
  float* out = to_gpu(std::vector<float>(3 * kCols, 1.0f));
  gpu_->get_rows(wg, to_gpu(std::vector<int32_t>{1, int32_t(kRows), -1}), 3, out, kCols);
  std::vector<float> host(3 * kCols);
  try {
    gpu_->download(host.data(), out, host.size() * sizeof(float));
    ADD_FAILURE() << type_name(type) << ": no error for ids outside the tensor";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("get_rows"), std::string::npos) << e.what();
  }
  host = from_gpu(out, host.size());  // the error was reported once; the backend works on
  for (int64_t c = 0; c < 2 * kCols; ++c) EXPECT_EQ(host[size_t(kCols + c)], 0.0f) << type_name(type) << " " << c;
  gpu_->get_rows(wg, to_gpu(std::vector<int32_t>{3}), 1, out, kCols);
  gpu_->synchronize();
}

// The one-token matvec with 2 and 4 warps a row (STRATA_CUDA_MATVEC_WARPS, read by a backend as it
// starts): within the CPU's tolerance, and a sum in another order of the one-warp result.
TEST_P(CudaMatmul, OneTokenWithSeveralWarpsPerRowMatchesCpu) {
  const DType type = GetParam();
  constexpr int64_t kCols = 1024, kRows = 37;
  const size_t rb = row_bytes(type, kCols);
  std::vector<uint8_t> wq(rb * kRows);
  const std::vector<float> wf = random_floats(size_t(kCols * kRows), 7, 0.5f, 0.05f);
  for (int64_t r = 0; r < kRows; ++r) kernels::kernels_for(type).quantize(wf.data() + r * kCols, wq.data() + r * rb, kCols);
  const WeightView w{type, wq.data(), kCols, kRows, rb};
  const std::vector<float> x = random_floats(size_t(kCols), 8);
  std::vector<float> y_cpu(size_t(kRows), 0.0f);
  cpu_->matmul(w, x.data(), kCols, 1, y_cpu.data(), kRows);
  std::vector<float> one;
  for (const char* warps : {"1", "2", "4"}) {
    setenv("STRATA_CUDA_MATVEC_WARPS", warps, 1);
    std::unique_ptr<Backend> gpu = make_cuda_backend(0);
    unsetenv("STRATA_CUDA_MATVEC_WARPS");
    void* wd = gpu->alloc(wq.size());
    void* xd = gpu->alloc(x.size() * 4);
    void* yd = gpu->alloc(y_cpu.size() * 4);
    gpu->upload(wd, wq.data(), wq.size());
    gpu->upload(xd, x.data(), x.size() * 4);
    WeightView wg = w;
    wg.data = static_cast<const uint8_t*>(wd);
    gpu->matmul(wg, static_cast<const float*>(xd), kCols, 1, static_cast<float*>(yd), kRows);
    std::vector<float> y(y_cpu.size());
    gpu->download(y.data(), yd, y.size() * 4);
    gpu->free(wd), gpu->free(xd), gpu->free(yd);
    EXPECT_LT(rel_err(y, y_cpu), 2e-2f) << type_name(type) << ", " << warps << " warps a row";
    if (one.empty()) one = y;
    else EXPECT_LT(rel_err(y, one), 1e-5f) << type_name(type) << ", " << warps << " warps a row against one";
  }
  setenv("STRATA_CUDA_MATVEC_WARPS", "0", 1);  // the process-wide choice back to the default
  make_cuda_backend(0);
  unsetenv("STRATA_CUDA_MATVEC_WARPS");
}

INSTANTIATE_TEST_SUITE_P(AllTypes, CudaMatmul,
                         ::testing::Values(DType::F32, DType::F16, DType::BF16, DType::Q4_0, DType::Q4_1, DType::Q5_0,
                                           DType::Q5_1, DType::Q8_0, DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K,
                                           DType::Q6_K),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(type_name(info.param));
                         });

TEST_F(Cuda, AddBiasToEveryRowMatchesCpu) {
  constexpr int64_t kN = 300;
  constexpr int kRows = 7;
  const std::vector<float> x = random_floats(size_t(kN * kRows), 8), bias = random_floats(size_t(kN), 9);
  std::vector<float> want = x;
  cpu_->add_bias(want.data(), bias.data(), kN, kRows);
  for (int t = 0; t < kRows; ++t)
    for (int64_t i = 0; i < kN; ++i) ASSERT_EQ(want[size_t(t * kN + i)], x[size_t(t * kN + i)] + bias[size_t(i)]);
  float* xg = to_gpu(x);
  gpu_->add_bias(xg, to_gpu(bias), kN, kRows);
  EXPECT_EQ(from_gpu(xg, x.size()), want);
}

TEST_F(Cuda, RowOpsMatchCpu) {
  constexpr int kRows = 5;
  constexpr int64_t kN = 1000;
  const std::vector<float> x = random_floats(size_t(kRows * kN), 6, 3.0f);
  const std::vector<float> weight = random_floats(size_t(kN), 7);
  {
    std::vector<float> want(x.size());
    cpu_->rms_norm(x.data(), weight.data(), want.data(), kN, kRows, 1e-6f);
    float* out = to_gpu(std::vector<float>(x.size()));
    gpu_->rms_norm(to_gpu(x), to_gpu(weight), out, kN, kRows, 1e-6f);
    EXPECT_LT(rel_err(from_gpu(out, x.size()), want), 1e-5f) << "rms_norm";
  }
  {
    std::vector<float> want = x;
    cpu_->softmax(want.data(), kN, kRows);
    float* g = to_gpu(x);
    gpu_->softmax(g, kN, kRows);
    EXPECT_LT(rel_err(from_gpu(g, x.size()), want), 1e-5f) << "softmax";
  }
  const std::vector<float> up = random_floats(x.size(), 8);
  for (GatedActivation act : {GatedActivation::silu, GatedActivation::gelu_tanh}) {
    std::vector<float> want = x;
    cpu_->gated_activation(want.data(), up.data(), int64_t(x.size()), act);
    float* g = to_gpu(x);
    gpu_->gated_activation(g, to_gpu(up), int64_t(x.size()), act);
    EXPECT_LT(rel_err(from_gpu(g, x.size()), want), act == GatedActivation::silu ? 1e-5f : 2e-3f)
        << (act == GatedActivation::silu ? "silu" : "gelu");
  }
  {
    std::vector<float> want = x;
    cpu_->add(want.data(), up.data(), int64_t(x.size()));
    cpu_->scale(want.data(), 0.37f, int64_t(x.size()));
    float* g = to_gpu(x);
    gpu_->add(g, to_gpu(up), int64_t(x.size()));
    gpu_->scale(g, 0.37f, int64_t(x.size()));
    EXPECT_EQ(from_gpu(g, x.size()), want) << "add, scale";
  }
}

TEST_F(Cuda, RopeMatchesCpu) {
  constexpr int kTokens = 6, kHeads = 3, kDim = 128;
  constexpr int64_t kStride = kHeads * kDim + 8;
  const std::vector<float> x = random_floats(size_t(kTokens * kStride), 9);
  std::vector<float> factors(kDim / 4);  // for n_rot = kDim / 2
  for (size_t i = 0; i < factors.size(); ++i) factors[i] = 1.0f + float(i) * 0.25f;
  for (ops::RopeKind kind : {ops::RopeKind::normal, ops::RopeKind::neox})
    for (int n_rot : {kDim, kDim / 2}) {
      const float* ff = n_rot == kDim / 2 ? factors.data() : nullptr;
      std::vector<float> want = x;
      cpu_->rope(want.data(), kStride, kTokens, kHeads, kDim, 1000, rope_params(n_rot, kind, 10000.0f, 0.5f, ff));
      float* g = to_gpu(x);
      gpu_->rope(g, kStride, kTokens, kHeads, kDim, 1000,
                 rope_params(n_rot, kind, 10000.0f, 0.5f, ff ? to_gpu(factors) : nullptr));
      EXPECT_LT(rel_err(from_gpu(g, x.size()), want), 1e-5f)
          << (kind == ops::RopeKind::neox ? "neox" : "normal") << " n_rot " << n_rot;
    }
}

TEST_F(Cuda, RouteTopKMatchesCpu) {
  for (int n_expert : {8, 60, 128, 256})
    for (int k : {1, 2, 8}) {
      constexpr int kTokens = 13;
      std::vector<float> logits = random_floats(size_t(kTokens * n_expert), uint32_t(n_expert + k));
      logits[3] = logits[5];  // a tie
      std::vector<int32_t> chosen(size_t(kTokens * k));
      std::vector<float> w(chosen.size());
      cpu_->route_top_k(logits.data(), kTokens, n_expert, k, k > 1, chosen.data(), w.data());
      int32_t* cg = to_gpu(std::vector<int32_t>(chosen.size()));
      float* wg = to_gpu(std::vector<float>(w.size()));
      gpu_->route_top_k(to_gpu(logits), kTokens, n_expert, k, k > 1, cg, wg);
      EXPECT_EQ(from_gpu(cg, chosen.size()), chosen) << n_expert << " experts, k " << k;
      EXPECT_LT(rel_err(from_gpu(wg, w.size()), w), 1e-5f) << n_expert << " experts, k " << k;
    }
}

// A prompt then decode steps, as the forward pass runs them: store_kv then attention, GQA, with and
// without a sliding window, for head sizes 64, 128 and 256; the last shape keeps its window in a
// ring of window + batch slots, as the KV cache does for sliding-window layers.
TEST_F(Cuda, AttentionMatchesCpu) {
  struct Shape {
    int n_head, n_head_kv, head_dim, window, prompt_batch;
    bool ring;
  };
  for (const Shape s : {Shape{9, 3, 64, 0, 400, false}, Shape{8, 2, 128, 0, 400, false},
                        Shape{4, 1, 256, 300, 400, false}, Shape{6, 6, 64, 32, 400, false},
                        Shape{8, 4, 64, 24, 50, true}}) {
    constexpr int kPrompt = 400, kDecode = 3;  // decode at 400+ positions splits the context
    const int64_t kv_width = int64_t(s.n_head_kv) * s.head_dim, q_width = int64_t(s.n_head) * s.head_dim;
    const int64_t n_slots = s.ring ? s.window + s.prompt_batch : kPrompt + kDecode;
    std::vector<uint16_t> k_cpu(size_t(n_slots * kv_width)), v_cpu(k_cpu.size());
    uint16_t* k_gpu = to_gpu(k_cpu);
    uint16_t* v_gpu = to_gpu(v_cpu);
    const ops::KvLayerView kc = kv_view(k_cpu.data(), s.n_head_kv, s.head_dim, n_slots);
    const ops::KvLayerView vc = kv_view(v_cpu.data(), s.n_head_kv, s.head_dim, n_slots);
    const ops::KvLayerView kg = kv_view(k_gpu, s.n_head_kv, s.head_dim, n_slots);
    const ops::KvLayerView vg = kv_view(v_gpu, s.n_head_kv, s.head_dim, n_slots);
    const ops::AttentionShape shape{s.n_head, s.n_head_kv, s.head_dim, s.head_dim, 1.0f / std::sqrt(float(s.head_dim)),
                                    s.window};
    std::vector<int> batches(size_t(kPrompt / s.prompt_batch), s.prompt_batch);
    batches.insert(batches.end(), kDecode, 1);
    int64_t pos = 0;
    for (int n : batches) {
      const std::vector<float> q = random_floats(size_t(n * q_width), uint32_t(pos + 20));
      const std::vector<float> k = random_floats(size_t(n * kv_width), uint32_t(pos + 21));
      const std::vector<float> v = random_floats(size_t(n * kv_width), uint32_t(pos + 22));
      std::vector<float> want(size_t(n * q_width));
      cpu_->store_kv(kc, vc, k.data(), v.data(), n, pos, s.n_head_kv, s.head_dim, s.head_dim);
      cpu_->attention(shape, q.data(), n, pos, kc, vc, want.data());
      float* out = to_gpu(std::vector<float>(want.size()));
      gpu_->store_kv(kg, vg, to_gpu(k), to_gpu(v), n, pos, s.n_head_kv, s.head_dim, s.head_dim);
      gpu_->attention(shape, to_gpu(q), n, pos, kg, vg, out);
      EXPECT_EQ(from_gpu(k_gpu, k_cpu.size()), k_cpu) << "keys stored";
      EXPECT_LT(rel_err(from_gpu(out, want.size()), want), 2e-3f)
          << "heads " << s.n_head << "/" << s.n_head_kv << " dim " << s.head_dim << " window " << s.window
          << (s.ring ? " (ring)" : "") << " tokens " << n << " at " << pos;
      pos += n;
    }
  }
}

}  // namespace
}  // namespace strata::backend

namespace strata::backend {
namespace {

// Decode steps recorded as graphs (positions change every token, so the graph is updated in place)
// must give exactly what the same ops give when run directly.
TEST_F(Cuda, GraphReplaysDecodeStepsExactly) {
  constexpr int64_t kEmbd = 256, kHead = 4, kDim = 64, kCtx = 32;
  const kernels::TypeKernels& k = kernels::kernels_for(DType::Q4_K);
  const size_t rb = row_bytes(DType::Q4_K, kEmbd);
  std::vector<uint8_t> wq(rb * kEmbd);
  const std::vector<float> wf = random_floats(size_t(kEmbd * kEmbd), 30);
  for (int64_t r = 0; r < kEmbd; ++r) k.quantize(wf.data() + r * kEmbd, wq.data() + r * rb, kEmbd);
  const WeightView w{DType::Q4_K, to_gpu(wq), kEmbd, kEmbd, rb};
  const std::vector<float> norm = random_floats(size_t(kEmbd), 31);
  const float* norm_g = to_gpu(norm);
  std::vector<uint16_t> cache(size_t(kCtx * kEmbd));
  const std::vector<float> old = random_floats(cache.size(), 32);
  for (size_t i = 0; i < cache.size(); ++i) cache[i] = f32_to_fp16(old[i]);
  uint16_t* kv[2][2] = {{to_gpu(cache), to_gpu(cache)}, {to_gpu(cache), to_gpu(cache)}};  // [direct|graph][k|v]
  const ops::AttentionShape shape{kHead, kHead, kDim, kDim, 0.125f, 0};
  float* h = to_gpu(std::vector<float>(size_t(kEmbd)));
  float* q = to_gpu(std::vector<float>(size_t(kEmbd)));
  float* out[2] = {to_gpu(std::vector<float>(size_t(kEmbd))), to_gpu(std::vector<float>(size_t(kEmbd)))};
  auto step = [&](int which, const float* x, int64_t pos) {
    gpu_->rms_norm(x, norm_g, h, kEmbd, 1, 1e-5f);
    gpu_->matmul(w, h, kEmbd, 1, q, kEmbd);
    gpu_->rope(q, kEmbd, 1, kHead, kDim, pos, rope_params(kDim, ops::RopeKind::neox, 10000.0f, 1.0f, nullptr));
    const ops::KvLayerView kc = kv_view(kv[which][0], kHead, kDim, kCtx), vc = kv_view(kv[which][1], kHead, kDim, kCtx);
    gpu_->store_kv(kc, vc, q, h, 1, pos, kHead, kDim, kDim);
    gpu_->attention(shape, q, 1, pos, kc, vc, out[which]);
    gpu_->add(out[which], x, kEmbd);
  };
  for (int64_t pos = 10; pos < 14; ++pos) {
    const float* x = to_gpu(random_floats(size_t(kEmbd), uint32_t(40 + pos)));
    step(0, x, pos);
    gpu_->begin_graph();
    step(1, x, pos);
    gpu_->end_graph();
    EXPECT_EQ(from_gpu(out[1], size_t(kEmbd)), from_gpu(out[0], size_t(kEmbd))) << "position " << pos;
  }
}

// The decode matmul quantizes its activations once and reuses them: the copies made by rms_norm,
// the gated activation and attention (in their own launches) and by a matmul for the next one must
// give the bits a fresh quantization gives, and a kernel that rewrites the rows must end the reuse.
// The fused gate/up/activation gives the bits of its three ops.
TEST_F(Cuda, DecodeMatmulReusesItsInt8RowsExactlyAndOnlyWhileValid) {
  constexpr int64_t kEmbd = 512, kHead = 4, kDim = 128, kCtx = 640;
  auto matrix = [&](DType type, uint32_t seed) {
    const kernels::TypeKernels& k = kernels::kernels_for(type);
    const size_t rb = row_bytes(type, kEmbd);
    std::vector<uint8_t> wq(rb * kEmbd);
    const std::vector<float> wf = random_floats(size_t(kEmbd * kEmbd), seed);
    for (int64_t r = 0; r < kEmbd; ++r) k.quantize(wf.data() + r * kEmbd, wq.data() + r * rb, kEmbd);
    return WeightView{type, to_gpu(wq), kEmbd, kEmbd, rb};
  };
  const WeightView wa = matrix(DType::Q4_K, 50), wb = matrix(DType::Q6_K, 51), wc = matrix(DType::Q8_0, 52);
  const size_t n = size_t(kEmbd);
  const float* x = to_gpu(random_floats(n, 53));
  const float* norm = to_gpu(random_floats(n, 54));
  float* h = to_gpu(std::vector<float>(n));
  float* g = to_gpu(std::vector<float>(n));
  float* u = to_gpu(std::vector<float>(n));
  float* att = to_gpu(std::vector<float>(n));
  float* y = to_gpu(std::vector<float>(n));
  float* copy = to_gpu(std::vector<float>(n));
  float* ref = to_gpu(std::vector<float>(n));
  // W . rows through a copy of them (a copy drops any reuse: a fresh quantization).
  auto fresh = [&](const WeightView& w, const float* rows) {
    gpu_->copy(copy, rows, n * sizeof(float));
    gpu_->matmul(w, copy, kEmbd, 1, ref, kEmbd);
    return from_gpu(ref, n);
  };
  auto product = [&](const WeightView& w, const float* rows) {
    gpu_->matmul(w, rows, kEmbd, 1, y, kEmbd);
    return from_gpu(y, n);
  };
  gpu_->rms_norm(x, norm, h, kEmbd, 1, 1e-5f);
  gpu_->matmul(wa, h, kEmbd, 1, g, kEmbd);  // rms_norm's copy
  gpu_->matmul(wb, h, kEmbd, 1, u, kEmbd);  // the same copy again
  EXPECT_EQ(from_gpu(g, n), fresh(wa, h)) << "rms_norm's quantization";
  EXPECT_EQ(from_gpu(u, n), fresh(wb, h)) << "a second matmul of the same rows";
  gpu_->rms_norm(x, norm, h, kEmbd, 1, 1e-5f);
  gpu_->add(h, x, kEmbd);  // rewrites h in a kernel of its own: the copy must not be reused
  EXPECT_EQ(product(wc, h), fresh(wc, h)) << "rows rewritten after they were quantized";
  gpu_->matmul(wa, h, kEmbd, 1, g, kEmbd);
  gpu_->matmul(wb, h, kEmbd, 1, u, kEmbd);
  gpu_->gated_activation(g, u, kEmbd, GatedActivation::silu);  // after decode matmuls: quantizes its result
  EXPECT_EQ(product(wc, g), fresh(wc, g)) << "the gated activation's quantization";
  // The fused gate, up and activation: the bits of the three ops one by one.
  const WeightView wd = matrix(DType::Q4_K, 56);
  for (GatedActivation act : {GatedActivation::silu, GatedActivation::gelu_tanh}) {
    gpu_->rms_norm(x, norm, h, kEmbd, 1, 1e-5f);
    gpu_->ffn_gate_up(wa, wd, h, 1, g, u, act);
    const std::vector<float> fused = from_gpu(g, n);
    gpu_->copy(copy, h, n * sizeof(float));
    gpu_->matmul(wa, copy, kEmbd, 1, g, kEmbd);
    gpu_->matmul(wd, copy, kEmbd, 1, u, kEmbd);
    gpu_->gated_activation(g, u, kEmbd, act);
    EXPECT_EQ(fused, from_gpu(g, n)) << "ffn_gate_up, " << (act == GatedActivation::silu ? "silu" : "gelu");
  }
  // Attention's output, split over the context (one launch, the last block combining) or not.
  std::vector<uint16_t> cache(size_t(kCtx * kEmbd));
  const std::vector<float> old = random_floats(cache.size(), 55);
  for (size_t i = 0; i < cache.size(); ++i) cache[i] = f32_to_fp16(old[i]);
  const ops::KvLayerView kc = kv_view(to_gpu(cache), kHead, kDim, kCtx), vc = kv_view(to_gpu(cache), kHead, kDim, kCtx);
  const ops::AttentionShape shape{kHead, kHead, kDim, kDim, 0.088f, 0};
  for (int64_t pos : {3, 600}) {  // 600: the context split among blocks
    gpu_->attention(shape, h, 1, pos, kc, vc, att);
    EXPECT_EQ(product(wa, att), fresh(wa, att)) << "attention's quantization at position " << pos;
  }
}

}  // namespace
}  // namespace strata::backend
