// The ops that put the rest of Strata's models on the GPU: the KV cache in q8_0 and q4_0, attention
// sinks, YaRN rope, MXFP4 weights, and gpt-oss's routing, clamped SwiGLU and biased experts.
//
// On any machine: MXFP4's chunk decoding (backend/cuda/chunks_mxfp4.h, the device's reading of the
// blocks) against src/tensor's dequantize, and its dot against the CPU's; the CPU forms of
// gpt-oss's ops against references written out here. With a CUDA build and a GPU: each op of the
// CUDA backend against the CPU backend (skipped with the reason elsewhere; STRATA_REQUIRE_GPU=1
// turns a skip into a failure).
//
// Tolerances (err = max |a - b| / max |b|): KV stores byte for byte; attention 2e-3 over f16 caches
// (the f16 path's rounding of probabilities on the CPU), 1e-4 over quantized caches (the same
// dequantized keys and values, f32 on both sides, summed in another order); rope 1e-5 (the
// device's sin and cos); swiglu_oai and routing weights 1e-5, the routing itself exactly; MXFP4
// matmul the CudaMatmul rules (2e-2, no farther from the exact product than 1.5x the CPU plus
// 3e-3); the biased experts 4e-2 as the other expert ops (two quantized matrices in a row).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/chunks_mxfp4.h"
#include "ops/ops.h"
#include "ops/thread_pool.h"
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

// Rows of `type` quantized from random values, and what they hold.
struct Quantized {
  DType type;
  int64_t rows, cols;
  size_t row_bytes;
  std::vector<uint8_t> bytes;
  std::vector<float> deq;
  Quantized(DType t, int64_t n_rows, int64_t n_cols, uint32_t seed, float scale = 0.3f)
      : type(t), rows(n_rows), cols(n_cols), row_bytes(strata::row_bytes(t, n_cols)) {
    const std::vector<float> f = random_floats(size_t(rows * cols), seed, scale);
    bytes.resize(row_bytes * size_t(rows));
    deq.resize(f.size());
    const kernels::TypeKernels& k = kernels::kernels_for(t);
    for (int64_t r = 0; r < rows; ++r) {
      k.quantize(f.data() + r * cols, bytes.data() + size_t(r) * row_bytes, cols);
      k.dequantize(bytes.data() + size_t(r) * row_bytes, deq.data() + r * cols, cols);
    }
  }
  WeightView view(const uint8_t* data) const { return {type, data, cols, rows, row_bytes}; }
};

// ---- on any machine

TEST(Mxfp4Chunks, DecodeAsTheCpuDequantizes) {
  const Quantized q(DType::MXFP4, 5, 1024, 1, 1.0f);
  for (int64_t r = 0; r < q.rows; ++r)
    for (int64_t c = 0; c < q.cols / 32; ++c) {
      chunks::Chunk ch;
      chunks::load_chunk<BlockMXFP4>(q.bytes.data() + size_t(r) * q.row_bytes, c, ch);
      for (int i = 0; i < 32; ++i)
        ASSERT_EQ(chunks::chunk_value(ch, i), q.deq[size_t(r * q.cols + c * 32 + i)])
            << "row " << r << " chunk " << c << " element " << i;
    }
}

// Every exponent, the two denormal ones included, and every nibble.
TEST(Mxfp4Chunks, EveryExponentAndNibble) {
  BlockMXFP4 b{};
  for (int e = 0; e < 255; ++e) {
    b.e = uint8_t(e);
    for (int j = 0; j < 16; ++j) b.qs[j] = uint8_t(j | ((15 - j) << 4));
    float want[32];
    kernels::kernels_for(DType::MXFP4, kernels::Isa::scalar).dequantize(&b, want, 32);
    chunks::Chunk ch;
    chunks::load_chunk<BlockMXFP4>(reinterpret_cast<const uint8_t*>(&b), 0, ch);
    for (int i = 0; i < 32; ++i) ASSERT_EQ(chunks::chunk_value(ch, i), want[i]) << "exponent " << e << " element " << i;
  }
}

