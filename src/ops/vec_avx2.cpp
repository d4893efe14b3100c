// AVX2 + F16C + FMA versions of ops/vec.h (compiled with those flags; chosen at run time).
#include <immintrin.h>

#include "ops/vec.h"
#include "tensor/fp16.h"

namespace strata::ops::detail {

void axpy_f16_avx2(float* y, float a, const uint16_t* x, int64_t n) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 vx = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i)));
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, vx, _mm256_loadu_ps(y + i)));
  }
  for (; i < n; ++i) y[i] += a * fp16_to_f32(x[i]);
}

}  // namespace strata::ops::detail
