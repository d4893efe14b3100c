// Q2_K .. Q6_K and Q8_K on x86: the body of quant_k_avx2.cpp and quant_k_avx512.cpp.
// Weights are unpacked to u8 (offsets folded into the activation block sums, bsums), multiplied
// with vpmaddubsw and scaled per sub-block in int16 with vpmaddwd / vpdpwssd (VNNI); with VNNI,
// Q4_K and Q6_K take vpdpbusd, pack two sub-blocks of int32 dots to int16 and scale them at once.
// Fixed-count inner loops carry `#pragma GCC unroll`: at -O2 GCC keeps them as loops and rebuilds
// the scale shuffle masks on every pass, which cost 1.5x (vec_dot) to 2x (tiles).
#include <immintrin.h>

#include <algorithm>

#include "tensor/kernels_impl.h"

#if !defined(STRATA_ISA)
#error "define STRATA_ISA (avx2 or avx512) before including quant_k_x86.h"
#endif

// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized in _mm512_cvtepi32_ps / _mm512_inserti64x4.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace strata::kernels::STRATA_ISA {
namespace {

#include "tensor/simd_x86.h"

// Shuffle masks: bytes 2p x 8 then 2p+1 x 8 (the scales of sub-blocks 2p and 2p+1 of 16).
alignas(16) constexpr uint8_t kPairMask[8][16] = {
    {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1},         {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3},
    {4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5},         {6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7},
    {8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9},         {10, 10, 10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 11, 11, 11, 11},
    {12, 12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13, 13}, {14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 15},
};

// int16 scale vector for 32 elements spanning sub-blocks 2p, 2p+1 (16 each) from 16 int8 scales.
inline __m256i scale_pair(__m128i sc8, int p) {
  return _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, _mm_load_si128(reinterpret_cast<const __m128i*>(kPairMask[p]))));
}

// int16 broadcast of scale j from 8 int16 scales duplicated in both 128-bit lanes.
inline __m256i scale_bcast(__m256i sc16, int j) { return _mm256_shuffle_epi8(sc16, _mm256_set1_epi16(short(((2 * j + 1) << 8) | (2 * j)))); }

inline __m256i load_bsums(const BlockQ8_K& b) { return load256(b.bsums); }

// ---- Q4_K

struct Q4KScales {
  __m256i sc16;  // 8 scales as int16, both lanes
  __m128i m16;   // 8 mins as int16
};

inline Q4KScales q4k_scales(const uint8_t* packed) {
  uint8_t sm[16];
  unpack_k4_scales(packed, sm);
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(sm));
  Q4KScales s;
  s.sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(v));
  s.m16 = _mm_cvtepu8_epi16(_mm_srli_si128(v, 8));
  return s;
}