// The matvec's arithmetic on the host (dot_chunk on activations quantized per 32 as the device
// does) is as close to the exact product as the CPU's Q8_0 dot.
TEST(Mxfp4Chunks, DotAsCloseAsTheCpu) {
  constexpr int64_t kCols = 2880, kRows = 24;  // gpt-oss's width
  const Quantized w(DType::MXFP4, kRows, kCols, 2);
  const std::vector<float> x = random_floats(size_t(kCols), 3);
  std::vector<int32_t> xq(kCols / 4, 0);
  std::vector<float> xd(kCols / 32);
  for (int64_t c = 0; c < kCols / 32; ++c) {
    float amax = 0.0f;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[size_t(c * 32 + i)]));
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    xd[size_t(c)] = d;
    for (int i = 0; i < 32; ++i) {
      const uint32_t q = uint8_t(int8_t(std::nearbyint(x[size_t(c * 32 + i)] * id)));
      xq[size_t(c * 8 + i / 4)] |= int32_t(q << (8 * (i % 4)));
    }
  }
  ThreadPool pool(1);
  ops::MatmulScratch scratch;
  std::vector<float> cpu(kRows);
  ops::matmul(w.view(w.bytes.data()), x.data(), kCols, 1, cpu.data(), kRows, pool, scratch);
  std::vector<float> chunk(kRows), exact(kRows);
  for (int64_t r = 0; r < kRows; ++r) {
    float y = 0.0f;
    double e = 0.0;
    for (int64_t c = 0; c < kCols / 32; ++c) {
      chunks::Chunk ch;
      chunks::load_chunk<BlockMXFP4>(w.bytes.data() + size_t(r) * w.row_bytes, c, ch);
      y += chunks::dot_chunk(ch, xq.data() + c * 8, xd[size_t(c)]);
    }
    for (int64_t c = 0; c < kCols; ++c) e += double(w.deq[size_t(r * kCols + c)]) * x[size_t(c)];
    chunk[size_t(r)] = y;
    exact[size_t(r)] = float(e);
  }
  const float err_chunk = rel_err(chunk, exact), err_cpu = rel_err(cpu, exact);
  std::printf("  MXFP4 dot: |chunks-exact| %.2e  |cpu-exact| %.2e\n", err_chunk, err_cpu);
  EXPECT_LT(err_chunk, 1.5f * err_cpu + 3e-3f);
}

TEST(CpuGptOssOps, RouteTakesTheTopLogitsThenTheirSoftmax) {
  ThreadPool pool(1);
  auto cpu = make_cpu_backend(pool);
  // Token 0: a tie between experts 1 and 3 (the lower index first); token 1: distinct logits.
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f, 0.1f, -3.0f, 4.0f, 0.2f, 3.5f};
  std::vector<int32_t> chosen(4);
  std::vector<float> w(4);
  cpu->route_top_k_softmax(logits.data(), 2, 5, 2, chosen.data(), w.data());
  EXPECT_EQ(chosen, (std::vector<int32_t>{1, 3, 2, 4}));
  EXPECT_FLOAT_EQ(w[0], 0.5f);
  EXPECT_FLOAT_EQ(w[1], 0.5f);
  EXPECT_NEAR(w[2], 1.0 / (1.0 + std::exp(-0.5)), 1e-6);
  EXPECT_NEAR(w[3], 1.0 - 1.0 / (1.0 + std::exp(-0.5)), 1e-6);
}

TEST(CpuGptOssOps, SwigluOaiClampsAsGgml) {
  ThreadPool pool(1);
  auto cpu = make_cpu_backend(pool);
  std::vector<float> gate = {-2.0f, 0.0f, 1.0f, 9.0f, 3.0f}, up = {0.5f, 1.0f, -9.0f, 2.0f, 8.0f};
  const std::vector<float> g0 = gate;
  cpu->swiglu_oai(gate.data(), up.data(), int64_t(gate.size()), SwigluOai{});
  for (size_t i = 0; i < gate.size(); ++i) {
    const double x = std::min(double(g0[i]), 7.0), y = std::clamp(double(up[i]), -7.0, 7.0);
    EXPECT_NEAR(gate[i], x / (1.0 + std::exp(-1.702 * x)) * (y + 1.0), 1e-5 * (1.0 + std::fabs(x * (y + 1.0)))) << i;
  }
}

