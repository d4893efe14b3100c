// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1 on x86: the body of quant_legacy_avx2.cpp and
// quant_legacy_avx512.cpp, compiled once per path (STRATA_ISA names the path's namespace).
#include <immintrin.h>

#include <algorithm>

#include "tensor/kernels_impl.h"

#if !defined(STRATA_ISA)
#error "define STRATA_ISA (avx2 or avx512) before including quant_legacy_x86.h"
#endif

#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define STRATA_VNNI 1
#else
#define STRATA_VNNI 0
#endif

namespace strata::kernels::STRATA_ISA {
namespace {

#include "tensor/simd_x86.h"

// ---- the integer dot of a weight block against an activation block, by family.
// Weights are unpacked to u8 with an offset subtracted through the activation sums
// (w = u - off): with VNNI one vpdpbusd per block pair, starting from -off * sum(a).

inline __m256i offset_term(__m256i a, int off) {
#if STRATA_VNNI
  const __m256i z = _mm256_setzero_si256();
  return _mm256_sub_epi32(z, _mm256_dpbusd_epi32(z, _mm256_set1_epi8(char(off)), a));
#else
  return _mm256_maddubs_epi16(_mm256_set1_epi8(char(off)), a);
#endif
}

inline __m256i dot_with_offset(__m256i u, __m256i a, __m256i off_term) {
#if STRATA_VNNI
  return _mm256_dpbusd_epi32(off_term, u, a);
#else
  return _mm256_madd_epi16(_mm256_sub_epi16(_mm256_maddubs_epi16(u, a), off_term), _mm256_set1_epi16(1));
#endif
}

struct Act {
  __m256i q;
  __m256i off;  // offset_term of q (unused by families without offset)
  float d;
  float s;     // d * sum(q) (Q8_1 only)
  __m128 ds;   // {d, s} converted together (Q8_1 only)
};
struct Wt {
  __m256i q;
  float d;
  float m;
  __m128 dm;  // {d, m} converted together (Q4_1 / Q5_1 only)
};

// Two adjacent halves (d and m, or d and s) to floats with one conversion.
inline __m128 load_half_pair(const uint16_t* p) {
  uint32_t u;
  std::memcpy(&u, p, 4);
  return _mm_cvtph_ps(_mm_cvtsi32_si128(int(u)));
}

template <int kOff>
inline Act prep_q8_0(const BlockQ8_0& b) {
  Act a;
  a.q = load256(b.qs);
  a.off = kOff ? offset_term(a.q, kOff) : _mm256_setzero_si256();
  a.d = h2f(b.d);
  a.s = 0;
  return a;
}

inline Act prep_q8_1(const BlockQ8_1& b) {
  Act a;
  a.q = load256(b.qs);
  a.off = _mm256_setzero_si256();
  a.ds = load_half_pair(&b.d);
  a.d = a.s = 0;
  return a;
}

struct FamQ4_0 {
  using WB = BlockQ4_0;
  using AB = BlockQ8_0;
  static constexpr bool kMin = false;
  static Act prep_a(const AB& b) { return prep_q8_0<8>(b); }
  static Wt prep_w(const WB& b) { return {nibbles_32(b.qs), h2f(b.d), 0, _mm_setzero_ps()}; }
  static __m256i pair(const Wt& w, const Act& a) { return dot_with_offset(w.q, a.q, a.off); }
  static __m256i s8(const WB& b) { return _mm256_sub_epi8(nibbles_32(b.qs), _mm256_set1_epi8(8)); }
};

struct FamQ5_0 {
  using WB = BlockQ5_0;
  using AB = BlockQ8_0;
  static constexpr bool kMin = false;
  static Act prep_a(const AB& b) { return prep_q8_0<16>(b); }
  static Wt prep_w(const WB& b) {
    const __m256i hi = _mm256_and_si256(bytes_from_bits_32(b.qh), _mm256_set1_epi8(0x10));
    return {_mm256_or_si256(nibbles_32(b.qs), hi), h2f(b.d), 0, _mm_setzero_ps()};
  }
  static __m256i pair(const Wt& w, const Act& a) { return dot_with_offset(w.q, a.q, a.off); }
  // q - 16 as s8: the nibble, with 0xF0 where the fifth bit is clear
  static __m256i s8(const WB& b) {
    return _mm256_or_si256(nibbles_32(b.qs), _mm256_andnot_si256(bytes_from_bits_32(b.qh), _mm256_set1_epi8(char(0xF0))));
  }
};

struct FamQ8_0 {
  using WB = BlockQ8_0;
  using AB = BlockQ8_0;
  static constexpr bool kMin = false;
#if STRATA_VNNI
  // w + 128 as u8, minus 128 * sum(a)
  static Act prep_a(const AB& b) { return prep_q8_0<128>(b); }
  static Wt prep_w(const WB& b) { return {_mm256_xor_si256(load256(b.qs), _mm256_set1_epi8(char(0x80))), h2f(b.d), 0, _mm_setzero_ps()}; }
  static __m256i pair(const Wt& w, const Act& a) { return _mm256_dpbusd_epi32(a.off, w.q, a.q); }
  static __m256i s8(const WB& b) { return load256(b.qs); }
#else
  static Act prep_a(const AB& b) { return prep_q8_0<0>(b); }
  static Wt prep_w(const WB& b) { return {load256(b.qs), h2f(b.d), 0, _mm_setzero_ps()}; }
  static __m256i pair(const Wt& w, const Act& a) { return dot_s8s8(w.q, a.q); }
#endif
};

struct FamQ4_1 {
  using WB = BlockQ4_1;
  using AB = BlockQ8_1;
  static constexpr bool kMin = true;
  static Act prep_a(const AB& b) { return prep_q8_1(b); }
  static Wt prep_w(const WB& b) { return {nibbles_32(b.qs), 0, 0, load_half_pair(&b.d)}; }
  static __m256i pair(const Wt& w, const Act& a) { return dot_u8s8(_mm256_setzero_si256(), w.q, a.q); }
};

struct FamQ5_1 {
  using WB = BlockQ5_1;
  using AB = BlockQ8_1;
  static constexpr bool kMin = true;
  static Act prep_a(const AB& b) { return prep_q8_1(b); }
  static Wt prep_w(const WB& b) {
    const __m256i hi = _mm256_and_si256(bytes_from_bits_32(b.qh), _mm256_set1_epi8(0x10));
    return {_mm256_or_si256(nibbles_32(b.qs), hi), 0, 0, load_half_pair(&b.d)};
  }
  static __m256i pair(const Wt& w, const Act& a) { return dot_u8s8(_mm256_setzero_si256(), w.q, a.q); }
};

// acc += float(pair) * d_w * d_a; for families with a min, lane 1 of summ gathers m_w * s_a.
template <class F>
inline void accumulate(const Wt& w, const Act& a, __m256& acc, __m128& summ) {
  const __m256 p = _mm256_cvtepi32_ps(F::pair(w, a));
  if constexpr (F::kMin) {
    const __m128 prod = _mm_mul_ps(w.dm, a.ds);  // {d_w * d_a, m_w * s_a}
    acc = _mm256_fmadd_ps(p, _mm256_broadcastss_ps(prod), acc);
    summ = _mm_add_ps(summ, prod);
  } else {
    acc = _mm256_fmadd_ps(p, _mm256_set1_ps(w.d * a.d), acc);
  }
}

inline float min_term(__m128 summ) { return _mm_cvtss_f32(_mm_movehdup_ps(summ)); }

template <class F>
float vec_dot(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const typename F::WB*>(w);
  const auto* y = static_cast<const typename F::AB*>(a);
  const int64_t nb = n / 32;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  __m128 summ0 = _mm_setzero_ps(), summ1 = _mm_setzero_ps();
  int64_t i = 0;
  for (; i + 1 < nb; i += 2) {
    accumulate<F>(F::prep_w(x[i]), F::prep_a(y[i]), acc0, summ0);
    accumulate<F>(F::prep_w(x[i + 1]), F::prep_a(y[i + 1]), acc1, summ1);
  }
  if (i < nb) accumulate<F>(F::prep_w(x[i]), F::prep_a(y[i]), acc0, summ0);
  return hsum(_mm256_add_ps(acc0, acc1)) + (F::kMin ? min_term(_mm_add_ps(summ0, summ1)) : 0.0f);
}

// R weight rows x C activation columns: every unpacked weight block is used C times and every
// prepared activation block R times. The R / C loops are unrolled explicitly so the accumulators
// stay in registers (GCC at -O2 leaves them as loops over a stack array).
template <class F, int R, int C>
void tile(int64_t nb, const uint8_t* w, size_t wrb, const uint8_t* a, size_t arb, float* out, size_t rs, size_t cs) {
  __m256 acc[R][C];
  __m128 summ[R][C];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      acc[r][c] = _mm256_setzero_ps();
      summ[r][c] = _mm_setzero_ps();
    }
  for (int64_t i = 0; i < nb; ++i) {
    Act ap[C];
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) ap[c] = F::prep_a(reinterpret_cast<const typename F::AB*>(a + c * arb)[i]);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const Wt wp = F::prep_w(reinterpret_cast<const typename F::WB*>(w + r * wrb)[i]);
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) accumulate<F>(wp, ap[c], acc[r][c], summ[r][c]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) out[r * rs + c * cs] = hsum(acc[r][c]) + (F::kMin ? min_term(summ[r][c]) : 0.0f);
}