// sum_j m_j * (bsums[2j] + bsums[2j+1])
inline int q4k_min_sum(__m128i m16, const BlockQ8_K& y) {
  const __m256i bs = load_bsums(y);
  const __m128i pairs = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
  __m128i p = _mm_madd_epi16(m16, pairs);
  p = _mm_add_epi32(p, _mm_unpackhi_epi64(p, p));
  p = _mm_add_epi32(p, _mm_shuffle_epi32(p, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(p);
}

// Scales (u8, 0..63) of one Q4_K / Q5_K block in bytes 0..7, mins in bytes 8..15, without a
// round trip through memory.
inline __m128i q4k_scales_u8(const uint8_t* packed) {
  constexpr uint32_t kmask1 = 0x3f3f3f3f, kmask2 = 0x0f0f0f0f, kmask3 = 0x03030303;
  uint32_t u[3];
  std::memcpy(u, packed, 12);
  const uint32_t u3 = ((u[2] >> 4) & kmask2) | (((u[1] >> 6) & kmask3) << 4);
  const uint32_t u1 = (u[2] & kmask2) | (((u[0] >> 6) & kmask3) << 4);
  return _mm_setr_epi32(int(u[0] & kmask1), int(u1), int(u[1] & kmask1), int(u3));
}

// m_j * (bsums[2j] + bsums[2j+1]) in 8 int32 lanes, from the mins in bytes 8..15 of v.
inline __m256i q4k_min_prod(__m128i v, const BlockQ8_K& y) {
  const __m128i m8 = _mm_shuffle_epi8(v, _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15));
  return _mm256_madd_epi16(_mm256_cvtepu8_epi16(m8), load_bsums(y));
}

// int16 scales for _mm256_packs_epi32 of sub-blocks 2k and 2k+1: [s_2k x 4, s_2k+1 x 4] per lane.
inline __m256i scale_quad(__m256i sc16, int k) {
  const int64_t lo = int64_t(0x0001000100010001ULL * uint64_t(((4 * k + 1) << 8) | (4 * k)));
  const int64_t hi = int64_t(0x0001000100010001ULL * uint64_t(((4 * k + 3) << 8) | (4 * k + 2)));
  return _mm256_shuffle_epi8(sc16, _mm256_set_epi64x(hi, lo, hi, lo));
}

float vec_dot_q4_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ4_K*>(w);
  const auto* y = static_cast<const BlockQ8_K*>(a);
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  __m256 acc = _mm256_setzero_ps(), acc_m = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float dy = y[i].d;
    const __m128i v = q4k_scales_u8(x[i].scales);
    const __m256i sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(v));
    const __m256i mins = q4k_min_prod(v, y[i]);
    const uint8_t* q4 = x[i].qs;
    const int8_t* q8 = y[i].qs;
    __m256i sumi0 = _mm256_setzero_si256(), sumi1 = _mm256_setzero_si256();
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    // Each int32 lane of a vpdpbusd holds 4 products of one sub-block (|sum| <= 15 * 128 * 4, exact in
    // int16): pack two sub-blocks to int16 and scale them with one vpdpwssd.
    const __m256i z = _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      const __m256i q = load256(q4 + 32 * k);
      const __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
      const __m256i p = _mm256_packs_epi32(_mm256_dpbusd_epi32(z, lo, load256(q8 + 64 * k)),
                                           _mm256_dpbusd_epi32(z, hi, load256(q8 + 64 * k + 32)));
      if (k & 1) sumi1 = _mm256_dpwssd_epi32(sumi1, p, scale_quad(sc16, k));
      else sumi0 = _mm256_dpwssd_epi32(sumi0, p, scale_quad(sc16, k));
    }
#else
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      const __m256i q = load256(q4 + 32 * k);
      const __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
      sumi0 = madd_acc(sumi0, _mm256_maddubs_epi16(lo, load256(q8 + 64 * k)), scale_bcast(sc16, 2 * k));
      sumi1 = madd_acc(sumi1, _mm256_maddubs_epi16(hi, load256(q8 + 64 * k + 32)), scale_bcast(sc16, 2 * k + 1));
    }
#endif
    acc = _mm256_fmadd_ps(_mm256_set1_ps(dy * h2f(x[i].d)), _mm256_cvtepi32_ps(_mm256_add_epi32(sumi0, sumi1)), acc);
    acc_m = _mm256_fmadd_ps(_mm256_set1_ps(dy * h2f(x[i].dmin)), _mm256_cvtepi32_ps(mins), acc_m);
  }
  return hsum(_mm256_sub_ps(acc, acc_m));
}

// ---- Q5_K

float vec_dot_q5_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ5_K*>(w);
  const auto* y = static_cast<const BlockQ8_K*>(a);
  const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
  __m256 acc = _mm256_setzero_ps();
  float acc_m = 0;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = y[i].d * h2f(x[i].d), dmin = y[i].d * h2f(x[i].dmin);
    const Q4KScales s = q4k_scales(x[i].scales);
    acc_m += dmin * float(q4k_min_sum(s.m16, y[i]));
    const uint8_t* q5 = x[i].qs;
    const int8_t* q8 = y[i].qs;
    const __m256i hbits = load256(x[i].qh);
    __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      const __m256i q = load256(q5 + 32 * k);
      const __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 2 * k), one), 4);
      const __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 2 * k + 1), one), 4);
      const __m256i lo = _mm256_or_si256(_mm256_and_si256(q, m4), h0);
      const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), h1);
      sumi = madd_acc(sumi, _mm256_maddubs_epi16(lo, load256(q8 + 64 * k)), scale_bcast(s.sc16, 2 * k));
      sumi = madd_acc(sumi, _mm256_maddubs_epi16(hi, load256(q8 + 64 * k + 32)), scale_bcast(s.sc16, 2 * k + 1));
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
  }
  return hsum(acc) - acc_m;
}

// ---- Q6_K

// -32 * sum_j scale_j * bsums_j, as int32 lanes to start the accumulator from.
inline __m256i q6k_offset(__m128i sc8, const BlockQ8_K& y) {
  const __m256i p = _mm256_madd_epi16(_mm256_cvtepi8_epi16(sc8), load_bsums(y));
  return _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(p, 5));
}