// The biased experts against a reference composed of the CPU's own matmul and the formula: each
// routed slot weights[s] * (down(swiglu_oai(gate x + bg, up x + bu)) + bd).
TEST(CpuGptOssOps, BiasedExpertsAddEachBiasAfterItsMatrix) {
  constexpr int kExperts = 4, kUsed = 2, kTokens = 3;
  constexpr int64_t kEmbd = 64, kFf = 96;
  ThreadPool pool(2);
  auto cpu = make_cpu_backend(pool);
  const Quantized gate(DType::F32, kExperts * kFf, kEmbd, 4), up(DType::F32, kExperts * kFf, kEmbd, 5),
      down(DType::F32, kExperts * kEmbd, kFf, 6);
  const std::vector<float> bg = random_floats(kExperts * kFf, 7), bu = random_floats(kExperts * kFf, 8),
                           bd = random_floats(kExperts * kEmbd, 9), x = random_floats(kTokens * kEmbd, 10);
  const std::vector<int32_t> chosen = {2, 0, 0, 3, 2, 3};
  const std::vector<float> weights = {0.7f, 0.3f, 0.6f, 0.4f, 0.5f, 0.5f};
  ExpertWeights w;
  w.gate = gate.view(gate.bytes.data()).rows(0, kFf);
  w.up = up.view(up.bytes.data()).rows(0, kFf);
  w.down = down.view(down.bytes.data()).rows(0, kEmbd);
  w.gate_stride = w.up_stride = size_t(kFf) * gate.row_bytes;
  w.down_stride = size_t(kEmbd) * down.row_bytes;
  std::vector<float> in(kTokens * kUsed * kEmbd), g(in.size() * 2), u(g.size()), d(in.size());
  std::vector<int32_t> slots(kTokens * kUsed);
  std::vector<float> out(size_t(kTokens * kUsed * kEmbd), 0.0f);
  ExpertBatch b;
  b.x = x.data();
  b.n_tokens = kTokens;
  b.n_expert = kExperts;
  b.k = kUsed;
  b.chosen = chosen.data();
  b.weights = weights.data();
  b.out = out.data();
  b.host = {in.data(), g.data(), u.data(), d.data(), slots.data()};
  cpu->moe_experts_biased(w, ExpertBiases{bg.data(), bu.data(), bd.data(), SwigluOai{}}, b);
  for (int s = 0; s < kTokens * kUsed; ++s) {
    const int e = chosen[size_t(s)], t = s / kUsed;
    std::vector<double> a(kFf);
    for (int64_t r = 0; r < kFf; ++r) {
      double gs = bg[size_t(e * kFf + r)], us = bu[size_t(e * kFf + r)];
      for (int64_t c = 0; c < kEmbd; ++c) {
        gs += double(gate.deq[size_t((e * kFf + r) * kEmbd + c)]) * x[size_t(t * kEmbd + c)];
        us += double(up.deq[size_t((e * kFf + r) * kEmbd + c)]) * x[size_t(t * kEmbd + c)];
      }
      const double xc = std::min(gs, 7.0), yc = std::clamp(us, -7.0, 7.0);
      a[size_t(r)] = xc / (1.0 + std::exp(-1.702 * xc)) * (yc + 1.0);
    }
    for (int64_t c = 0; c < kEmbd; ++c) {
      double v = bd[size_t(e * kEmbd + c)];
      for (int64_t r = 0; r < kFf; ++r) v += double(down.deq[size_t((e * kEmbd + c) * kFf + r)]) * a[size_t(r)];
      EXPECT_NEAR(out[size_t(s * kEmbd + c)], weights[size_t(s)] * v, 1e-3 * (1.0 + std::fabs(v))) << s << " " << c;
    }
  }
}

// ---- the CUDA backend against the CPU backend

bool gpu_required() {
  const char* v = std::getenv("STRATA_REQUIRE_GPU");
  return v && std::strcmp(v, "1") == 0;
}

