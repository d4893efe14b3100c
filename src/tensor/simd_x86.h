// x86 SIMD helpers shared by the *_x86.h family bodies. Included inside an anonymous namespace of
// the per-path namespace (avx2 / avx512), so each path gets its own copies compiled with its flags.
// Integer dots use VNNI (vpdpbusd / vpdpwssd on 256-bit registers) when the file is built for it.

inline float hsum(__m256 x) {
  __m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}

inline int hsum_i32(__m256i a) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
  s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

// acc + sums of 4 adjacent u8 * s8 products per int32 lane. Without VNNI the pairwise int16 sums
// must not saturate (callers keep u <= 127 or |u * s| small enough).
inline __m256i dot_u8s8(__m256i acc, __m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(acc, u, s);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

// Sums of 4 adjacent s8 * s8 products per int32 lane (x != -128).
inline __m256i dot_s8s8(__m256i x, __m256i y) {
  return dot_u8s8(_mm256_setzero_si256(), _mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
}

// Sums of 4 adjacent (u - off) * s products, u and off in [0, 127].
inline __m256i dot_u8s8_offset(__m256i u, __m256i s, __m256i off) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  const __m256i z = _mm256_setzero_si256();
  return _mm256_sub_epi32(_mm256_dpbusd_epi32(z, u, s), _mm256_dpbusd_epi32(z, off, s));
#else
  const __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(u, s), _mm256_maddubs_epi16(off, s));
  return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
#endif
}

// acc + pairwise int16 products summed to int32.
inline __m256i madd_acc(__m256i acc, __m256i a16, __m256i b16) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpwssd_epi32(acc, a16, b16);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(a16, b16));
#endif
}

// 32 bits to 32 bytes of 0x00 / 0xFF.
inline __m256i bytes_from_bits_32(const uint8_t* p) {
  uint32_t x32;
  std::memcpy(&x32, p, 4);
  const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
  __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(int(x32)), shuf);
  bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
  return _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
}

// 16 bytes of nibbles to 32 bytes: low nibbles first, then high nibbles.
inline __m256i nibbles_32(const uint8_t* p) {
  const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m256i b = _mm256_inserti128_si256(_mm256_castsi128_si256(t), _mm_srli_epi16(t, 4), 1);
  return _mm256_and_si256(b, _mm256_set1_epi8(0x0F));
}

inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// Keeps the compiler from fusing a product into a following add (dequantize must round like the
// scalar reference, which has no FMA).
inline __m256 no_contract(__m256 x) {
  __asm__("" : "+x"(x));
  return x;
}

#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
inline __m512 no_contract512(__m512 x) {
  __asm__("" : "+v"(x));
  return x;
}

// ---- prompt processing on weights repacked 8 rows at a time (VNNI). Int32 lane r of a packed
// vector holds 4 consecutive values of row r, so one vpdpbusd against 4 broadcast activation bytes
// advances 8 row dots, and scaling costs one multiply-add per 8 (row, column) pairs instead of a
// horizontal sum per pair. Each call packs 16 rows per K chunk once and reuses them for every column.

// Activation bytes of one pass over the columns: the panel stays in L2 (2 MiB a core on the machines
// measured) while every row group of the call passes it; a panel of the whole prompt's columns
// (2.4 MiB at K = 4096, 8 MiB at 14336) went to L3 for every 16 rows.
constexpr size_t kPanelBytes = size_t(1) << 20;

constexpr int kPackRows = 16;  // two groups of 8 rows
constexpr int kPackCols = 512;  // columns per pass (their accumulators live in a 32 KiB stack buffer)

// 8 rows of 8 int32 to 8 vectors of one int32 from each row (out[g] lane r = rows[r] int32 g).
inline void transpose8x8_i32(const __m256i r[8], __m256i out[8]) {
  __m256i t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int h = 0; h < 2; ++h) {
    u[4 * h + 0] = _mm256_unpacklo_epi64(t[4 * h], t[4 * h + 2]);
    u[4 * h + 1] = _mm256_unpackhi_epi64(t[4 * h], t[4 * h + 2]);
    u[4 * h + 2] = _mm256_unpacklo_epi64(t[4 * h + 1], t[4 * h + 3]);
    u[4 * h + 3] = _mm256_unpackhi_epi64(t[4 * h + 1], t[4 * h + 3]);
  }
  for (int g = 0; g < 4; ++g) {
    out[g] = _mm256_permute2x128_si256(u[g], u[4 + g], 0x20);
    out[g + 4] = _mm256_permute2x128_si256(u[g], u[4 + g], 0x31);
  }
}