// The 4 x 32 six-bit values (u8, 0..63) of one 128-element half of a Q6_K block.
inline void q6k_unpack(const uint8_t* ql, const uint8_t* qh, __m256i q[4]) {
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i l0 = load256(ql), l1 = load256(ql + 32), h = load256(qh);
  q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(h, _mm256_set1_epi8(0x03)), 4));
  q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_slli_epi16(_mm256_and_si256(h, _mm256_set1_epi8(0x0C)), 2));
  q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(h, _mm256_set1_epi8(0x30)));
  q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                         _mm256_srli_epi16(_mm256_and_si256(h, _mm256_set1_epi8(char(0xC0))), 2));
}

// int16 scales for _mm256_packs_epi32 of the dots of pairs p and p+1 (sub-blocks 2p, 2p+1, 2p+2, 2p+3):
// [s_2p x 4, s_2p+2 x 4 | s_2p+1 x 4, s_2p+3 x 4].
inline __m256i scale_pack(__m128i sc8, int p) {
  const char a = char(2 * p), b = char(2 * p + 2), c = char(2 * p + 1), d = char(2 * p + 3);
  return _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, _mm_setr_epi8(a, a, a, a, b, b, b, b, c, c, c, c, d, d, d, d)));
}

float vec_dot_q6_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ6_K*>(w);
  const auto* y = static_cast<const BlockQ8_K*>(a);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = y[i].d * h2f(x[i].d);
    const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].scales));
    __m256i sumi = q6k_offset(sc8, y[i]);
#pragma GCC unroll 2
    for (int half = 0; half < 2; ++half) {
      __m256i q[4];
      q6k_unpack(x[i].ql + 64 * half, x[i].qh + 32 * half, q);
      const int8_t* q8 = y[i].qs + 128 * half;
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
      // int32 lanes 0-3 / 4-7 of a vpdpbusd hold 4 products of one sub-block (|sum| <= 63 * 128 * 4,
      // exact in int16): pack two such vectors to int16 and scale them with one vpdpwssd.
      const __m256i z = _mm256_setzero_si256();
#pragma GCC unroll 2
      for (int t = 0; t < 4; t += 2) {
        const __m256i p = _mm256_packs_epi32(_mm256_dpbusd_epi32(z, q[t], load256(q8 + 32 * t)),
                                             _mm256_dpbusd_epi32(z, q[t + 1], load256(q8 + 32 * t + 32)));
        sumi = _mm256_dpwssd_epi32(sumi, p, scale_pack(sc8, 4 * half + t));
      }
#else
#pragma GCC unroll 4
      for (int t = 0; t < 4; ++t)
        sumi = madd_acc(sumi, _mm256_maddubs_epi16(q[t], load256(q8 + 32 * t)), scale_pair(sc8, 4 * half + t));
#endif
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
  }
  return hsum(acc);
}

// ---- Q3_K

float vec_dot_q3_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ3_K*>(w);
  const auto* y = static_cast<const BlockQ8_K*>(a);
  const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = y[i].d * h2f(x[i].d);
    int8_t sc[16];
    unpack_q3_k_scales(x[i].scales, sc);
    const __m128i sc8 = _mm_sub_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc)), _mm_set1_epi8(32));
    // values are u - 4 with u in [0, 7]: start from -4 * sum_j scale_j * bsums_j
    const __m256i p = _mm256_madd_epi16(_mm256_cvtepi8_epi16(sc8), load_bsums(y[i]));
    __m256i sumi = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(p, 2));
    const __m256i hbits = load256(x[i].hmask);
#pragma GCC unroll 2
    for (int half = 0; half < 2; ++half) {
      const __m256i q2 = load256(x[i].qs + 32 * half);
      const int8_t* q8 = y[i].qs + 128 * half;
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(q2, 2 * j), m3);
        const __m256i hb = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 4 * half + j), one), 2);
        const __m256i u = _mm256_or_si256(lo, hb);
        sumi = madd_acc(sumi, _mm256_maddubs_epi16(u, load256(q8 + 32 * j)), scale_pair(sc8, 4 * half + j));
      }
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
  }
  return hsum(acc);
}

// ---- Q2_K

