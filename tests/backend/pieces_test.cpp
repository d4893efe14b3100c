// The wide-load decoding of the decode matvec's K-quant kernel (backend/cuda/chunks.h pieces,
// host and device code) must give the values src/tensor's dequantize gives, and its dot the
// chunk dot's value: checked on any machine.
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
  static_assert(Pieces<Block>::kHas);
  constexpr int64_t kCols = 1024, kRows = 3;
  const kernels::TypeKernels& k = kernels::kernels_for(type, kernels::Isa::scalar);
  std::mt19937 rng(uint32_t(type) + 17);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  const size_t rb = row_bytes(type, kCols);
  std::vector<uint8_t> q(rb * kRows);
  std::vector<float> x(kCols), want(kCols);
  // Activations as the quantize kernel gives them: int8 per element, one scale per 32.
  std::vector<int8_t> a(kCols);
  std::vector<float> ad(kCols / 32);
  for (size_t i = 0; i < a.size(); ++i) a[i] = int8_t(int(rng() % 255) - 127);
  for (float& v : ad) v = 0.01f + float(rng() % 100) / 1000.0f;
  for (int64_t r = 0; r < kRows; ++r) {
    for (float& v : x) v = dist(rng) * (r == 1 ? 0.01f : 1.0f) + (r == 2 ? 0.5f : 0.0f);  // offsets exercise mins
    k.quantize(x.data(), q.data() + r * rb, kCols);
    k.dequantize(q.data() + r * rb, want.data(), kCols);
    float max_abs = 0.0f;
    for (float v : want) max_abs = std::max(max_abs, std::fabs(v));
    const Block* blocks = reinterpret_cast<const Block*>(q.data() + r * rb);
    double by_pieces = 0.0, by_chunks = 0.0, scale = 0.0;
    for (int64_t b = 0; b < kCols / 256; ++b) {
      std::vector<int> seen(256, 0);
      for (int p = 0; p < 8; ++p) {
        Piece pc;
        Pieces<Block>::load(blocks[b], p, pc);
        int32_t av[8];
        float ads[2];
        for (int g = 0; g < 2; ++g) {
          ASSERT_EQ(pc.e[g] % 16, 0);
          for (int i = 0; i < 16; ++i) {
            const int e = pc.e[g] + i;
            ++seen[size_t(e)];
            ASSERT_NEAR(piece_value(pc, g, i), want[size_t(b * 256 + e)], 1e-6f * max_abs)
                << type_name(type) << " row " << r << " block " << b << " piece " << p << " group " << g << " element " << i;
          }
          for (int j = 0; j < 4; ++j) __builtin_memcpy(&av[4 * g + j], &a[size_t(b * 256 + pc.e[g] + 4 * j)], 4);
          ads[g] = ad[size_t((b * 256 + pc.e[g]) / 32)];
        }
        by_pieces += dot_piece(pc, av, ads);
      }
      for (int e = 0; e < 256; ++e) ASSERT_EQ(seen[size_t(e)], 1) << "element " << e << " of a block covered once";
    }
    for (int64_t c = 0; c < kCols / 32; ++c) {
      Chunk ch;
      load_chunk<Block>(q.data() + r * rb, c, ch);
      int32_t av[8];
      __builtin_memcpy(av, &a[size_t(c * 32)], 32);
      by_chunks += dot_chunk(ch, av, ad[size_t(c)]);
      for (int i = 0; i < 32; ++i) scale += std::fabs(double(want[size_t(c * 32 + i)]) * a[size_t(c * 32 + i)] * ad[size_t(c)]);
    }
    EXPECT_NEAR(by_pieces, by_chunks, 1e-5 * scale) << type_name(type) << " row " << r;
  }
}

TEST(Pieces, Q4_K) { check<BlockQ4_K>(DType::Q4_K); }
TEST(Pieces, Q5_K) { check<BlockQ5_K>(DType::Q5_K); }
TEST(Pieces, Q6_K) { check<BlockQ6_K>(DType::Q6_K); }

}  // namespace
}  // namespace strata::backend::chunks
