// Attention tile kernels on x86: the body of attention_avx2.cpp and attention_avx512.cpp. The
// same code for both widths over a few vector helpers; head sizes that are not a multiple of the
// vector width go to the scalar kernels.
#include <immintrin.h>

#include <cmath>
#include <limits>

#include "ops/attention_kernels.h"
#include "tensor/blocks.h"

#if !defined(STRATA_ISA)
#error "define STRATA_ISA (avx2 or avx512) before including attention_x86.h"
#endif

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace strata::ops::attn::STRATA_ISA {
namespace {

#if defined(__AVX512F__)
using V = __m512;
constexpr int W = 16;
inline V vzero() { return _mm512_setzero_ps(); }
inline V vset(float x) { return _mm512_set1_ps(x); }
inline V vload(const float* p) { return _mm512_loadu_ps(p); }
inline void vstore(float* p, V x) { _mm512_storeu_ps(p, x); }
inline __mmask16 tail_mask(int n) { return __mmask16((1u << n) - 1); }
// The first n floats of p, the rest `fill`.
inline V vload_tail(const float* p, int n, float fill) { return _mm512_mask_loadu_ps(vset(fill), tail_mask(n), p); }
inline void vstore_tail(float* p, V x, int n) { _mm512_mask_storeu_ps(p, tail_mask(n), x); }
inline V vadd(V a, V b) { return _mm512_add_ps(a, b); }
inline V vmul(V a, V b) { return _mm512_mul_ps(a, b); }
inline V vfma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
inline float vhsum(V x) { return _mm512_reduce_add_ps(x); }

#else
using V = __m256;
constexpr int W = 8;
inline V vzero() { return _mm256_setzero_ps(); }
inline V vset(float x) { return _mm256_set1_ps(x); }
inline V vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, V x) { _mm256_storeu_ps(p, x); }
inline __m256i tail_mask(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline V vload_tail(const float* p, int n, float fill) {
  const __m256i m = tail_mask(n);
  return _mm256_blendv_ps(vset(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
}
inline void vstore_tail(float* p, V x, int n) { _mm256_maskstore_ps(p, tail_mask(n), x); }
inline V vadd(V a, V b) { return _mm256_add_ps(a, b); }
inline V vmul(V a, V b) { return _mm256_mul_ps(a, b); }
inline V vfma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
inline float vhsum(V x) {
  __m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}

#endif

// o[0 .. NV * W) = o * c + sum_j p[j] * v[j * dv ...] for one chunk of an output row.
template <int NV>
void scale_accumulate(float* o, float c, const float* p, int n_keys, const float* v, int dv) {
  V acc[NV];
  const V vc = vset(c);
  for (int i = 0; i < NV; ++i) acc[i] = vmul(vload(o + i * W), vc);
  for (int j = 0; j < n_keys; ++j) {
    const V pj = vset(p[j]);
    const float* vj = v + size_t(j) * dv;
#pragma GCC unroll 8
    for (int i = 0; i < NV; ++i) acc[i] = vfma(pj, vload(vj + i * W), acc[i]);
  }
  for (int i = 0; i < NV; ++i) vstore(o + i * W, acc[i]);
}

// x rounded to the nearest f16 (ties to even) and back.
#if defined(__AVX512F__)
inline V vround_f16(V x) { return _mm512_cvtph_ps(_mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)); }
#else
inline V vround_f16(V x) { return _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)); }
#endif

void accumulate(const float* e, size_t ld, int n_rows, int n_keys, const float* v, int dv, float* o,
                const float* inv_l) {
  if (dv % W != 0) return scalar::kKernels.accumulate(e, ld, n_rows, n_keys, v, dv, o, inv_l);
  constexpr int kChunk = 64;
  alignas(64) float p[kChunk];
  for (int r = 0; r < n_rows; ++r) {
    const float* er = e + size_t(r) * ld;
    const V il = vset(inv_l[r]);
    float* orow = o + size_t(r) * dv;
    for (int j0 = 0; j0 < n_keys; j0 += kChunk) {
      const int n = std::min(kChunk, n_keys - j0);
      int j = 0;
      for (; j + W <= n; j += W) vstore(p + j, vround_f16(vmul(vload(er + j0 + j), il)));
      if (j < n) vstore_tail(p + j, vround_f16(vmul(vload_tail(er + j0 + j, n - j, 0.0f), il)), n - j);
      const float* vj = v + size_t(j0) * dv;
      int i = 0;
      for (; i + 8 * W <= dv; i += 8 * W) scale_accumulate<8>(orow + i, 1.0f, p, n, vj + i, dv);
      for (; i + 4 * W <= dv; i += 4 * W) scale_accumulate<4>(orow + i, 1.0f, p, n, vj + i, dv);
      for (; i < dv; i += W) scale_accumulate<1>(orow + i, 1.0f, p, n, vj + i, dv);
    }
  }
}

// e^x bit for bit glibc's expf (sysdeps/ieee754/flt-32/e_expf.c, from Arm's optimized routines,
// its FMA build, which x86-64 glibc selects on every CPU these paths run on): in double,
// x * 32 / ln 2 = k + r, e^x = 2^(k/32) * p(r) with 2^(i/32) from a table of 32 and a cubic p,
// rounded once to float. x below ln(2^-150) gives 0 as glibc's underflow does; x must not be NaN
// or +inf (attention passes s - max <= 0, finite).
// 2^(i/32) rounded to double, minus i << 47 (the index's share of the exponent bits added back).
alignas(64) inline constexpr uint64_t kExp2Table[32] = {
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51, 0x3fef72b83c7d517b,
    0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1, 0x3fef06fe0a31b715, 0x3feef1a7373aa9cb,
    0x3feedea64c123422, 0x3feece086061892d, 0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429,
    0x3feea47eb03a5585, 0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d, 0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069, 0x3fef5818dcfba487, 0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da, 0x3fefd0765b6e4540};
constexpr double kExpShift = 0x1.8p+52, kInvLn2N = 0x1.71547652b82fep+0 * 32;
constexpr double kExpC0 = 0x1.c6af84b912394p-5 / 32 / 32 / 32, kExpC1 = 0x1.ebfce50fac4f3p-3 / 32 / 32,
                 kExpC2 = 0x1.62e42ff0c52d6p-1 / 32;
constexpr float kExpUnderflow = -0x1.9fe368p6f;

#if defined(__AVX512F__)
// 8 floats in one vector of doubles.
inline __m256 expf8(__m256 x) {
  const __m512d shift = _mm512_set1_pd(kExpShift);
  const __m512d z = _mm512_mul_pd(_mm512_set1_pd(kInvLn2N), _mm512_cvtps_pd(x));
  __m512d kd = _mm512_add_pd(z, shift);
  const __m512i ki = _mm512_castpd_si512(kd);
  kd = _mm512_sub_pd(kd, shift);
  const __m512d r = _mm512_sub_pd(z, kd);
  __m512i t = _mm512_i64gather_epi64(_mm512_and_si512(ki, _mm512_set1_epi64(31)),
                                     reinterpret_cast<const long long*>(kExp2Table), 8);
  t = _mm512_add_epi64(t, _mm512_slli_epi64(ki, 47));
  const __m512d c = _mm512_fmadd_pd(_mm512_set1_pd(kExpC0), r, _mm512_set1_pd(kExpC1));
  __m512d y = _mm512_fmadd_pd(_mm512_set1_pd(kExpC2), r, _mm512_set1_pd(1.0));
  y = _mm512_mul_pd(_mm512_fmadd_pd(c, _mm512_mul_pd(r, r), y), _mm512_castsi512_pd(t));
  const __mmask8 tiny = _mm256_cmp_ps_mask(x, _mm256_set1_ps(kExpUnderflow), _CMP_LT_OQ);
  return _mm256_mask_mov_ps(_mm512_cvtpd_ps(y), tiny, _mm256_setzero_ps());
}
#else
// 4 floats in one vector of doubles, the same steps.
inline __m128 expf4(__m128 x) {
  const __m256d shift = _mm256_set1_pd(kExpShift);
  const __m256d z = _mm256_mul_pd(_mm256_set1_pd(kInvLn2N), _mm256_cvtps_pd(x));
  __m256d kd = _mm256_add_pd(z, shift);
  const __m256i ki = _mm256_castpd_si256(kd);
  kd = _mm256_sub_pd(kd, shift);
  const __m256d r = _mm256_sub_pd(z, kd);
  __m256i t = _mm256_i64gather_epi64(reinterpret_cast<const long long*>(kExp2Table),
                                     _mm256_and_si256(ki, _mm256_set1_epi64x(31)), 8);
  t = _mm256_add_epi64(t, _mm256_slli_epi64(ki, 47));
  const __m256d c = _mm256_fmadd_pd(_mm256_set1_pd(kExpC0), r, _mm256_set1_pd(kExpC1));
  __m256d y = _mm256_fmadd_pd(_mm256_set1_pd(kExpC2), r, _mm256_set1_pd(1.0));
  y = _mm256_mul_pd(_mm256_fmadd_pd(c, _mm256_mul_pd(r, r), y), _mm256_castsi256_pd(t));
  return _mm_andnot_ps(_mm_cmplt_ps(x, _mm_set1_ps(kExpUnderflow)), _mm256_cvtpd_ps(y));
}
inline __m256 expf8(__m256 x) {
  return _mm256_set_m128(expf4(_mm256_extractf128_ps(x, 1)), expf4(_mm256_castps256_ps128(x)));
}
#endif

double exp_sum(float* s, int64_t n, float m, double acc) {
  const __m256 vm = _mm256_set1_ps(m);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    _mm256_storeu_ps(s + j, expf8(_mm256_sub_ps(_mm256_loadu_ps(s + j), vm)));
    for (int i = 0; i < 8; ++i) acc += double(s[j + i]);
  }
  for (; j < n; ++j) acc += double(s[j] = std::exp(s[j] - m));
  return acc;
}