float vec_dot_q2_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ2_K*>(w);
  const auto* y = static_cast<const BlockQ8_K*>(a);
  const __m256i m3 = _mm256_set1_epi8(3);
  __m256 acc = _mm256_setzero_ps();
  float acc_m = 0;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = y[i].d * h2f(x[i].d), dmin = y[i].d * h2f(x[i].dmin);
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].scales));
    const __m128i sc8 = _mm_and_si128(packed, _mm_set1_epi8(0x0F));
    const __m128i mins8 = _mm_and_si128(_mm_srli_epi16(packed, 4), _mm_set1_epi8(0x0F));
    acc_m += dmin * float(hsum_i32(_mm256_madd_epi16(_mm256_cvtepu8_epi16(mins8), load_bsums(y[i]))));
    __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 2
    for (int half = 0; half < 2; ++half) {
      const __m256i q2 = load256(x[i].qs + 32 * half);
      const int8_t* q8 = y[i].qs + 128 * half;
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        const __m256i u = _mm256_and_si256(_mm256_srli_epi16(q2, 2 * j), m3);
        sumi = madd_acc(sumi, _mm256_maddubs_epi16(u, load256(q8 + 32 * j)), scale_pair(sc8, 4 * half + j));
      }
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
  }
  return hsum(acc) - acc_m;
}

// ---- tiles: R weight rows x C activation columns per pass over the blocks

#if defined(__AVX512F__)
constexpr int kTileR = 4, kTileC = 4;
#else
constexpr int kTileR = 1, kTileC = 4;
#endif
constexpr int kTileMaxCols = 64;

template <int R, int C>
void tile_q4_k(int64_t nb, const uint8_t* w, size_t wrb, const uint8_t* a, size_t arb, float* out, size_t rs, size_t cs) {
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  __m256 acc[R][C];
  float acc_m[R][C];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      acc[r][c] = _mm256_setzero_ps();
      acc_m[r][c] = 0;
    }
  for (int64_t i = 0; i < nb; ++i) {
    const BlockQ8_K* y[C];
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) y[c] = reinterpret_cast<const BlockQ8_K*>(a + c * arb) + i;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const BlockQ4_K& x = reinterpret_cast<const BlockQ4_K*>(w + r * wrb)[i];
      const Q4KScales s = q4k_scales(x.scales);
      const float dx = h2f(x.d), dmx = h2f(x.dmin);
      __m256i sumi[C];
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) {
        sumi[c] = _mm256_setzero_si256();
        acc_m[r][c] += dmx * y[c]->d * float(q4k_min_sum(s.m16, *y[c]));
      }
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
        const __m256i q = load256(x.qs + 32 * k);
        const __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        const __m256i s0 = scale_bcast(s.sc16, 2 * k), s1 = scale_bcast(s.sc16, 2 * k + 1);
#pragma GCC unroll 8
        for (int c = 0; c < C; ++c) {
          sumi[c] = madd_acc(sumi[c], _mm256_maddubs_epi16(lo, load256(y[c]->qs + 64 * k)), s0);
          sumi[c] = madd_acc(sumi[c], _mm256_maddubs_epi16(hi, load256(y[c]->qs + 64 * k + 32)), s1);
        }
      }
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c)
        acc[r][c] = _mm256_fmadd_ps(_mm256_set1_ps(dx * y[c]->d), _mm256_cvtepi32_ps(sumi[c]), acc[r][c]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) out[r * rs + c * cs] = hsum(acc[r][c]) - acc_m[r][c];
}

template <int R, int C>
void tile_q6_k(int64_t nb, const uint8_t* w, size_t wrb, const uint8_t* a, size_t arb, float* out, size_t rs, size_t cs) {
  __m256 acc[R][C];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const BlockQ8_K* y[C];
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) y[c] = reinterpret_cast<const BlockQ8_K*>(a + c * arb) + i;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const BlockQ6_K& x = reinterpret_cast<const BlockQ6_K*>(w + r * wrb)[i];
      const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x.scales));
      __m256i sumi[C];
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) sumi[c] = q6k_offset(sc8, *y[c]);
#pragma GCC unroll 2
      for (int half = 0; half < 2; ++half) {
        __m256i q[4];
        q6k_unpack(x.ql + 64 * half, x.qh + 32 * half, q);
#pragma GCC unroll 4
        for (int t = 0; t < 4; ++t) {
          const __m256i sv = scale_pair(sc8, 4 * half + t);
#pragma GCC unroll 8
          for (int c = 0; c < C; ++c)
            sumi[c] = madd_acc(sumi[c], _mm256_maddubs_epi16(q[t], load256(y[c]->qs + 128 * half + 32 * t)), sv);
        }
      }
      const float dx = h2f(x.d);
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c)
        acc[r][c] = _mm256_fmadd_ps(_mm256_set1_ps(dx * y[c]->d), _mm256_cvtepi32_ps(sumi[c]), acc[r][c]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) out[r * rs + c * cs] = hsum(acc[r][c]);
}

