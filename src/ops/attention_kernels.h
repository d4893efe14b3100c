#pragma once
// Internal to src/ops/attention*: the inner kernels of the tiled attention, one set per
// instruction set (scalar reference in attention.cpp, AVX2 and AVX-512 in attention_x86.h).
// The driver converts each block of values (and f16 keys) to f32 once for all the rows reading it.
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "tensor/kernels.h"

namespace strata::ops::attn {

struct Kernels {
  // The f16 path's scores: s[r * ld + j] = f16 vec_dot(k + j * d, q + r * d) * scale, each bit for
  // bit what the F16 type's vec_dot returns for that pair (the active instruction set's, whose
  // summation order follows ggml's); q and k hold f16 values as floats (the key block converted
  // once, exactly, for all the rows that read it).
  void (*scores_f16)(const float* q, int n_rows, int d, const float* k, int n_keys, float scale, float* s, size_t ld);
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

  // Quantized caches follow ggml-cpu's flash-attention kernel for them
  // (ggml_compute_forward_flash_attn_ext_f16_one_chunk), key by key, bit for bit.
  // Scores: s[r * ld + j] = vec_dot(keys[j], qq row r) * scale, with qq the query rows as q8_0
  // blocks (row r at qq + r * (d / 32) blocks) and the keys of key_type (Q8_0 or Q4_0) as ggml's
  // x86 ggml_vec_dot_q8_0_q8_0 / q4_0_q8_0 sums them: per block, 8 lanes of 4 integer products
  // each, added into 8 float lanes by one FMA with the product of the two scales; then
  // ((a4 + a0) + (a6 + a2)) + ((a5 + a1) + (a7 + a3)) (hsum_float_8).
  void (*scores_q)(DType key_type, const uint8_t* qq, int n_rows, int d, const uint8_t* const* keys, int n_keys,
                   float scale, float* s, size_t ld);
  // The online step of that kernel for one row over n_keys scores, in key order: a score above the
  // running max m becomes the max, o and l are scaled by ms = e^(m_old - m) and the value is added
  // with weight 1; otherwise it is added with weight vs = e^(s - m) (an FMA per element); then
  // l = l * ms + vs (one FMA). e^ is the C library's expf bit for bit. v: the values [n_keys x dv].
  void (*sequential)(const float* s, int n_keys, const float* v, int dv, float* o, float* m, float* l);
};

// One step of that kernel's running sum: S = S * ms + vs, which ggml-cpu's build contracts into
// one FMA (checked against the library: the unfused form differs in the last bit).
inline float flash_sum_step(float S, float ms, float vs) { return std::fma(S, ms, vs); }

const Kernels& kernels_for(kernels::Isa isa);

namespace scalar { extern const Kernels kKernels; }
namespace avx2 { extern const Kernels kKernels; }
namespace avx512 { extern const Kernels kKernels; }

}  // namespace strata::ops::attn