#if defined(__AVX512F__)
constexpr int kTileR = 4, kTileC = 4;  // 16 accumulators fit in the 32 vector registers
#else
constexpr int kTileR = 2, kTileC = 2;
#endif
constexpr int kTileMaxCols = 64;

template <class F>
void tile_dot(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, size_t arb, int n_cols, float* out,
              size_t rs, size_t cs) {
  const int64_t nb = n / 32;
  const auto* wb = static_cast<const uint8_t*>(w);
  const auto* ab = static_cast<const uint8_t*>(a);
  if (n_cols > kTileMaxCols) {  // keeps the activations a pass over the rows reads in L2
    for (int c = 0; c < n_cols; c += kTileMaxCols)
      tile_dot<F>(n, w, wrb, n_rows, ab + size_t(c) * arb, arb, std::min(kTileMaxCols, n_cols - c), out + size_t(c) * cs,
               rs, cs);
    return;
  }
  int r = 0;
  for (; r + kTileR <= n_rows; r += kTileR) {
    int c = 0;
    for (; c + kTileC <= n_cols; c += kTileC) tile<F, kTileR, kTileC>(nb, wb + r * wrb, wrb, ab + c * arb, arb, out + r * rs + c * cs, rs, cs);
    for (; c < n_cols; ++c) tile<F, kTileR, 1>(nb, wb + r * wrb, wrb, ab + c * arb, arb, out + r * rs + c * cs, rs, cs);
  }
  for (; r < n_rows; ++r) {
    int c = 0;
    for (; c + kTileC <= n_cols; c += kTileC) tile<F, 1, kTileC>(nb, wb + r * wrb, wrb, ab + c * arb, arb, out + r * rs + c * cs, rs, cs);
    for (; c < n_cols; ++c) tile<F, 1, 1>(nb, wb + r * wrb, wrb, ab + c * arb, arb, out + r * rs + c * cs, rs, cs);
  }
}

