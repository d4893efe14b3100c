#pragma once
// Small vector helpers of the attention inner loop, with SIMD versions chosen at run time.
#include <cstdint>

namespace strata::ops {

// y[i] += a * x[i] for n floats, x in f16.
void axpy_f16(float* y, float a, const uint16_t* x, int64_t n);

namespace detail {
void axpy_f16_scalar(float* y, float a, const uint16_t* x, int64_t n);
void axpy_f16_avx2(float* y, float a, const uint16_t* x, int64_t n);
}  // namespace detail

}  // namespace strata::ops
