// MXFP4 on x86: the body of quant_fp4_avx2.cpp and quant_fp4_avx512.cpp, compiled once per path
// (STRATA_ISA names the path's namespace). A block's 32 nibbles become their doubled E2M1 values
// as s8 by one byte shuffle of the 16-entry table; the dot against a Q8_0 block is an s8 x s8
// integer dot (|w| <= 12, so the int16 pair sums never saturate), scaled by e8m0_half * d.
#include <immintrin.h>

#include <algorithm>

#include "tensor/kernels_impl.h"

#if !defined(STRATA_ISA)
#error "define STRATA_ISA (avx2 or avx512) before including quant_fp4_x86.h"
#endif

namespace strata::kernels::STRATA_ISA {
namespace {

#include "tensor/simd_x86.h"

inline __m256i mxfp4_values(const BlockMXFP4& b) {
  const __m128i table = _mm_loadu_si128(reinterpret_cast<const __m128i*>(kMxfp4Values));
  return _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(table), nibbles_32(b.qs));
}

inline void mxfp4_accumulate(const BlockMXFP4& x, __m256i xq, const BlockQ8_0& y, __m256& acc) {
  const __m256 p = _mm256_cvtepi32_ps(dot_s8s8(xq, load256(y.qs)));
  acc = _mm256_fmadd_ps(p, _mm256_set1_ps(h2f(y.d) * e8m0_to_f32_half(x.e)), acc);
}

float vec_dot_mxfp4(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockMXFP4*>(w);
  const auto* y = static_cast<const BlockQ8_0*>(a);
  const int64_t nb = n / kQKMXFP4;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 1 < nb; i += 2) {
    mxfp4_accumulate(x[i], mxfp4_values(x[i]), y[i], acc0);
    mxfp4_accumulate(x[i + 1], mxfp4_values(x[i + 1]), y[i + 1], acc1);
  }
  if (i < nb) mxfp4_accumulate(x[i], mxfp4_values(x[i]), y[i], acc0);
  return hsum(_mm256_add_ps(acc0, acc1));
}

// R weight rows x C activation columns: every unpacked weight block is used C times. Each output
// sums as vec_dot_mxfp4 (ggml's x86 order, which its mul_mat_id runs for every routed token): even
// blocks into one accumulator, odd blocks into another, added at the end.
template <int R, int C>
void mxfp4_tile(int64_t nb, const uint8_t* w, size_t wrb, const uint8_t* a, size_t arb, float* out, size_t rs,
                size_t cs) {
  __m256 acc[2][R][C];
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h)
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) acc[h][r][c] = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const int h = (i + 1 < nb || nb % 2 == 0) ? int(i % 2) : 0;  // an odd last block joins the even ones
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const BlockMXFP4& x = reinterpret_cast<const BlockMXFP4*>(w + r * wrb)[i];
      const __m256i xq = mxfp4_values(x);
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c)
        mxfp4_accumulate(x, xq, reinterpret_cast<const BlockQ8_0*>(a + c * arb)[i], acc[h][r][c]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) out[r * rs + c * cs] = hsum(_mm256_add_ps(acc[0][r][c], acc[1][r][c]));
}

#if defined(__AVX512F__)
constexpr int kFp4TileR = 2, kFp4TileC = 4;  // 16 accumulators in each of two sets
#else
constexpr int kFp4TileR = 2, kFp4TileC = 2;
#endif

void tile_dot_mxfp4(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, size_t arb, int n_cols, float* out,
                    size_t rs, size_t cs) {
  const int64_t nb = n / kQKMXFP4;
  const auto* wb = static_cast<const uint8_t*>(w);
  const auto* ab = static_cast<const uint8_t*>(a);
  int r = 0;
  for (; r + kFp4TileR <= n_rows; r += kFp4TileR) {
    int c = 0;
    for (; c + kFp4TileC <= n_cols; c += kFp4TileC)
      mxfp4_tile<kFp4TileR, kFp4TileC>(nb, wb + r * wrb, wrb, ab + c * arb, arb, out + r * rs + c * cs, rs, cs);
    for (; c < n_cols; ++c)
      mxfp4_tile<kFp4TileR, 1>(nb, wb + r * wrb, wrb, ab + c * arb, arb, out + r * rs + c * cs, rs, cs);
  }
  for (; r < n_rows; ++r)
    for (int c = 0; c < n_cols; ++c)
      mxfp4_tile<1, 1>(nb, wb + r * wrb, wrb, ab + c * arb, arb, out + r * rs + c * cs, rs, cs);
}

// Dequantize: the table values times the scale (one product each, as the scalar reference).
void dequantize_mxfp4(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const BlockMXFP4*>(src);
  for (int64_t i = 0; i < n / kQKMXFP4; ++i, y += kQKMXFP4) {
    const __m256i v = mxfp4_values(x[i]);
    const __m256 d = _mm256_set1_ps(e8m0_to_f32_half(x[i].e));
    for (int k = 0; k < 4; ++k) {
      const __m128i b8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(reinterpret_cast<const int8_t*>(&v) + 8 * k));
      _mm256_storeu_ps(y + 8 * k, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b8)), d));
    }
  }
}

}  // namespace

void register_fp4(KernelTable& t) {
  t[DType::MXFP4].dequantize = dequantize_mxfp4;
  t[DType::MXFP4].vec_dot = vec_dot_mxfp4;
  t[DType::MXFP4].tile_dot = tile_dot_mxfp4;
}

}  // namespace strata::kernels::STRATA_ISA