#if defined(__AVX512F__)
// Lane j: _mm512_reduce_add_ps(t[j]) bit for bit. GCC's reduction adds the upper half of a vector
// to the lower (256, then 128 bits), then lanes (0, 2) and (1, 3), then the two left; the same
// adds run here on 16 vectors at once, which leaves key 4r + q in lane 4q + r (undone at the end).
inline __m512 reduce_add_16(const __m512* t) {
  __m512 x[8], y[4], w[2];
  for (int i = 0; i < 8; ++i)
    x[i] = _mm512_add_ps(_mm512_shuffle_f32x4(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_f32x4(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  for (int i = 0; i < 4; ++i)
    y[i] = _mm512_add_ps(_mm512_shuffle_f32x4(x[2 * i], x[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(x[2 * i], x[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  for (int i = 0; i < 2; ++i)
    w[i] = _mm512_add_ps(_mm512_shuffle_ps(y[2 * i], y[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(y[2 * i], y[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 r = _mm512_add_ps(_mm512_shuffle_ps(w[0], w[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_ps(w[0], w[1], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), r);
}

// One key's F16 vec_dot terms over the first 64 * NS elements (NS 0: d / 64 steps at run time):
// four accumulators of 16 lanes, (a0 + a1) + (a2 + a3).
template <int NS>
inline __m512 f16_dot_terms(const float* k, const __m512* qv, const float* qr, int d) {
  __m512 a[4] = {vzero(), vzero(), vzero(), vzero()};
  const int steps = NS > 0 ? NS : d / 64;
  for (int i = 0; i < steps; ++i)
    for (int c = 0; c < 4; ++c)
      a[c] = _mm512_fmadd_ps(vload(k + 64 * i + 16 * c), NS > 0 ? qv[4 * i + c] : vload(qr + 64 * i + 16 * c), a[c]);
  return _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3]));
}

template <int NS>
void scores_f16_rows(const float* q, int n_rows, int d, const float* k, int n_keys, float scale, float* s, size_t ld) {
  const V vscale = vset(scale);
  for (int r = 0; r < n_rows; ++r) {
    const float* qr = q + size_t(r) * d;
    __m512 qv[NS > 0 ? 4 * NS : 1];
    for (int i = 0; i < 4 * NS; ++i) qv[i] = vload(qr + 16 * i);
    float* sr = s + size_t(r) * ld;
    int j = 0;
    for (; j + 16 <= n_keys; j += 16) {
      __m512 t[16];
#pragma GCC unroll 16
      for (int u = 0; u < 16; ++u) t[u] = f16_dot_terms<NS>(k + size_t(j + u) * d, qv, qr, d);
      vstore(sr + j, vmul(reduce_add_16(t), vscale));
    }
    for (; j < n_keys; ++j) sr[j] = _mm512_reduce_add_ps(f16_dot_terms<NS>(k + size_t(j) * d, qv, qr, d)) * scale;
  }
}

// 16 keys at a time, each as the F16 vec_dot of tensor/float_types_x86.h sums it (the values are
// f16 held in f32, so its conversions are exact and the products the same). Head sizes that are
// not a multiple of 64 (that vec_dot adds their tail in scalar) go to the scalar kernel.
void scores_f16(const float* q, int n_rows, int d, const float* k, int n_keys, float scale, float* s, size_t ld) {
  if (d % 64 != 0) return scalar::kKernels.scores_f16(q, n_rows, d, k, n_keys, scale, s, ld);
  if (d == 64) return scores_f16_rows<1>(q, n_rows, d, k, n_keys, scale, s, ld);
  if (d == 128) return scores_f16_rows<2>(q, n_rows, d, k, n_keys, scale, s, ld);
  scores_f16_rows<0>(q, n_rows, d, k, n_keys, scale, s, ld);
}
#else
// The AVX2 path's F16 vec_dot key by key: four accumulators of 8 lanes over steps of 32, then hsum.
void scores_f16(const float* q, int n_rows, int d, const float* k, int n_keys, float scale, float* s, size_t ld) {
  if (d % 32 != 0) return scalar::kKernels.scores_f16(q, n_rows, d, k, n_keys, scale, s, ld);
  for (int r = 0; r < n_rows; ++r) {
    const float* qr = q + size_t(r) * d;
    for (int j = 0; j < n_keys; ++j) {
      const float* kj = k + size_t(j) * d;
      V a[4] = {vzero(), vzero(), vzero(), vzero()};
      for (int i = 0; i < d; i += 32)
        for (int c = 0; c < 4; ++c) a[c] = vfma(vload(kj + i + 8 * c), vload(qr + i + 8 * c), a[c]);
      s[size_t(r) * ld + size_t(j)] = vhsum(vadd(vadd(a[0], a[1]), vadd(a[2], a[3]))) * scale;
    }
  }
}
#endif

// ---- quantized caches: ggml-cpu's flash-attention kernel for them, bit for bit.

// Block b of a Q8_0 or Q4_0 row as 32 signed bytes (element i in byte i), and its scale.
inline __m256i key_block(DType type, const uint8_t* row, int b, float* d) {
  if (type == DType::Q8_0) {
    const auto* x = reinterpret_cast<const BlockQ8_0*>(row) + b;
    *d = _cvtsh_ss(x->d);
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x->qs));
  }
  const auto* x = reinterpret_cast<const BlockQ4_0*>(row) + b;
  *d = _cvtsh_ss(x->d);
  const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x->qs));
  const __m256i nib = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), _mm256_set1_epi8(15));
  return _mm256_sub_epi8(nib, _mm256_set1_epi8(8));
}

// Lane i: the sum of a[4i + c] * b[4i + c] for c < 4, in integers (exact), as float; `abs_a` is |a|.
inline __m256 lane_dots(__m256i abs_a, __m256i a, __m256i b) {
  const __m256i sb = _mm256_sign_epi8(b, a);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), abs_a, sb));
#else
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(abs_a, sb), _mm256_set1_epi16(1)));
#endif
}

// ggml's hsum_float_8.
inline float hsum_float_8(__m256 x) {
  __m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}

constexpr int kMaxBlocks = 32;  // head sizes up to 1,024

void scores_q(DType key_type, const uint8_t* qq, int n_rows, int d, const uint8_t* const* keys, int n_keys, float scale,
              float* s, size_t ld) {
  const int nb = d / 32;
  if (nb > kMaxBlocks) return scalar::kKernels.scores_q(key_type, qq, n_rows, d, keys, n_keys, scale, s, ld);
  __m256i k[kMaxBlocks], ak[kMaxBlocks];
  float dk[kMaxBlocks];
  for (int j = 0; j < n_keys; ++j) {
    for (int b = 0; b < nb; ++b) {  // the key unpacked once for all the rows
      k[b] = key_block(key_type, keys[j], b, &dk[b]);
      ak[b] = _mm256_sign_epi8(k[b], k[b]);
    }
    for (int r = 0; r < n_rows; ++r) {
      const auto* q = reinterpret_cast<const BlockQ8_0*>(qq) + size_t(r) * nb;
      __m256 acc = _mm256_setzero_ps();
      for (int b = 0; b < nb; ++b) {
        const __m256i qb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q[b].qs));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dk[b] * _cvtsh_ss(q[b].d)), lane_dots(ak[b], k[b], qb), acc);
      }
      s[size_t(r) * ld + size_t(j)] = hsum_float_8(acc) * scale;
    }
  }
}

