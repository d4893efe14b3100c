#include "ops/vec.h"

#include "tensor/fp16.h"

namespace strata::ops {

namespace detail {
void axpy_f16_scalar(float* y, float a, const uint16_t* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * fp16_to_f32(x[i]);
}
}  // namespace detail

bool detail::has_avx2_f16c() {
#if !defined(STRATA_SCALAR_ONLY)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

namespace {
using AxpyF16 = void (*)(float*, float, const uint16_t*, int64_t);

AxpyF16 pick_axpy_f16() {
#if !defined(STRATA_SCALAR_ONLY)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
    return detail::axpy_f16_avx2;
#endif
  return detail::axpy_f16_scalar;
}
}  // namespace

void axpy_f16(float* y, float a, const uint16_t* x, int64_t n) {
  static const AxpyF16 impl = pick_axpy_f16();
  impl(y, a, x, n);
}

}  // namespace strata::ops