class CudaCoverage : public ::testing::Test {
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
    void* p = gpu_->alloc(std::max<size_t>(1, host.size()) * sizeof(T));
    owned_.push_back(p);
    if (!host.empty()) gpu_->upload(p, host.data(), host.size() * sizeof(T));
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

ops::KvLayerView kv_view(uint8_t* data, DType type, int n_heads, int head_dim, int64_t n_slots) {
  const size_t head = row_bytes(type, head_dim);
  return {data, type, size_t(n_heads) * head, head, n_slots};
}

// A prompt in batches then decode steps, store_kv then attention as the forward pass runs them, per
// cache type, with and without sinks and sliding windows (one in a ring of window + batch slots).
TEST_F(CudaCoverage, KvCacheTypesAndSinksMatchCpu) {
  struct Shape {
    int n_head, n_head_kv, head_dim, window, prompt_batch;
    bool ring, sinks;
  };
  for (const DType type : {DType::Q8_0, DType::Q4_0, DType::F16})
    for (const Shape s : {Shape{8, 2, 64, 0, 100, false, false}, Shape{8, 2, 64, 0, 100, false, true},
                          Shape{4, 1, 128, 48, 50, true, true}, Shape{6, 3, 256, 0, 300, false, false},
                          Shape{4, 2, 32, 24, 17, true, false}}) {
      if (type == DType::F16 && !s.sinks) continue;  // attention.cu's case, tested in backend_test.cpp
      constexpr int kPrompt = 300, kDecode = 4;
      const int64_t kv_width = int64_t(s.n_head_kv) * s.head_dim, q_width = int64_t(s.n_head) * s.head_dim;
      const int64_t n_slots = s.ring ? s.window + s.prompt_batch : kPrompt + kDecode;
      const size_t cache_bytes = size_t(n_slots) * s.n_head_kv * row_bytes(type, s.head_dim);
      std::vector<uint8_t> k_cpu(cache_bytes, 0), v_cpu(cache_bytes, 0);
      uint8_t* k_gpu = to_gpu(k_cpu);
      uint8_t* v_gpu = to_gpu(v_cpu);
      const ops::KvLayerView kc = kv_view(k_cpu.data(), type, s.n_head_kv, s.head_dim, n_slots);
      const ops::KvLayerView vc = kv_view(v_cpu.data(), type, s.n_head_kv, s.head_dim, n_slots);
      const ops::KvLayerView kg = kv_view(k_gpu, type, s.n_head_kv, s.head_dim, n_slots);
      const ops::KvLayerView vg = kv_view(v_gpu, type, s.n_head_kv, s.head_dim, n_slots);
      const std::vector<float> sinks = random_floats(size_t(s.n_head), 40, 2.0f);
      const float* sinks_gpu = to_gpu(sinks);
      ops::AttentionShape shape{s.n_head,
                                s.n_head_kv,
                                s.head_dim,
                                s.head_dim,
                                1.0f / std::sqrt(float(s.head_dim)),
                                s.window,
                                s.sinks ? sinks.data() : nullptr};
      ops::AttentionShape shape_gpu = shape;
      shape_gpu.sinks = s.sinks ? sinks_gpu : nullptr;
      std::vector<int> batches;
      for (int left = kPrompt; left > 0; left -= s.prompt_batch) batches.push_back(std::min(left, s.prompt_batch));
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
        gpu_->attention(shape_gpu, to_gpu(q), n, pos, kg, vg, out);
        const std::string what = std::string(type_name(type)) + " heads " + std::to_string(s.n_head) + "/" +
                                 std::to_string(s.n_head_kv) + " dim " + std::to_string(s.head_dim) + " window " +
                                 std::to_string(s.window) + (s.ring ? " (ring)" : "") + (s.sinks ? " sinks" : "") +
                                 " tokens " + std::to_string(n) + " at " + std::to_string(pos);
        ASSERT_EQ(from_gpu(k_gpu, k_cpu.size()), k_cpu) << "keys stored: " << what;
        ASSERT_EQ(from_gpu(v_gpu, v_cpu.size()), v_cpu) << "values stored: " << what;
        const float err = rel_err(from_gpu(out, want.size()), want);
        EXPECT_LT(err, type == DType::F16 ? 2e-3f : 1e-4f) << what;
        pos += n;
      }
    }
}