// o[0 .. NV * W) of one row through n keys: a fresh max scales it by e[j] and adds the value, any
// other key adds the value times e[j] (an FMA).
template <int NV>
void sequential_accumulate(float* o, const float* e, const bool* fresh, int n, const float* v, int dv) {
  V acc[NV];
  for (int i = 0; i < NV; ++i) acc[i] = vload(o + i * W);
  for (int j = 0; j < n; ++j) {
    V p = vset(e[j]);
    if (fresh[j]) {
      for (int i = 0; i < NV; ++i) acc[i] = vmul(acc[i], p);
      p = vset(1.0f);
    }
    const float* vj = v + size_t(j) * dv;
#pragma GCC unroll 8
    for (int i = 0; i < NV; ++i) acc[i] = vfma(vload(vj + i * W), p, acc[i]);
  }
  for (int i = 0; i < NV; ++i) vstore(o + i * W, acc[i]);
}

void sequential(const float* s, int n_keys, const float* v, int dv, float* o, float* m, float* l) {
  if (dv % W != 0) return scalar::kKernels.sequential(s, n_keys, v, dv, o, m, l);
  constexpr int kChunk = 64;
  alignas(64) float e[kChunk];
  bool fresh[kChunk];
  float M = *m, S = *l;
  for (int j0 = 0; j0 < n_keys; j0 += kChunk) {
    const int n = std::min(kChunk, n_keys - j0);
    // The running max key by key; e[j] the exponent: m_old - s for a fresh max, else s - m.
    for (int j = 0; j < n; ++j) {
      const float x = s[j0 + j];
      fresh[j] = x > M;
      e[j] = fresh[j] ? M - x : x - M;
      M = fresh[j] ? x : M;
    }
    int j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(e + j, expf8(_mm256_loadu_ps(e + j)));
    for (; j < n; ++j) e[j] = std::exp(e[j]);
    for (j = 0; j < n; ++j) S = fresh[j] ? flash_sum_step(S, e[j], 1.0f) : flash_sum_step(S, 1.0f, e[j]);
    const float* vj = v + size_t(j0) * dv;
    int i = 0;
    for (; i + 8 * W <= dv; i += 8 * W) sequential_accumulate<8>(o + i, e, fresh, n, vj + i, dv);
    for (; i + 4 * W <= dv; i += 4 * W) sequential_accumulate<4>(o + i, e, fresh, n, vj + i, dv);
    for (; i < dv; i += W) sequential_accumulate<1>(o + i, e, fresh, n, vj + i, dv);
  }
  *m = M;
  *l = S;
}

}  // namespace

const Kernels kKernels{scores_f16, {exp_sum}, accumulate, scores_q, sequential};

}  // namespace strata::ops::attn::STRATA_ISA

#pragma GCC diagnostic pop