template <void (*Full)(int64_t, const uint8_t*, size_t, const uint8_t*, size_t, float*, size_t, size_t),
          void (*Rows)(int64_t, const uint8_t*, size_t, const uint8_t*, size_t, float*, size_t, size_t),
          void (*Cols)(int64_t, const uint8_t*, size_t, const uint8_t*, size_t, float*, size_t, size_t),
          void (*One)(int64_t, const uint8_t*, size_t, const uint8_t*, size_t, float*, size_t, size_t)>
void tile_dot(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, size_t arb, int n_cols, float* out,
              size_t rs, size_t cs) {
  const int64_t nb = n / kQK_K;
  const auto* wb = static_cast<const uint8_t*>(w);
  const auto* ab = static_cast<const uint8_t*>(a);
  if (n_cols > kTileMaxCols) {  // keeps the activations a pass over the rows reads in L2
    for (int c = 0; c < n_cols; c += kTileMaxCols)
      tile_dot<Full, Rows, Cols, One>(n, w, wrb, n_rows, ab + size_t(c) * arb, arb, std::min(kTileMaxCols, n_cols - c), out + size_t(c) * cs,
               rs, cs);
    return;
  }
  int r = 0;
  for (; r + kTileR <= n_rows; r += kTileR) {
    int c = 0;
    for (; c + kTileC <= n_cols; c += kTileC) Full(nb, wb + r * wrb, wrb, ab + c * arb, arb, out + r * rs + c * cs, rs, cs);
    for (; c < n_cols; ++c) Rows(nb, wb + r * wrb, wrb, ab + c * arb, arb, out + r * rs + c * cs, rs, cs);
  }
  for (; r < n_rows; ++r) {
    int c = 0;
    for (; c + kTileC <= n_cols; c += kTileC) Cols(nb, wb + r * wrb, wrb, ab + c * arb, arb, out + r * rs + c * cs, rs, cs);
    for (; c < n_cols; ++c) One(nb, wb + r * wrb, wrb, ab + c * arb, arb, out + r * rs + c * cs, rs, cs);
  }
}

#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
// ---- prompt processing on packed rows (see packed16_tile_dot): weights as u8 against broadcast s8
// activations, 16 rows per 512-bit register.
// Q4_K: per-sub-block integer dots are scaled with vpmulld and mins come from the activations'
// bsums, so every integer sum equals the scalar reference's, and the float epilogue (no FMA)
// follows its order: results equal vec_dot_q4_k's scalar reference bit for bit.
struct PackedQ4K16 {
  __m512i q[64];  // q[8j + k], lane r: values 4k .. 4k+3 of sub-block j of row r (u8, 0..15)
  __m512i sc[8];  // sc[j], lane r: scale of sub-block j (int32)
  __m512i m[8];   // m[j], lane r: min of sub-block j in both int16 halves
  __m512 d, dmin;
};

struct PackQ4K16 {
  using Block = PackedQ4K16;
  static constexpr int kElems = kQK_K;
  static constexpr int kChunk = 4;  // 4 x 5.1 KiB of packed weights
  static constexpr int kCols = 512;
  static constexpr int kAccPerCol = 16;
  static constexpr int kColTile = 8;  // 24 accumulators (C = 4: 0.9x)