// Decode steps over a quantized cache recorded as a replayable graph (the position read on the
// device) give what the same ops give directly.
TEST_F(CudaCoverage, QuantizedCacheDecodeReplaysExactly) {
  constexpr int kHead = 4, kHeadKv = 2, kDim = 64, kCtx = 40;
  const int64_t kv_width = kHeadKv * kDim, q_width = kHead * kDim;
  const size_t bytes = size_t(kCtx) * kHeadKv * row_bytes(DType::Q8_0, kDim);
  uint8_t* k_direct = to_gpu(std::vector<uint8_t>(bytes, 0));
  uint8_t* v_direct = to_gpu(std::vector<uint8_t>(bytes, 0));
  uint8_t* k_graph = to_gpu(std::vector<uint8_t>(bytes, 0));
  uint8_t* v_graph = to_gpu(std::vector<uint8_t>(bytes, 0));
  const ops::AttentionShape shape{kHead, kHeadKv, kDim, kDim, 0.125f, 0};
  const auto view = [&](uint8_t* p) { return kv_view(p, DType::Q8_0, kHeadKv, kDim, kCtx); };
  float* q = to_gpu(std::vector<float>(q_width));
  float* k = to_gpu(std::vector<float>(kv_width));
  float* v = to_gpu(std::vector<float>(kv_width));
  float* out_direct = to_gpu(std::vector<float>(q_width));
  float* out_graph = to_gpu(std::vector<float>(q_width));
  auto step = [&](uint8_t* kc, uint8_t* vc, float* out, int64_t pos) {
    gpu_->store_kv(view(kc), view(vc), k, v, 1, pos, kHeadKv, kDim, kDim);
    gpu_->attention(shape, q, 1, pos, view(kc), view(vc), out);
  };
  for (int64_t pos = 0; pos < kCtx; ++pos) {
    gpu_->upload(q, random_floats(size_t(q_width), uint32_t(3 * pos)).data(), size_t(q_width) * 4);
    gpu_->upload(k, random_floats(size_t(kv_width), uint32_t(3 * pos + 1)).data(), size_t(kv_width) * 4);
    gpu_->upload(v, random_floats(size_t(kv_width), uint32_t(3 * pos + 2)).data(), size_t(kv_width) * 4);
    step(k_direct, v_direct, out_direct, pos);
    if (pos < 2 || !gpu_->replay_graph(pos)) {
      gpu_->begin_position_graph(pos);
      step(k_graph, v_graph, out_graph, pos);
      gpu_->end_graph();
    }
    ASSERT_EQ(from_gpu(out_graph, size_t(q_width)), from_gpu(out_direct, size_t(q_width))) << "position " << pos;
  }
  EXPECT_EQ(from_gpu(k_graph, bytes), from_gpu(k_direct, bytes));
}

TEST_F(CudaCoverage, YarnRopeMatchesCpu) {
  constexpr int kTokens = 5, kHeads = 3, kDim = 64;
  for (const ops::RopeKind kind : {ops::RopeKind::neox, ops::RopeKind::normal})
    for (const float attn_factor : {1.0f, 0.8f}) {
      ops::RopeParams p;
      p.n_rot = kDim;
      p.kind = kind;
      p.freq_base = 150000.0f;
      p.freq_scale = 1.0f / 32.0f;
      p.ext_factor = 1.0f;
      p.attn_factor = attn_factor;
      p.n_ctx_orig = 4096;
      const std::vector<float> x = random_floats(size_t(kTokens * kHeads * kDim), 50);
      for (const int64_t pos0 : {int64_t(0), int64_t(5000), int64_t(100000)}) {
        std::vector<float> want = x;
        cpu_->rope(want.data(), kHeads * kDim, kTokens, kHeads, kDim, pos0, p);
        float* xg = to_gpu(x);
        gpu_->rope(xg, kHeads * kDim, kTokens, kHeads, kDim, pos0, p);
        EXPECT_LT(rel_err(from_gpu(xg, x.size()), want), 1e-5f)
            << "pos0 " << pos0 << " attn_factor " << attn_factor << (kind == ops::RopeKind::neox ? " neox" : "");
      }
    }
}

