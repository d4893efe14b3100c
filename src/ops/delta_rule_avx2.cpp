// AVX2 + FMA versions of the delta rule's per-token step and of silu_rows' AVX-512 order
// (ops/delta_rule.h; compiled with those flags, chosen at run time): the scalar code's
// arithmetic, lane for lane, so bit-identical to it, with ggml's 16-lane sums carried as pairs of
// 8-lane halves.
#include <immintrin.h>

#include <cmath>

#include "ops/delta_rule.h"

namespace strata::ops::detail {

namespace {

// Lanes 0..3 onto 4..7's, then (0 + 2) + (1 + 3): what _mm512_reduce_add_ps does after folding
// its upper 8 lanes onto the lower.
float sum_halving(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

// ggml's GGML_F32x8_REDUCE: lower and upper 4 lanes added, then two hadds: (0 + 1) + (2 + 3).
float sum_hadd(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(_mm_hadd_ps(t, t));
}

float dot(const float* x, const float* y, int n, DotOrder order) {
  int i = 0;
  float sum;
  if (order == DotOrder::avx512) {
    // acc[2a], acc[2a + 1]: the lower and upper halves of ggml's 16-lane accumulator a.
    __m256 acc[8];
    for (auto& a : acc) a = _mm256_setzero_ps();
    for (; i + 64 <= n; i += 64)
      for (int a = 0; a < 8; ++a) acc[a] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8 * a), _mm256_loadu_ps(y + i + 8 * a), acc[a]);
    const __m256 lo = _mm256_add_ps(_mm256_add_ps(acc[0], acc[4]), _mm256_add_ps(acc[2], acc[6]));
    const __m256 hi = _mm256_add_ps(_mm256_add_ps(acc[1], acc[5]), _mm256_add_ps(acc[3], acc[7]));
    sum = sum_halving(_mm256_add_ps(hi, lo));
  } else {
    __m256 acc[4];
    for (auto& a : acc) a = _mm256_setzero_ps();
    for (; i + 32 <= n; i += 32)
      for (int a = 0; a < 4; ++a) acc[a] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8 * a), _mm256_loadu_ps(y + i + 8 * a), acc[a]);
    sum = sum_hadd(_mm256_add_ps(_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3])));
  }
  for (; i < n; ++i) sum = std::fma(x[i], y[i], sum);
  return sum;
}

}  // namespace

void delta_rule_step_avx2(float* S, const float* q, const float* k, const float* v, float decay, float beta,
                          float scale, int d, DotOrder order, float* out) {
  const __m256 vdecay = _mm256_set1_ps(decay);
  const int d8 = d - d % 8;
  for (int j = 0; j < d; ++j) {
    float* row = S + int64_t(j) * d;
    int i = 0;
    for (; i < d8; i += 8) _mm256_storeu_ps(row + i, _mm256_mul_ps(_mm256_loadu_ps(row + i), vdecay));
    for (; i < d; ++i) row[i] *= decay;
    const float delta = (v[j] - dot(row, k, d, order)) * beta;
    const __m256 vdelta = _mm256_set1_ps(delta);
    for (i = 0; i < d8; i += 8)
      _mm256_storeu_ps(row + i, _mm256_fmadd_ps(_mm256_loadu_ps(k + i), vdelta, _mm256_loadu_ps(row + i)));
    for (; i < d; ++i) row[i] = std::fma(k[i], delta, row[i]);
    out[j] = dot(row, q, d, order) * scale;
  }
}

void silu_rows_avx2(float* x, int64_t n, int64_t n_rows) {
  const int64_t whole = n - n % 16;  // ggml's 16-lane blocks; the rest as its scalar tail
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f), round = _mm256_set1_ps(0x1.8p23f);
  for (int64_t r = 0; r < n_rows; ++r) {
    float* row = x + r * n;
    for (int64_t i = 0; i < whole; i += 8) {
      const __m256 v = _mm256_loadu_ps(row + i);
      const __m256 a = _mm256_sub_ps(zero, v);  // e^a, a = -x, as ggml_v_expf
      const __m256 e = _mm256_sub_ps(_mm256_fmadd_ps(a, _mm256_set1_ps(0x1.715476p+0f), round), round);
      const __m256 b = _mm256_fnmadd_ps(e, _mm256_set1_ps(0x1.7f7d1cp-20f),
                                        _mm256_fnmadd_ps(e, _mm256_set1_ps(0x1.62e4p-1f), a));
      const __m256 u = _mm256_mul_ps(b, b);
      const __m256 j = _mm256_fmadd_ps(
          _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f)), u,
                          _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f))),
          u, _mm256_fmadd_ps(_mm256_set1_ps(0x1.ffffecp-1f), b, one));
      const __m256 abs_e = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), e);
      if (_mm256_movemask_ps(_mm256_cmp_ps(abs_e, _mm256_set1_ps(126.0f), _CMP_GT_OQ))) {
        // 2^e is no normal float: the scalar code (libm's ldexpf, rounded once as scalef)
        for (int64_t l = i; l < i + 8; ++l) row[l] = row[l] / (1.0f + ggml_expf_avx512(0.0f - row[l]));
        continue;
      }
      const __m256 pow2 = _mm256_castsi256_ps(
          _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(e), _mm256_set1_epi32(127)), 23));
      _mm256_storeu_ps(row + i, _mm256_div_ps(v, _mm256_add_ps(one, _mm256_mul_ps(j, pow2))));
    }
    for (int64_t i = whole; i < n; ++i) row[i] = row[i] / (1.0f + std::exp(-row[i]));
  }
}

}  // namespace strata::ops::detail