  static void pack(const uint8_t* w, size_t wrb, int n_rows, int64_t b0, int nb, Block* out) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int b = 0; b < nb; ++b) {
      Block& p = out[b];
      alignas(64) int32_t sc[8][16], mn[8][16];
      alignas(64) float d[16], dmin[16];
      __m256i rows[8][16];  // [sub-block][row]
      for (int r = 0; r < 16; ++r) {
        if (r < n_rows) {
          const BlockQ4_K& x = reinterpret_cast<const BlockQ4_K*>(w + size_t(r) * wrb)[b0 + b];
          uint8_t sm[16];
          unpack_k4_scales(x.scales, sm);
          for (int j = 0; j < 8; ++j) {
            sc[j][r] = sm[j];
            mn[j][r] = sm[8 + j] | (sm[8 + j] << 16);
          }
          d[r] = h2f(x.d);
          dmin[r] = h2f(x.dmin);
          for (int k = 0; k < 4; ++k) {
            const __m256i q = load256(x.qs + 32 * k);
            rows[2 * k][r] = _mm256_and_si256(q, m4);
            rows[2 * k + 1][r] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
          }
        } else {
          for (int j = 0; j < 8; ++j) {
            sc[j][r] = mn[j][r] = 0;
            rows[j][r] = _mm256_setzero_si256();
          }
          d[r] = dmin[r] = 0;
        }
      }
      for (int j = 0; j < 8; ++j) {
        transpose16x8_i32(rows[j], p.q + 8 * j);
        p.sc[j] = _mm512_load_si512(sc[j]);
        p.m[j] = _mm512_load_si512(mn[j]);
      }
      p.d = _mm512_load_ps(d);
      p.dmin = _mm512_load_ps(dmin);
    }
  }

  template <int C>
  static void cols(const Block* pk, int nb, const uint8_t* a, size_t arb, int64_t b0, float* acc) {
    for (int b = 0; b < nb; ++b) {
      const BlockQ8_K* y[C];
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) y[c] = reinterpret_cast<const BlockQ8_K*>(a + size_t(c) * arb) + b0 + b;
      const Block& p = pk[b];
      __m512i isum[C], mins[C];
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) isum[c] = mins[c] = _mm512_setzero_si512();
#pragma GCC unroll 1
      for (int j = 0; j < 8; ++j) {
        __m512i s[C];
#pragma GCC unroll 8
        for (int c = 0; c < C; ++c) s[c] = _mm512_setzero_si512();
#pragma GCC unroll 8
        for (int k = 0; k < 8; ++k) {
          const __m512i wq = _mm512_load_si512(&p.q[8 * j + k]);
#pragma GCC unroll 8
          for (int c = 0; c < C; ++c) s[c] = _mm512_dpbusd_epi32(s[c], wq, bcast32_512(y[c]->qs + 32 * j + 4 * k));
        }
#pragma GCC unroll 8
        for (int c = 0; c < C; ++c) {
          isum[c] = _mm512_add_epi32(isum[c], _mm512_mullo_epi32(s[c], p.sc[j]));
          mins[c] = _mm512_dpwssd_epi32(mins[c], p.m[j], bcast32_512(y[c]->bsums + 2 * j));
        }
      }
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) {
        const __m512 da = _mm512_set1_ps(y[c]->d);
        float* o = acc + c * kAccPerCol;
        const __m512 t = no_contract512(_mm512_mul_ps(_mm512_mul_ps(da, p.d), _mm512_cvtepi32_ps(isum[c])));
        const __m512 u = no_contract512(_mm512_mul_ps(_mm512_mul_ps(da, p.dmin), _mm512_cvtepi32_ps(mins[c])));
        _mm512_store_ps(o, _mm512_add_ps(_mm512_load_ps(o), _mm512_sub_ps(t, u)));
      }
    }
  }

  static __m512 finish(const float* acc) { return _mm512_load_ps(acc); }
};

// Q6_K on packed rows, equal bit for bit to tile_q6_k (the register tiles the AVX2 path keeps):
// for each row it keeps tile_q6_k's 8 int32 lanes L (bytes 4L..4L+3 of each 32-value
// run, scaled per 16-value sub-block with vpmaddubsw + vpdpwssd) and their 8 float accumulators,
// and sums them in hsum's order at the end; only the rows move to the vector lanes. (A packed Q6_K
// that summed each block exactly, as Q4_K's does, moved Gemma 3's perplexity past
// test_fidelity_perplexity's 0.1% bound, which is below the noise of accumulation order.)
struct PackedQ6K16 {
  __m512i q[64];   // q[8m + L], m = 4 half + t, lane r: values 32m + 4L .. 32m + 4L + 3 of row r (u8, 0..63)
  __m512i sc[16];  // sc[j], lane r: scale j of row r in both int16 halves
  __m512i off[8];  // off[L], lane r: -32 * scale 2L, -32 * scale 2L+1 of row r (int16): the -32 offset
  __m512 d;        // lane r: d of row r
};

struct PackQ6K {
  using Block = PackedQ6K16;
  static constexpr int kElems = kQK_K;
  static constexpr int kChunk = 4;          // 4 x 5.6 KiB of packed weights
  static constexpr int kCols = 128;         // 64 KiB of accumulators
  static constexpr int kAccPerCol = 8 * 16;  // [lane L][row]
  static constexpr int kColTile = 8;