TEST_F(CudaCoverage, Mxfp4MatmulAndRowsMatchCpu) {
  constexpr int64_t kCols = 2880, kRows = 67;
  const Quantized w(DType::MXFP4, kRows, kCols, 60, 0.5f);
  const WeightView wc = w.view(w.bytes.data()), wg = w.view(to_gpu(w.bytes));
  EXPECT_TRUE(cuda_supports(DType::MXFP4));
  for (int n_tokens : {1, 3, 8, 9, 40}) {
    const std::vector<float> x = random_floats(size_t(n_tokens * kCols), uint32_t(61 + n_tokens));
    std::vector<float> y_cpu(size_t(n_tokens * kRows));
    cpu_->matmul(wc, x.data(), kCols, n_tokens, y_cpu.data(), kRows);
    float* yg = to_gpu(std::vector<float>(y_cpu.size()));
    gpu_->matmul(wg, to_gpu(x), kCols, n_tokens, yg, kRows);
    const std::vector<float> y_gpu = from_gpu(yg, y_cpu.size());
    std::vector<float> exact(y_cpu.size());
    for (int t = 0; t < n_tokens; ++t)
      for (int64_t r = 0; r < kRows; ++r) {
        double s = 0;
        for (int64_t c = 0; c < kCols; ++c) s += double(w.deq[size_t(r * kCols + c)]) * x[size_t(t * kCols + c)];
        exact[size_t(t * kRows + r)] = float(s);
      }
    const float gpu_cpu = rel_err(y_gpu, y_cpu), gpu_exact = rel_err(y_gpu, exact), cpu_exact = rel_err(y_cpu, exact);
    std::printf("  MXFP4 n_tokens %2d: |gpu-cpu| %.2e  |gpu-exact| %.2e  |cpu-exact| %.2e\n", n_tokens, gpu_cpu,
                gpu_exact, cpu_exact);
    EXPECT_LT(gpu_cpu, 2e-2f) << "n_tokens " << n_tokens;
    EXPECT_LT(gpu_exact, 1.5f * cpu_exact + 3e-3f) << "n_tokens " << n_tokens;
  }
  const std::vector<int32_t> ids = {66, 0, 12, 66};
  std::vector<float> want(ids.size() * kCols);
  cpu_->get_rows(wc, ids.data(), int(ids.size()), want.data(), kCols);
  float* out = to_gpu(std::vector<float>(want.size()));
  gpu_->get_rows(wg, to_gpu(ids), int(ids.size()), out, kCols);
  EXPECT_EQ(from_gpu(out, want.size()), want);
}

TEST_F(CudaCoverage, GptOssRoutingAndSwigluMatchCpu) {
  for (const int n_expert : {4, 32, 128})
    for (const int k : {2, 4}) {
      constexpr int kTokens = 37;
      std::vector<float> logits = random_floats(size_t(kTokens * n_expert), uint32_t(70 + n_expert + k));
      logits[1] = logits[2];  // a tie: the lower index first
      std::vector<int32_t> chosen(size_t(kTokens * k));
      std::vector<float> w(chosen.size());
      cpu_->route_top_k_softmax(logits.data(), kTokens, n_expert, k, chosen.data(), w.data());
      int32_t* cg = to_gpu(chosen);
      float* wg = to_gpu(w);
      gpu_->route_top_k_softmax(to_gpu(logits), kTokens, n_expert, k, cg, wg);
      EXPECT_EQ(from_gpu(cg, chosen.size()), chosen) << n_expert << " experts, k " << k;
      EXPECT_LT(rel_err(from_gpu(wg, w.size()), w), 1e-5f) << n_expert << " experts, k " << k;
    }
  const std::vector<float> gate = random_floats(10000, 80, 5.0f), up = random_floats(10000, 81, 5.0f);
  std::vector<float> want = gate;
  cpu_->swiglu_oai(want.data(), up.data(), int64_t(want.size()), SwigluOai{});
  float* gg = to_gpu(gate);
  gpu_->swiglu_oai(gg, to_gpu(up), int64_t(gate.size()), SwigluOai{});
  EXPECT_LT(rel_err(from_gpu(gg, gate.size()), want), 1e-5f);
}

