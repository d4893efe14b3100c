#pragma once
// The one dispatch table from tensor type to its kernels, per instruction set.
// Each quant family lives in its own file with a scalar reference beside its SIMD versions.
#include <cstdint>

#include "tensor/type.h"

namespace strata::kernels {

enum class Isa { scalar = 0, avx2 = 1, avx512 = 2 };

const char* isa_name(Isa isa);
Isa detected_isa();              // best path this CPU and this build support
Isa active_isa();                // the path kernels_for(type) returns; defaults to detected_isa()
void set_active_isa(Isa isa);    // clamped to detected_isa(); for tests and benchmarks

struct TypeKernels {
  DType vec_dot_type = DType::F32;  // activations are converted to this type before vec_dot
  // n elements (a multiple of the block size) from blocks of this type to floats.
  void (*dequantize)(const void* src, float* dst, int64_t n) = nullptr;
  // n floats to blocks of this type (reference rounding, as ggml's quantize_row_*_ref).
  void (*quantize)(const float* src, void* dst, int64_t n) = nullptr;
  // sum_i w[i] * a[i] over n elements: w in this type, a in vec_dot_type.
  float (*vec_dot)(int64_t n, const void* w, const void* a) = nullptr;
  // Optional, for prompt processing: out[r * out_row_stride + c * out_col_stride] = dot(w row r, a row c)
  // for r < n_rows, c < n_cols, reusing loaded blocks across the tile. nullptr: callers loop vec_dot.
  void (*tile_dot)(int64_t n, const void* w, size_t w_row_bytes, int n_rows, const void* a, size_t a_row_bytes,
                   int n_cols, float* out, size_t out_row_stride, size_t out_col_stride) = nullptr;
  // n floats to blocks of this type for use as activations: bit exact with ggml's x86 CPU backend
  // (quantize_row_q8_0 / q8_1 with 127/amax and round-half-even, q8_K_ref), identical on every path.
  // For types that are not activation types it equals quantize.
  void (*quantize_activation)(const float* src, void* dst, int64_t n) = nullptr;
};

// Kernels of a type on the active path; throws strata::Error for a type without kernels.
const TypeKernels& kernels_for(DType type);
// Kernels of a type on one path (falls back to scalar entries where a path has no SIMD version).
const TypeKernels& kernels_for(DType type, Isa isa);
bool has_kernels(DType type);

}  // namespace strata::kernels