  static void pack(const uint8_t* w, size_t wrb, int n_rows, int64_t b0, int nb, Block* out) {
    for (int b = 0; b < nb; ++b) {
      Block& p = out[b];
      alignas(64) int32_t sc[16][16], off[8][16];
      alignas(64) float d[16];
      __m256i rows[8][16];  // [m][row]
      for (int r = 0; r < 16; ++r) {
        if (r < n_rows) {
          const BlockQ6_K& x = reinterpret_cast<const BlockQ6_K*>(w + size_t(r) * wrb)[b0 + b];
          __m256i q[4];
          for (int half = 0; half < 2; ++half) {
            q6k_unpack(x.ql + 64 * half, x.qh + 32 * half, q);
            for (int t = 0; t < 4; ++t) rows[4 * half + t][r] = q[t];
          }
          for (int j = 0; j < 16; ++j) sc[j][r] = int32_t(uint16_t(int16_t(x.scales[j])) * 0x00010001u);
          for (int l = 0; l < 8; ++l)
            off[l][r] = int32_t(uint32_t(uint16_t(int16_t(-32 * x.scales[2 * l]))) |
                                (uint32_t(uint16_t(int16_t(-32 * x.scales[2 * l + 1]))) << 16));
          d[r] = h2f(x.d);
        } else {
          for (int m = 0; m < 8; ++m) rows[m][r] = _mm256_setzero_si256();
          for (int j = 0; j < 16; ++j) sc[j][r] = 0;
          for (int l = 0; l < 8; ++l) off[l][r] = 0;
          d[r] = 0;
        }
      }
      for (int m = 0; m < 8; ++m) transpose16x8_i32(rows[m], p.q + 8 * m);
      for (int j = 0; j < 16; ++j) p.sc[j] = _mm512_load_si512(sc[j]);
      for (int l = 0; l < 8; ++l) p.off[l] = _mm512_load_si512(off[l]);
      p.d = _mm512_load_ps(d);
    }
  }

  template <int C>
  static void cols(const Block* pk, int nb, const uint8_t* a, size_t arb, int64_t b0, float* acc) {
    for (int b = 0; b < nb; ++b) {
      const BlockQ8_K* y[C];
      __m512 dd[C];
      const Block& p = pk[b];
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) {
        y[c] = reinterpret_cast<const BlockQ8_K*>(a + size_t(c) * arb) + b0 + b;
        dd[c] = _mm512_mul_ps(p.d, _mm512_set1_ps(y[c]->d));
      }
#pragma GCC unroll 1
      for (int l = 0; l < 8; ++l) {
        __m512i s[C];
#pragma GCC unroll 8
        for (int c = 0; c < C; ++c) s[c] = _mm512_dpwssd_epi32(_mm512_setzero_si512(), p.off[l], bcast32_512(y[c]->bsums + 2 * l));
        const int hi = l >= 4 ? 1 : 0;
#pragma GCC unroll 8
        for (int m = 0; m < 8; ++m) {
          const __m512i wq = _mm512_load_si512(&p.q[8 * m + l]);
          const __m512i sv = _mm512_load_si512(&p.sc[2 * m + hi]);
#pragma GCC unroll 8
          for (int c = 0; c < C; ++c)
            s[c] = _mm512_dpwssd_epi32(s[c], _mm512_maddubs_epi16(wq, bcast32_512(y[c]->qs + 32 * m + 4 * l)), sv);
        }
#pragma GCC unroll 8
        for (int c = 0; c < C; ++c) {
          float* o = acc + c * kAccPerCol + 16 * l;
          _mm512_store_ps(o, _mm512_fmadd_ps(dd[c], _mm512_cvtepi32_ps(s[c]), _mm512_load_ps(o)));
        }
      }
    }
  }

  // hsum's order over the 8 lanes: ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)).
  static __m512 finish(const float* acc) {
    __m512 a[8];
    for (int l = 0; l < 8; ++l) a[l] = _mm512_load_ps(acc + 16 * l);
    const __m512 e = _mm512_add_ps(_mm512_add_ps(a[0], a[4]), _mm512_add_ps(a[2], a[6]));
    const __m512 o = _mm512_add_ps(_mm512_add_ps(a[1], a[5]), _mm512_add_ps(a[3], a[7]));
    return _mm512_add_ps(e, o);
  }
};
#endif

// ---- Q8_K activations: quantize_row_q8_K_ref (iscale = -127 / signed max, round half to even)

void quantize_q8_k(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<BlockQ8_K*>(dst);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    __m256 m = _mm256_setzero_ps();
    for (int k = 0; k < kQK_K; k += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + k)));
    __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    if (!amax) {
      std::memset(&y[i], 0, sizeof(BlockQ8_K));
      continue;
    }
    // the first element of largest magnitude gives the sign
    float max = 0;
    const __m256 vamax = _mm256_set1_ps(amax);
    for (int k = 0; k < kQK_K; k += 8) {
      const int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + k)), vamax, _CMP_EQ_OQ));
      if (mask) {
        max = x[k + __builtin_ctz(unsigned(mask))];
        break;
      }
    }
    const float iscale = -127.f / max;
    const __m256 mul = _mm256_set1_ps(iscale);
    for (int k = 0; k < kQK_K; k += 32) {
      __m256i v[4];
#pragma GCC unroll 4
      for (int t = 0; t < 4; ++t)
        v[t] = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k + 8 * t), mul)), _mm256_set1_epi32(127));
      y[i].bsums[k / 16] = int16_t(hsum_i32(_mm256_add_epi32(v[0], v[1])));
      y[i].bsums[k / 16 + 1] = int16_t(hsum_i32(_mm256_add_epi32(v[2], v[3])));
      __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
      p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(y[i].qs + k), p);
    }
    y[i].d = 1 / iscale;
  }
}

