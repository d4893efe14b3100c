// AVX2 + FMA version of the delta rule's per-token step (ops/delta_rule.h; compiled with those
// flags, chosen at run time for head sizes that are a multiple of 8).
#include <immintrin.h>

#include "ops/delta_rule.h"

namespace strata::ops::detail {

namespace {
float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}
}  // namespace

void delta_rule_step_avx2(float* S, const float* q, const float* k, const float* v, float decay, float beta,
                          float scale, int d, float* out) {
  const __m256 vdecay = _mm256_set1_ps(decay);
  for (int j = 0; j < d; ++j) {
    float* row = S + int64_t(j) * d;
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < d; i += 8) {
      const __m256 r = _mm256_mul_ps(_mm256_loadu_ps(row + i), vdecay);
      _mm256_storeu_ps(row + i, r);
      acc = _mm256_fmadd_ps(r, _mm256_loadu_ps(k + i), acc);
    }
    const __m256 vdelta = _mm256_set1_ps((v[j] - hsum(acc)) * beta);
    acc = _mm256_setzero_ps();
    for (int i = 0; i < d; i += 8) {
      const __m256 r = _mm256_fmadd_ps(_mm256_loadu_ps(k + i), vdelta, _mm256_loadu_ps(row + i));
      _mm256_storeu_ps(row + i, r);
      acc = _mm256_fmadd_ps(r, _mm256_loadu_ps(q + i), acc);
    }
    out[j] = hsum(acc) * scale;
  }
}

}  // namespace strata::ops::detail