inline __m256i bcast32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// P packs blocks of 8 rows (P::Block, P::kElems elements, P::kChunk of them per K chunk) and
// accumulates C columns against G groups of 8 packed rows: acc[c * kPackRows + 8 * g + r].
template <class P>
void packed_tile_dot(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, size_t arb, int n_cols,
                     float* out, size_t rs, size_t cs) {
  const auto* wb = static_cast<const uint8_t*>(w);
  const auto* ab = static_cast<const uint8_t*>(a);
  const int panel = std::min(kPackCols, std::max(4, int(kPanelBytes / arb) / 4 * 4));  // see kPanelBytes
  if (n_cols > panel) {
    for (int c = 0; c < n_cols; c += panel)
      packed_tile_dot<P>(n, w, wrb, n_rows, ab + size_t(c) * arb, arb, std::min(panel, n_cols - c),
                         out + size_t(c) * cs, rs, cs);
    return;
  }
  const int64_t nb = n / P::kElems;
  alignas(64) typename P::Block pk[P::kChunk * 2];
  alignas(64) float acc[kPackCols * kPackRows];
  for (int r0 = 0; r0 < n_rows; r0 += kPackRows) {
    const int nr = std::min(kPackRows, n_rows - r0);
    const int groups = nr > 8 ? 2 : 1;
    std::memset(acc, 0, sizeof(float) * size_t(n_cols) * kPackRows);
    for (int64_t b0 = 0; b0 < nb; b0 += P::kChunk) {
      const int nbk = int(std::min<int64_t>(P::kChunk, nb - b0));
      for (int g = 0; g < groups; ++g)
        P::pack(wb + size_t(r0 + 8 * g) * wrb, wrb, std::min(8, nr - 8 * g), b0, nbk, pk + g, groups);
      int c = 0;
      if (groups == 2) {
        for (; c + 4 <= n_cols; c += 4) P::template cols<2, 4>(pk, nbk, ab + size_t(c) * arb, arb, b0, acc + c * kPackRows);
        for (; c < n_cols; ++c) P::template cols<2, 1>(pk, nbk, ab + size_t(c) * arb, arb, b0, acc + c * kPackRows);
      } else {
        for (; c + 4 <= n_cols; c += 4) P::template cols<1, 4>(pk, nbk, ab + size_t(c) * arb, arb, b0, acc + c * kPackRows);
        for (; c < n_cols; ++c) P::template cols<1, 1>(pk, nbk, ab + size_t(c) * arb, arb, b0, acc + c * kPackRows);
      }
    }
    if (rs == 1 && nr == kPackRows) {  // [column][row] output, as matmul's: two vector stores a column
      for (int c = 0; c < n_cols; ++c) {
        float* o = out + size_t(r0) + size_t(c) * cs;
        _mm256_storeu_ps(o, _mm256_load_ps(acc + c * kPackRows));
        _mm256_storeu_ps(o + 8, _mm256_load_ps(acc + c * kPackRows + 8));
      }
    } else {
      for (int c = 0; c < n_cols; ++c)
        for (int r = 0; r < nr; ++r) out[size_t(r0 + r) * rs + size_t(c) * cs] = acc[c * kPackRows + r];
    }
  }
}

// ---- the same on 512-bit registers: int32 lane r of a packed __m512i holds 4 values of row r of
// 16, so one instruction advances 16 row dots. P::Block packs 16 rows of one block; P::cols<C>
// (C = P::kColTile, or 1 for the last columns) accumulates C columns into P::kAccPerCol floats per column, and P::finish turns a column's
// accumulators into its 16 row results (at most P::kCols columns per pass).
inline __m512i bcast32_512(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// Two 8 x 8 int32 transposes (rows 0-7 and 8-15) joined: out[g] lane r = rows[r] int32 g.
inline void transpose16x8_i32(const __m256i rows[16], __m512i out[8]) {
  __m256i lo[8], hi[8];
  transpose8x8_i32(rows, lo);
  transpose8x8_i32(rows + 8, hi);
  for (int g = 0; g < 8; ++g) out[g] = _mm512_inserti64x4(_mm512_castsi256_si512(lo[g]), hi[g], 1);
}

template <class P>
void packed16_tile_dot(int64_t n, const void* w, size_t wrb, int n_rows, const void* a, size_t arb, int n_cols,
                       float* out, size_t rs, size_t cs) {
  const auto* wb = static_cast<const uint8_t*>(w);
  const auto* ab = static_cast<const uint8_t*>(a);
  const int panel = std::min(P::kCols, std::max(P::kColTile, int(kPanelBytes / arb) / P::kColTile * P::kColTile));
  if (n_cols > panel) {
    for (int c = 0; c < n_cols; c += panel)
      packed16_tile_dot<P>(n, w, wrb, n_rows, ab + size_t(c) * arb, arb, std::min(panel, n_cols - c),
                           out + size_t(c) * cs, rs, cs);
    return;
  }
  const int64_t nb = n / P::kElems;
  alignas(64) typename P::Block pk[P::kChunk];
  alignas(64) float acc[P::kCols * P::kAccPerCol];
  for (int r0 = 0; r0 < n_rows; r0 += 16) {
    const int nr = std::min(16, n_rows - r0);
    std::memset(acc, 0, sizeof(float) * size_t(n_cols) * P::kAccPerCol);
    for (int64_t b0 = 0; b0 < nb; b0 += P::kChunk) {
      const int nbk = int(std::min<int64_t>(P::kChunk, nb - b0));
      P::pack(wb + size_t(r0) * wrb, wrb, nr, b0, nbk, pk);
      int c = 0;
      for (; c + P::kColTile <= n_cols; c += P::kColTile)
        P::template cols<P::kColTile>(pk, nbk, ab + size_t(c) * arb, arb, b0, acc + c * P::kAccPerCol);
      for (; c < n_cols; ++c) P::template cols<1>(pk, nbk, ab + size_t(c) * arb, arb, b0, acc + c * P::kAccPerCol);
    }
    for (int c = 0; c < n_cols; ++c) {
      const __m512 v = P::finish(acc + c * P::kAccPerCol);
      if (rs == 1 && nr == 16) {  // [column][row] output, as matmul's
        _mm512_storeu_ps(out + size_t(r0) + size_t(c) * cs, v);
      } else {
        alignas(64) float t[16];
        _mm512_store_ps(t, v);
        for (int r = 0; r < nr; ++r) out[size_t(r0 + r) * rs + size_t(c) * cs] = t[r];
      }
    }
  }
}
#endif