// ---- dequantize (products in the scalar reference's order, never fused)

void dequantize_q4_k(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const BlockQ4_K*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = h2f(x[i].d), min = h2f(x[i].dmin);
    uint8_t sm[16];
    unpack_k4_scales(x[i].scales, sm);
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].qs + 32 * k));
      const __m128i q1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].qs + 32 * k + 16));
      for (int h = 0; h < 2; ++h) {
        const __m256 vd = _mm256_set1_ps(d * sm[2 * k + h]), vm = _mm256_set1_ps(min * sm[8 + 2 * k + h]);
        const __m128i m4 = _mm_set1_epi8(0x0F);
        const __m128i a0 = h ? _mm_and_si128(_mm_srli_epi16(q, 4), m4) : _mm_and_si128(q, m4);
        const __m128i a1 = h ? _mm_and_si128(_mm_srli_epi16(q1, 4), m4) : _mm_and_si128(q1, m4);
        const __m128i parts[4] = {a0, _mm_srli_si128(a0, 8), a1, _mm_srli_si128(a1, 8)};
#pragma GCC unroll 4
        for (int p = 0; p < 4; ++p) {
          const __m256 v = no_contract(_mm256_mul_ps(vd, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(parts[p]))));
          _mm256_storeu_ps(y + 8 * p, _mm256_sub_ps(v, vm));
        }
        y += 32;
      }
    }
  }
}

void dequantize_q6_k(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const BlockQ6_K*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = h2f(x[i].d);
#pragma GCC unroll 2
    for (int half = 0; half < 2; ++half) {
      __m256i q[4];
      q6k_unpack(x[i].ql + 64 * half, x[i].qh + 32 * half, q);
#pragma GCC unroll 4
      for (int t = 0; t < 4; ++t) {
        const __m256i s = _mm256_sub_epi8(q[t], _mm256_set1_epi8(32));
        const __m128i lo = _mm256_castsi256_si128(s), hi = _mm256_extracti128_si256(s, 1);
        const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
#pragma GCC unroll 4
        for (int p = 0; p < 4; ++p) {
          const __m256 ds = _mm256_set1_ps(d * x[i].scales[8 * half + 2 * t + p / 2]);
          _mm256_storeu_ps(y + 8 * p, _mm256_mul_ps(ds, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(parts[p]))));
        }
        y += 32;
      }
    }
  }
}

}  // namespace

void register_k(KernelTable& t) {
  t[DType::Q2_K].vec_dot = vec_dot_q2_k;
  t[DType::Q3_K].vec_dot = vec_dot_q3_k;
  t[DType::Q4_K].vec_dot = vec_dot_q4_k;
  t[DType::Q4_K].dequantize = dequantize_q4_k;
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  t[DType::Q4_K].tile_dot = packed16_tile_dot<PackQ4K16>;
#else
  t[DType::Q4_K].tile_dot =
      tile_dot<tile_q4_k<kTileR, kTileC>, tile_q4_k<kTileR, 1>, tile_q4_k<1, kTileC>, tile_q4_k<1, 1>>;
#endif
  t[DType::Q5_K].vec_dot = vec_dot_q5_k;
  t[DType::Q6_K].vec_dot = vec_dot_q6_k;
  t[DType::Q6_K].dequantize = dequantize_q6_k;
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  t[DType::Q6_K].tile_dot = packed16_tile_dot<PackQ6K>;
#else
  t[DType::Q6_K].tile_dot =
      tile_dot<tile_q6_k<kTileR, kTileC>, tile_q6_k<kTileR, 1>, tile_q6_k<1, kTileC>, tile_q6_k<1, 1>>;
#endif
  t[DType::Q8_K].quantize = quantize_q8_k;
  t[DType::Q8_K].quantize_activation = quantize_q8_k;
}

}  // namespace strata::kernels::STRATA_ISA

#pragma GCC diagnostic pop
