#pragma once
// Small vector helpers of the attention inner loop, with SIMD versions chosen at run time.
#include <cstdint>

namespace strata::ops {

// y[i] += a * x[i] for n floats, x in f16.
void axpy_f16(float* y, float a, const uint16_t* x, int64_t n);

namespace detail {
void axpy_f16_scalar(float* y, float a, const uint16_t* x, int64_t n);
void axpy_f16_avx2(float* y, float a, const uint16_t* x, int64_t n);
// gate[i] = f(gate[i]) * up[i] with f(x) = 0 for x <= -10, x for x >= 10, else the f16 table entry
// at x rounded to f16 (round to nearest even); the table has 2 readable entries past 65535.
void table_gelu_mul_avx2(float* gate, const float* up, int64_t n, const uint16_t* table);
bool has_avx2_f16c();
}  // namespace detail

}  // namespace strata::ops
