// The chunk decoding that the CUDA kernels use (backend/cuda/chunks.h, host and device code) must
// give the values src/tensor's dequantize gives, for every quantized type: checked on any machine.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/cuda/chunks.h"
#include "ops/ops.h"
#include "ops/thread_pool.h"
#include "tensor/kernels.h"

namespace strata::backend::chunks {
namespace {

template <typename Block>
void check(DType type) {
  constexpr int64_t kCols = 1024, kRows = 3;
  const kernels::TypeKernels& k = kernels::kernels_for(type, kernels::Isa::scalar);
  std::mt19937 rng(uint32_t(type) + 11);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  const size_t rb = row_bytes(type, kCols);
  std::vector<uint8_t> q(rb * kRows);
  std::vector<float> x(kCols), want(kCols);
  for (int64_t r = 0; r < kRows; ++r) {
    for (float& v : x) v = dist(rng) * (r == 1 ? 0.01f : 1.0f) + (r == 2 ? 0.5f : 0.0f);  // offsets exercise mins
    k.quantize(x.data(), q.data() + r * rb, kCols);
    k.dequantize(q.data() + r * rb, want.data(), kCols);
    float max_abs = 0.0f;
    for (float v : want) max_abs = std::max(max_abs, std::fabs(v));
    for (int64_t c = 0; c < kCols / 32; ++c) {
      Chunk ch;
      load_chunk<Block>(q.data() + r * rb, c, ch);
      for (int i = 0; i < 32; ++i)
        ASSERT_NEAR(chunk_value(ch, i), want[size_t(c * 32 + i)], 1e-6f * max_abs)
            << type_name(type) << " row " << r << " chunk " << c << " element " << i;
    }
  }
}

// The matvec kernel's arithmetic on the host: activations quantized as its quantize kernel does
// (per 32: scale amax / 127, round half to even), each chunk dotted with dot_chunk. It must be as
// close to the exact product as the CPU's matmul is (the same rule the device test applies).
template <typename Block>
void check_dot(DType type) {
  constexpr int64_t kCols = 768, kRows = 40;
  const kernels::TypeKernels& k = kernels::kernels_for(type);
  std::mt19937 rng(uint32_t(type) + 5);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  const size_t rb = row_bytes(type, kCols);
  std::vector<uint8_t> w(rb * kRows);
  std::vector<float> wf(size_t(kCols * kRows)), deq(wf.size()), x(kCols);
  for (float& v : wf) v = dist(rng) * 0.5f + 0.05f;
  for (float& v : x) v = dist(rng);
  for (int64_t r = 0; r < kRows; ++r) {
    k.quantize(wf.data() + r * kCols, w.data() + r * rb, kCols);
    k.dequantize(w.data() + r * rb, deq.data() + r * kCols, kCols);
  }
  std::vector<int32_t> xq(kCols / 4);
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
  ops::matmul(WeightView{type, w.data(), kCols, kRows, rb}, x.data(), kCols, 1, cpu.data(), kRows, pool, scratch);
  float err_chunk = 0.0f, err_cpu = 0.0f, max_abs = 0.0f;
  for (int64_t r = 0; r < kRows; ++r) {
    float y = 0.0f;
    for (int64_t c = 0; c < kCols / 32; ++c) {
      Chunk ch;
      load_chunk<Block>(w.data() + r * rb, c, ch);
      y += dot_chunk(ch, xq.data() + c * 8, xd[size_t(c)]);
    }
    double exact = 0.0;
    for (int64_t i = 0; i < kCols; ++i) exact += double(deq[size_t(r * kCols + i)]) * x[size_t(i)];
    err_chunk = std::max(err_chunk, float(std::fabs(y - exact)));
    err_cpu = std::max(err_cpu, float(std::fabs(cpu[size_t(r)] - exact)));
    max_abs = std::max(max_abs, float(std::fabs(exact)));
  }
  EXPECT_LT(err_chunk / max_abs, 1.5f * err_cpu / max_abs + 1e-3f) << type_name(type);
}

TEST(ChunkDot, Q4_0) { check_dot<BlockQ4_0>(DType::Q4_0); }
TEST(ChunkDot, Q4_1) { check_dot<BlockQ4_1>(DType::Q4_1); }
TEST(ChunkDot, Q5_0) { check_dot<BlockQ5_0>(DType::Q5_0); }
TEST(ChunkDot, Q5_1) { check_dot<BlockQ5_1>(DType::Q5_1); }
TEST(ChunkDot, Q8_0) { check_dot<BlockQ8_0>(DType::Q8_0); }
TEST(ChunkDot, Q2_K) { check_dot<BlockQ2_K>(DType::Q2_K); }
TEST(ChunkDot, Q3_K) { check_dot<BlockQ3_K>(DType::Q3_K); }
TEST(ChunkDot, Q4_K) { check_dot<BlockQ4_K>(DType::Q4_K); }
TEST(ChunkDot, Q5_K) { check_dot<BlockQ5_K>(DType::Q5_K); }
TEST(ChunkDot, Q6_K) { check_dot<BlockQ6_K>(DType::Q6_K); }

TEST(Chunks, Q4_0) { check<BlockQ4_0>(DType::Q4_0); }
TEST(Chunks, Q4_1) { check<BlockQ4_1>(DType::Q4_1); }
TEST(Chunks, Q5_0) { check<BlockQ5_0>(DType::Q5_0); }
TEST(Chunks, Q5_1) { check<BlockQ5_1>(DType::Q5_1); }
TEST(Chunks, Q8_0) { check<BlockQ8_0>(DType::Q8_0); }
TEST(Chunks, Q2_K) { check<BlockQ2_K>(DType::Q2_K); }
TEST(Chunks, Q3_K) { check<BlockQ3_K>(DType::Q3_K); }
TEST(Chunks, Q4_K) { check<BlockQ4_K>(DType::Q4_K); }
TEST(Chunks, Q5_K) { check<BlockQ5_K>(DType::Q5_K); }
TEST(Chunks, Q6_K) { check<BlockQ6_K>(DType::Q6_K); }

}  // namespace
}  // namespace strata::backend::chunks