// Decode (up to 8 tokens: per slot on the device) and prompt batches (grouped per expert), experts
// stacked, in cache slots and alone, MXFP4 and Q8_0 matrices.
TEST_F(CudaCoverage, BiasedExpertsMatchCpu) {
  constexpr int kExperts = 6, kUsed = 2;
  constexpr int64_t kEmbd = 128, kFf = 96;
  constexpr float kUntouched = 12345.0f;
  for (const DType type : {DType::MXFP4, DType::Q8_0}) {
    const Quantized gate(type, kExperts * kFf, kEmbd, 90), up(type, kExperts * kFf, kEmbd, 91),
        down(type, kExperts * kEmbd, kFf, 92);
    const std::vector<float> bg = random_floats(kExperts * kFf, 93, 0.5f), bu = random_floats(kExperts * kFf, 94, 0.5f),
                             bd = random_floats(kExperts * kEmbd, 95, 0.5f);
    const ExpertBiases bias_cpu{bg.data(), bu.data(), bd.data(), SwigluOai{}};
    const ExpertBiases bias_gpu{to_gpu(bg), to_gpu(bu), to_gpu(bd), SwigluOai{}};
    const uint8_t *gate_g = to_gpu(gate.bytes), *up_g = to_gpu(up.bytes), *down_g = to_gpu(down.bytes);
    auto experts = [&](const uint8_t* g, const uint8_t* u, const uint8_t* d) {
      ExpertWeights w;
      w.gate = gate.view(g).rows(0, kFf);
      w.up = up.view(u).rows(0, kFf);
      w.down = down.view(d).rows(0, kEmbd);
      w.gate_stride = w.up_stride = size_t(kFf) * gate.row_bytes;
      w.down_stride = size_t(kEmbd) * down.row_bytes;
      return w;
    };
    for (const int n_tokens : {1, 5, 8, 30})
      for (const int mode : {0, 1, 2}) {  // stacked, slot_of (experts 1 and 4 absent), single expert 3
        const std::vector<float> x = random_floats(size_t(n_tokens * kEmbd), uint32_t(96 + n_tokens));
        std::vector<int32_t> chosen(size_t(n_tokens * kUsed));
        std::vector<float> weights(chosen.size());
        for (int t = 0; t < n_tokens; ++t) {
          chosen[size_t(t * kUsed)] = (t * 5 + 3) % kExperts;
          chosen[size_t(t * kUsed + 1)] = (t * 5 + 4 + t % 3) % kExperts;
          weights[size_t(t * kUsed)] = 0.6f;
          weights[size_t(t * kUsed + 1)] = 0.4f;
        }
        ExpertWeights wc = experts(gate.bytes.data(), up.bytes.data(), down.bytes.data());
        ExpertWeights wg = experts(gate_g, up_g, down_g);
        const std::vector<int32_t> slot_of = {0, -1, 2, 3, -1, 5};
        if (mode == 1) {
          wc.slot_of = slot_of.data();
          wg.slot_of = to_gpu(slot_of);
        } else if (mode == 2) {
          const size_t gs = 3 * wc.gate_stride, ds = 3 * wc.down_stride;
          wc.gate.data += gs, wc.up.data += gs, wc.down.data += ds;
          wg.gate.data += gs, wg.up.data += gs, wg.down.data += ds;
          wc.single = wg.single = 3;
        }
        std::vector<float> in(chosen.size() * kEmbd), g(chosen.size() * kFf), u(g.size()), d(in.size());
        std::vector<int32_t> slots(chosen.size());
        std::vector<float> want(chosen.size() * kEmbd, kUntouched);
        ExpertBatch b;
        b.x = x.data();
        b.n_tokens = n_tokens;
        b.n_expert = kExperts;
        b.k = kUsed;
        b.chosen = chosen.data();
        b.weights = weights.data();
        b.out = want.data();
        b.host = {in.data(), g.data(), u.data(), d.data(), slots.data()};
        cpu_->moe_experts_biased(wc, bias_cpu, b);
        float* out = to_gpu(std::vector<float>(want.size(), kUntouched));
        ExpertBatch bg_ = b;
        bg_.x = to_gpu(x);
        bg_.chosen = to_gpu(chosen);
        bg_.weights = to_gpu(weights);
        bg_.out = out;
        bg_.host = {};
        gpu_->moe_experts_biased(wg, bias_gpu, bg_);
        const std::vector<float> got = from_gpu(out, want.size());
        for (size_t i = 0; i < want.size(); ++i)
          if (want[i] == kUntouched) ASSERT_EQ(got[i], kUntouched) << "slot " << i / kEmbd << " of an absent expert";
        EXPECT_LT(rel_err(got, want), 4e-2f) << type_name(type) << " tokens " << n_tokens << " mode " << mode;
      }
  }
}

}  // namespace
}  // namespace strata::backend
