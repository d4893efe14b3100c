// The chunk decoding that the CUDA kernels use (backend/cuda/chunks.h, host and device code) must
// give the values src/tensor's dequantize gives, for every quantized type: checked on any machine.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/cuda/chunks.h"
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