#if STRATA_VNNI
// ---- prompt processing on packed rows (Q4_0, Q5_0, Q8_0): weights as s8, activations as the u8
// operand a + 128; the 128 * sum(w) this adds is subtracted up front. Blocks are accumulated in
// the scalar reference's order without FMA, so results equal it bit for bit.

struct PackedBlock8 {
  __m256i q[8];  // q[k], lane r: values 4k .. 4k+3 of row r's block
  __m256i corr;  // -128 * sum of row r's block values
  __m256 d;      // row r's block scale
};

template <class F>
struct PackS8 {
  using Block = PackedBlock8;
  static constexpr int kElems = 32;
  static constexpr int kChunk = 32;  // 2 x 32 x 320 bytes of packed weights

  // Blocks b0 .. b0 + nb of n_rows <= 8 rows (missing rows are zero) to out[b * stride].
  static void pack(const uint8_t* w, size_t wrb, int n_rows, int64_t b0, int nb, Block* out, int stride) {
    const __m256i ones = _mm256_set1_epi8(1);
    for (int b = 0; b < nb; ++b) {
      __m256i rows[8];
      alignas(32) float d[8];
      for (int r = 0; r < 8; ++r) {
        if (r < n_rows) {
          const auto& blk = reinterpret_cast<const typename F::WB*>(w + size_t(r) * wrb)[b0 + b];
          rows[r] = F::s8(blk);
          d[r] = h2f(blk.d);
        } else {
          rows[r] = _mm256_setzero_si256();
          d[r] = 0;
        }
      }
      Block& p = out[size_t(b) * size_t(stride)];
      transpose8x8_i32(rows, p.q);
      __m256i sum = _mm256_setzero_si256();
      for (int k = 0; k < 8; ++k) sum = _mm256_dpbusd_epi32(sum, ones, p.q[k]);
      p.corr = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(sum, 7));
      p.d = _mm256_load_ps(d);
    }
  }

  template <int G, int C>
  static void cols(const Block* pk, int nb, const uint8_t* a, size_t arb, int64_t b0, float* acc) {
    __m256 fa[C][G];
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c)
#pragma GCC unroll 2
      for (int g = 0; g < G; ++g) fa[c][g] = _mm256_load_ps(acc + c * kPackRows + 8 * g);
    const __m256i x80 = _mm256_set1_epi8(char(0x80));
    for (int b = 0; b < nb; ++b) {
      const BlockQ8_0* y[C];
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) y[c] = reinterpret_cast<const BlockQ8_0*>(a + size_t(c) * arb) + b0 + b;
      const Block* pb = pk + size_t(b) * G;
      __m256i ia[C][G];
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c)
#pragma GCC unroll 2
        for (int g = 0; g < G; ++g) ia[c][g] = pb[g].corr;
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) {
        __m256i wq[G];
#pragma GCC unroll 2
        for (int g = 0; g < G; ++g) wq[g] = _mm256_load_si256(&pb[g].q[k]);
#pragma GCC unroll 8
        for (int c = 0; c < C; ++c) {
          const __m256i av = _mm256_xor_si256(bcast32(y[c]->qs + 4 * k), x80);
#pragma GCC unroll 2
          for (int g = 0; g < G; ++g) ia[c][g] = _mm256_dpbusd_epi32(ia[c][g], av, wq[g]);
        }
      }
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) {
        const __m256 da = _mm256_set1_ps(h2f(y[c]->d));
#pragma GCC unroll 2
        for (int g = 0; g < G; ++g)
          fa[c][g] = _mm256_add_ps(fa[c][g], no_contract(_mm256_mul_ps(_mm256_cvtepi32_ps(ia[c][g]), _mm256_mul_ps(pb[g].d, da))));
      }
    }
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c)
#pragma GCC unroll 2
      for (int g = 0; g < G; ++g) _mm256_store_ps(acc + c * kPackRows + 8 * g, fa[c][g]);
  }
};
#endif

