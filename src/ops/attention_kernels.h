#pragma once
// Internal to src/ops/attention*: the inner kernels of the tiled attention, one set per
// instruction set (scalar reference in attention.cpp, AVX2 and AVX-512 in attention_x86.h).
// They work on f32 tiles: the driver converts each block of keys and values once.
#include <cstdint>

#include "tensor/kernels.h"

namespace strata::ops::attn {

struct Kernels {
  // s[r * n_keys + j] = scale * dot(q + r * d, k + j * d) for r < n_rows, j < n_keys.
  void (*scores)(const float* q, int n_rows, const float* k, int n_keys, int d, float scale, float* s);
  // The same with the keys transposed: kt[i * ld + j] is element i of key j (a prompt tile
  // transposes its key block once, then each row's scores are broadcasts and FMAs, no reductions).
  void (*scores_t)(const float* q, int n_rows, const float* kt, int ld, int n_keys, int d, float scale, float* s);
  // Online softmax step for n_rows rows, each with n_keys scores s[r * n_keys ...] against the
  // same value rows v [n_keys x dv]: m[r] becomes max(m[r], scores), l[r] and the unnormalized
  // output row o[r * dv ...] are rescaled to it, then l[r] += sum_j p_j and o[r] += sum_j p_j v_j
  // with p_j = exp(s_j - m[r]). s is overwritten.
  // With dv == 0 (v and o unused) it only advances m and l: the f16 path's sweep for the max.
  void (*update)(float* s, int n_rows, int n_keys, const float* v, int dv, float* o, float* m, float* l);
  // The f16 path's scores: s[r * ld + j] = f16 vec_dot(keys[j], q + r * d) * scale, each bit for
  // bit what the F16 type's vec_dot returns for that pair (the active instruction set's, whose
  // summation order follows ggml's), q and keys as f16 bits.
  void (*scores_f16)(const uint16_t* q, int n_rows, int d, const uint16_t* const* keys, int n_keys, float scale,
                     float* s, size_t ld);
  // The f16 path's exponentials: s[j] = e^(s[j] - m) for j < n, each bit for bit what the C
  // library's expf returns (llama.cpp's reference loop and the per-score path used it), and their
  // sum in double in index order, added one by one onto acc (so a row summed a block at a time,
  // each block's call given the sum so far, is the one sum over the row).
  struct ExpSum {
    double (*fn)(float* s, int64_t n, float m, double acc);
    double operator()(float* s, int64_t n, float m, double acc = 0.0) const { return fn(s, n, m, acc); }
  } exp_sum;
  // The f16 path's output sweep, with e[r * ld + j] = e^(s_j - max) and each row's 1 / sum
  // inv_l[r]: p_j = f16(e_j * inv_l[r]) (the normalized probability rounded to f16, as llama.cpp's
  // non-flash path rounds it for its product with f16 values), then o[r] += sum_j p_j v_j in f32 in
  // key order (an FMA a key, as the reference loop's axpy).
  void (*accumulate)(const float* e, size_t ld, int n_rows, int n_keys, const float* v, int dv, float* o,
                     const float* inv_l);
};

const Kernels& kernels_for(kernels::Isa isa);

namespace scalar { extern const Kernels kKernels; }
namespace avx2 { extern const Kernels kKernels; }
namespace avx512 { extern const Kernels kKernels; }

}  // namespace strata::ops::attn