// ---- activation quantizers: 127 / amax and round half to even (the default MXCSR mode), as
// ggml's x86 quantize_row_q8_0 / q8_1.

inline float block_absmax(const float* x, __m256 v[4]) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 m = _mm256_setzero_ps();
  for (int k = 0; k < 4; ++k) {
    v[k] = _mm256_loadu_ps(x + 8 * k);
    m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[k]));
  }
  __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
  return _mm_cvtss_f32(m4);
}

// Rounds v * id to int32 and packs to 32 int8 in order; returns the int32 lanes' sum vector.
inline __m256i quantize_32(__m256 v[4], float id, int8_t* out) {
  const __m256 mul = _mm256_set1_ps(id);
  __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v[0], mul));
  __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v[1], mul));
  __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v[2], mul));
  __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v[3], mul));
  const __m256i sum = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
  i0 = _mm256_packs_epi32(i0, i1);
  i2 = _mm256_packs_epi32(i2, i3);
  i0 = _mm256_packs_epi16(i0, i2);
  i0 = _mm256_permutevar8x32_epi32(i0, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), i0);
  return sum;
}

void quantize_act_q8_0(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<BlockQ8_0*>(dst);
  for (int64_t i = 0; i < n / kQK8_0; ++i, x += kQK8_0) {
    __m256 v[4];
    const float amax = block_absmax(x, v);
    y[i].d = f32_to_fp16(amax / 127.f);
    quantize_32(v, amax != 0.0f ? 127.f / amax : 0.0f, y[i].qs);
  }
}

void quantize_act_q8_1(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<BlockQ8_1*>(dst);
  for (int64_t i = 0; i < n / kQK8_1; ++i, x += kQK8_1) {
    __m256 v[4];
    const float amax = block_absmax(x, v);
    const float d = amax / 127.f;
    y[i].d = f32_to_fp16(d);
    const int sum = hsum_i32(quantize_32(v, amax != 0.0f ? 127.f / amax : 0.0f, y[i].qs));
    y[i].s = f32_to_fp16(d * float(sum));
  }
}

// ---- dequantize (same products as the scalar reference: float(q) * d)

inline void store_scaled_i8x32(__m256i q, float d, float* y) {
  const __m256 vd = _mm256_set1_ps(d);
  const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
  _mm256_storeu_ps(y + 0, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), vd));
  _mm256_storeu_ps(y + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), vd));
  _mm256_storeu_ps(y + 16, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), vd));
  _mm256_storeu_ps(y + 24, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), vd));
}

void dequantize_q4_0(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const BlockQ4_0*>(src);
  for (int64_t i = 0; i < n / kQK4_0; ++i, y += kQK4_0)
    store_scaled_i8x32(_mm256_sub_epi8(nibbles_32(x[i].qs), _mm256_set1_epi8(8)), h2f(x[i].d), y);
}

void dequantize_q5_0(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const BlockQ5_0*>(src);
  for (int64_t i = 0; i < n / kQK5_0; ++i, y += kQK5_0) {
    const __m256i hi = _mm256_andnot_si256(bytes_from_bits_32(x[i].qh), _mm256_set1_epi8(char(0xF0)));
    store_scaled_i8x32(_mm256_or_si256(nibbles_32(x[i].qs), hi), h2f(x[i].d), y);
  }
}

void dequantize_q8_0(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const BlockQ8_0*>(src);
  for (int64_t i = 0; i < n / kQK8_0; ++i, y += kQK8_0) store_scaled_i8x32(load256(x[i].qs), h2f(x[i].d), y);
}

}  // namespace

void register_legacy(KernelTable& t) {
  t[DType::Q4_0].dequantize = dequantize_q4_0;
  t[DType::Q4_0].vec_dot = vec_dot<FamQ4_0>;
#if STRATA_VNNI
  t[DType::Q4_0].tile_dot = packed_tile_dot<PackS8<FamQ4_0>>;
  t[DType::Q5_0].tile_dot = packed_tile_dot<PackS8<FamQ5_0>>;
  t[DType::Q8_0].tile_dot = packed_tile_dot<PackS8<FamQ8_0>>;
#else
  t[DType::Q4_0].tile_dot = tile_dot<FamQ4_0>;
  t[DType::Q5_0].tile_dot = tile_dot<FamQ5_0>;
  t[DType::Q8_0].tile_dot = tile_dot<FamQ8_0>;
#endif
  t[DType::Q4_1].vec_dot = vec_dot<FamQ4_1>;
  t[DType::Q4_1].tile_dot = tile_dot<FamQ4_1>;
  t[DType::Q5_0].dequantize = dequantize_q5_0;
  t[DType::Q5_0].vec_dot = vec_dot<FamQ5_0>;
  t[DType::Q5_1].vec_dot = vec_dot<FamQ5_1>;
  t[DType::Q5_1].tile_dot = tile_dot<FamQ5_1>;
  t[DType::Q8_0].dequantize = dequantize_q8_0;
  t[DType::Q8_0].vec_dot = vec_dot<FamQ8_0>;
  t[DType::Q8_0].quantize_activation = quantize_act_q8_0;
  t[DType::Q8_1].quantize_activation = quantize_act_q8_1;
}

}  // namespace strata::kernels::STRATA_ISA

#undef STRATA_VNNI
