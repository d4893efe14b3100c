#pragma once
// Every quantized type read as 32-element chunks of small integers with per-half scales: element
// i of chunk c of a row is d[i / 16] * q[i] + m[i / 16], q packed four to an int (byte k of q[j] =
// element 4j + k, each in [-128, 127]). The CUDA matvec dots q with int8 activations (dp4a), the
// prompt path dequantizes through it, and both therefore share one decoding of each block layout,
// written once here for the device and the host: tests/backend checks it against src/tensor's
// dequantize on any machine.
//
// Chunk c of a row: block c / chunks_per_block, sub-chunk s = c % chunks_per_block.
#include <cstdint>

#include "tensor/blocks.h"

#if defined(__CUDACC__)
#define STRATA_HD __host__ __device__ __forceinline__
#else
#define STRATA_HD inline
#endif

namespace strata::backend::chunks {

struct Chunk {
  int32_t q[8];
  float d[2];
  float m[2];
};

STRATA_HD float half_to_float(uint16_t h) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(h));
#else
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1F, mant = h & 0x3FF, bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      exp = 127 - 15 + 1;
      while (!(mant & 0x400)) {
        mant <<= 1;
        --exp;
      }
      bits = sign | (exp << 23) | ((mant & 0x3FF) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7F800000 | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
#endif
}

// Four bytes at a 2-byte aligned address (blocks of 18, 22, 34, 110, 210 bytes).
STRATA_HD int32_t load_b2(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
  const uint16_t* h = reinterpret_cast<const uint16_t*>(p);
  return int32_t(uint32_t(h[0]) | (uint32_t(h[1]) << 16));
#else
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  return v;
#endif
}
// Four bytes at a 4-byte aligned address (blocks of 84, 144, 176 bytes).
STRATA_HD int32_t load_b4(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const int32_t*>(p);
#else
  return load_b2(p);
#endif
}

// Bit k (k < 4) of `bits` to bit `pos` of byte k.
STRATA_HD int32_t spread4(uint32_t bits, int pos) {
  return int32_t((((bits >> 0) & 1u) << pos) | (((bits >> 1) & 1u) << (pos + 8)) | (((bits >> 2) & 1u) << (pos + 16)) |
                 (((bits >> 3) & 1u) << (pos + 24)));
}

STRATA_HD void set_scale(Chunk& c, float d, float m) {
  c.d[0] = c.d[1] = d;
  c.m[0] = c.m[1] = m;
}

template <typename Block>
struct Traits;

// ---- legacy types: one chunk per block

template <>
struct Traits<BlockQ4_0> {
  static constexpr int kChunks = 1;
  STRATA_HD static void load(const BlockQ4_0& b, int, Chunk& c) {
    for (int j = 0; j < 4; ++j) {
      const uint32_t v = uint32_t(load_b2(b.qs + 4 * j));
      c.q[j] = int32_t(v & 0x0F0F0F0Fu);
      c.q[j + 4] = int32_t((v >> 4) & 0x0F0F0F0Fu);
    }
    const float d = half_to_float(b.d);
    set_scale(c, d, -8.0f * d);
  }
};

template <>
struct Traits<BlockQ4_1> {
  static constexpr int kChunks = 1;
  STRATA_HD static void load(const BlockQ4_1& b, int, Chunk& c) {
    for (int j = 0; j < 4; ++j) {
      const uint32_t v = uint32_t(load_b4(b.qs + 4 * j));
      c.q[j] = int32_t(v & 0x0F0F0F0Fu);
      c.q[j + 4] = int32_t((v >> 4) & 0x0F0F0F0Fu);
    }
    set_scale(c, half_to_float(b.d), half_to_float(b.m));
  }
};

template <>
struct Traits<BlockQ5_0> {
  static constexpr int kChunks = 1;
  STRATA_HD static void load(const BlockQ5_0& b, int, Chunk& c) {
    const uint32_t qh = uint32_t(load_b2(b.qh));
    for (int j = 0; j < 4; ++j) {
      const uint32_t v = uint32_t(load_b2(b.qs + 4 * j));
      c.q[j] = int32_t(v & 0x0F0F0F0Fu) | spread4(qh >> (4 * j), 4);
      c.q[j + 4] = int32_t((v >> 4) & 0x0F0F0F0Fu) | spread4(qh >> (16 + 4 * j), 4);
    }
    const float d = half_to_float(b.d);
    set_scale(c, d, -16.0f * d);
  }
};

template <>
struct Traits<BlockQ5_1> {
  static constexpr int kChunks = 1;
  STRATA_HD static void load(const BlockQ5_1& b, int, Chunk& c) {
    const uint32_t qh = uint32_t(load_b4(b.qh));
    for (int j = 0; j < 4; ++j) {
      const uint32_t v = uint32_t(load_b4(b.qs + 4 * j));
      c.q[j] = int32_t(v & 0x0F0F0F0Fu) | spread4(qh >> (4 * j), 4);
      c.q[j + 4] = int32_t((v >> 4) & 0x0F0F0F0Fu) | spread4(qh >> (16 + 4 * j), 4);
    }
    set_scale(c, half_to_float(b.d), half_to_float(b.m));
  }
};

template <>
struct Traits<BlockQ8_0> {
  static constexpr int kChunks = 1;
  STRATA_HD static void load(const BlockQ8_0& b, int, Chunk& c) {
    for (int j = 0; j < 8; ++j) c.q[j] = load_b2(reinterpret_cast<const uint8_t*>(b.qs) + 4 * j);
    set_scale(c, half_to_float(b.d), 0.0f);
  }
};

// ---- K-quants: 8 chunks per 256-element block

// Q2_K: chunk s covers 32 bytes qs[32 (s / 4) ..] shifted by 2 (s % 4); 16-element scales.
template <>
struct Traits<BlockQ2_K> {
  static constexpr int kChunks = 8;
  STRATA_HD static void load(const BlockQ2_K& b, int s, Chunk& c) {
    const int shift = 2 * (s % 4);
    const uint8_t* q = b.qs + 32 * (s / 4);
    for (int j = 0; j < 8; ++j) c.q[j] = int32_t((uint32_t(load_b4(q + 4 * j)) >> shift) & 0x03030303u);
    const float d = half_to_float(b.d), dmin = half_to_float(b.dmin);
    for (int h = 0; h < 2; ++h) {
      const uint8_t sc = b.scales[8 * (s / 4) + 2 * (s % 4) + h];
      c.d[h] = d * float(sc & 0xF);
      c.m[h] = -dmin * float(sc >> 4);
    }
  }
};

// Q3_K: as Q2_K plus a high bit (bit s of hmask[l]); a clear bit subtracts 4: q3 = q2 | hi << 2, - 4.
template <>
struct Traits<BlockQ3_K> {
  static constexpr int kChunks = 8;
  STRATA_HD static void load(const BlockQ3_K& b, int s, Chunk& c) {
    const int shift = 2 * (s % 4);
    const uint8_t* q = b.qs + 32 * (s / 4);
    for (int j = 0; j < 8; ++j) {
      const uint32_t lo = (uint32_t(load_b2(q + 4 * j)) >> shift) & 0x03030303u;
      const uint32_t hi = (uint32_t(load_b2(b.hmask + 4 * j)) >> s) & 0x01010101u;
      c.q[j] = int32_t(lo | (hi << 2));
    }
    // The 16 six-bit scales (offset 32) from 12 packed bytes, as ggml's kmask unpacking.
    const int is0 = 8 * (s / 4) + 2 * (s % 4);
    const float d = half_to_float(b.d);
    for (int h = 0; h < 2; ++h) {
      const int is = is0 + h;
      const int low = is < 8 ? (b.scales[is] & 0xF) : (b.scales[is - 8] >> 4);
      const int high = (b.scales[8 + (is % 4)] >> (2 * (is / 4))) & 3;
      const float dl = d * float((low | (high << 4)) - 32);
      c.d[h] = dl;
      c.m[h] = -4.0f * dl;
    }
  }
};

STRATA_HD void scale_min_k4(int j, const uint8_t* q, int& d, int& m) {
  if (j < 4) {
    d = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
  }
}

// Q4_K: chunk s is the low (s even) or high nibbles of qs[32 (s / 2) ..]; 32-element scales.
template <>
struct Traits<BlockQ4_K> {
  static constexpr int kChunks = 8;
  STRATA_HD static void load(const BlockQ4_K& b, int s, Chunk& c) {
    const uint8_t* q = b.qs + 32 * (s / 2);
    const int shift = 4 * (s % 2);
    for (int j = 0; j < 8; ++j) c.q[j] = int32_t((uint32_t(load_b4(q + 4 * j)) >> shift) & 0x0F0F0F0Fu);
    int sc, m;
    scale_min_k4(s, b.scales, sc, m);
    set_scale(c, half_to_float(b.d) * float(sc), -half_to_float(b.dmin) * float(m));
  }
};

// Q5_K: Q4_K plus a fifth bit, bit s of qh[l].
template <>
struct Traits<BlockQ5_K> {
  static constexpr int kChunks = 8;
  STRATA_HD static void load(const BlockQ5_K& b, int s, Chunk& c) {
    const uint8_t* q = b.qs + 32 * (s / 2);
    const int shift = 4 * (s % 2);
    for (int j = 0; j < 8; ++j) {
      const uint32_t lo = (uint32_t(load_b4(q + 4 * j)) >> shift) & 0x0F0F0F0Fu;
      const uint32_t hi = (uint32_t(load_b4(b.qh + 4 * j)) >> s) & 0x01010101u;
      c.q[j] = int32_t(lo | (hi << 4));
    }
    int sc, m;
    scale_min_k4(s, b.scales, sc, m);
    set_scale(c, half_to_float(b.d) * float(sc), -half_to_float(b.dmin) * float(m));
  }
};

// Q6_K: halves of 128; in half H, chunk k (s = 4H + k) takes nibbles of ql[64H + 32 (k & 1) ..]
// (low for k < 2) and bits 2k, 2k+1 of qh[32H + l]; q - 32 with 16-element signed scales.
template <>
struct Traits<BlockQ6_K> {
  static constexpr int kChunks = 8;
  STRATA_HD static void load(const BlockQ6_K& b, int s, Chunk& c) {
    const int H = s / 4, k = s % 4;
    const uint8_t* ql = b.ql + 64 * H + 32 * (k & 1);
    const uint8_t* qh = b.qh + 32 * H;
    const int lshift = 4 * (k >> 1), hshift = 2 * k;
    for (int j = 0; j < 8; ++j) {
      const uint32_t lo = (uint32_t(load_b2(ql + 4 * j)) >> lshift) & 0x0F0F0F0Fu;
      const uint32_t hi = (uint32_t(load_b2(qh + 4 * j)) >> hshift) & 0x03030303u;
      c.q[j] = int32_t(lo | (hi << 4));
    }
    const float d = half_to_float(b.d);
    for (int h = 0; h < 2; ++h) {
      const float dl = d * float(b.scales[8 * H + 2 * k + h]);
      c.d[h] = dl;
      c.m[h] = -32.0f * dl;
    }
  }
};

// The chunk c of a row of blocks.
template <typename Block>
STRATA_HD void load_chunk(const uint8_t* row, int64_t c, Chunk& out) {
  constexpr int kc = Traits<Block>::kChunks;
  const Block* blocks = reinterpret_cast<const Block*>(row);
  Traits<Block>::load(blocks[c / kc], int(c % kc), out);
}

// ---- pieces: the wide-load decoding of the K-quants the decode matvec reads most (Q4_K, Q5_K,
// Q6_K). A 256-element block splits into 8 pieces of 32 elements, each two groups of 16 with their
// own element offset e[g] in the block, scale d[g] and offset m[g] (element e[g] + i of group g is
// d[g] * q + m[g], q byte i % 4 of q[4 g + i / 4]). Eight consecutive lanes read one block's
// quants once, contiguously (16 bytes each, one vector load where the layout is 16-byte aligned),
// where chunks make several lanes re-read the same bytes.
struct Piece {
  int32_t q[8];
  float d[2];
  float m[2];
  int e[2];
};

template <typename Block>
struct Pieces {
  static constexpr bool kHas = false;
};

// Four quant words at p: one 16-byte load on the device (p 16-byte aligned).
STRATA_HD void load_16(const uint8_t* p, int32_t w[4]) {
#if defined(__CUDA_ARCH__)
  const int4 v = *reinterpret_cast<const int4*>(p);
  w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
#else
  for (int j = 0; j < 4; ++j) w[j] = load_b2(p + 4 * j);
#endif
}

// scale_min_k4 from the 12 scale bytes read as three little-endian words (one load each where
// the block is 4-byte aligned, as the pieces' blocks are).
STRATA_HD void scale_min_k4_words(int j, uint32_t s0, uint32_t s1, uint32_t s2, int& d, int& m) {
  if (j < 4) {
    d = int((s0 >> (8 * j)) & 63);
    m = int((s1 >> (8 * j)) & 63);
  } else {
    const int sh = 8 * (j - 4);
    d = int(((s2 >> sh) & 0xF) | (((s0 >> sh) & 0xC0) >> 2));
    m = int(((s2 >> sh) & 0xF0) >> 4 | (((s1 >> sh) & 0xC0) >> 2));
  }
}

// The scales of a Q4_K / Q5_K block (d, dmin, then 12 scale bytes at offset 4) for sub-blocks
// 2 j and 2 j + 1.
template <typename Block>
STRATA_HD void k4_scales(const Block& b, int j, float d_out[2], float m_out[2]) {
  const uint8_t* base = reinterpret_cast<const uint8_t*>(&b);
  const uint32_t dm = uint32_t(load_b4(base));
  const uint32_t s0 = uint32_t(load_b4(base + 4)), s1 = uint32_t(load_b4(base + 8)), s2 = uint32_t(load_b4(base + 12));
  const float d = half_to_float(uint16_t(dm & 0xFFFF)), dmin = half_to_float(uint16_t(dm >> 16));
  for (int g = 0; g < 2; ++g) {
    int sc, m;
    scale_min_k4_words(2 * j + g, s0, s1, s2, sc, m);
    d_out[g] = d * float(sc);
    m_out[g] = -dmin * float(m);
  }
}

// Q4_K piece p: 16 bytes qs[32 j + 16 h ..] (j = p / 2, h = p % 2); low nibbles are elements
// 64 j + 16 h + i of sub-block 2 j, high nibbles 32 further on, sub-block 2 j + 1.
template <>
struct Pieces<BlockQ4_K> {
  static constexpr bool kHas = true;
  static constexpr bool kAligned16 = true;  // 144-byte blocks, qs at 16
  STRATA_HD static void load(const BlockQ4_K& b, int p, Piece& c) {
    const int j = p / 2, h = p % 2;
    int32_t w[4];
    load_16(b.qs + 32 * j + 16 * h, w);
    for (int k = 0; k < 4; ++k) {
      c.q[k] = int32_t(uint32_t(w[k]) & 0x0F0F0F0Fu);
      c.q[4 + k] = int32_t((uint32_t(w[k]) >> 4) & 0x0F0F0F0Fu);
    }
    k4_scales(b, j, c.d, c.m);
    for (int g = 0; g < 2; ++g) c.e[g] = 64 * j + 32 * g + 16 * h;
  }
};

// Q5_K piece p: as Q4_K, plus the fifth bits: bit 2 j (low nibbles) and 2 j + 1 (high) of
// qh[16 h ..].
template <>
struct Pieces<BlockQ5_K> {
  static constexpr bool kHas = true;
  static constexpr bool kAligned16 = true;  // 176-byte blocks, qh at 16, qs at 48
  STRATA_HD static void load(const BlockQ5_K& b, int p, Piece& c) {
    const int j = p / 2, h = p % 2;
    int32_t w[4], hb[4];
    load_16(b.qs + 32 * j + 16 * h, w);
    load_16(b.qh + 16 * h, hb);
    for (int k = 0; k < 4; ++k) {
      const uint32_t hi = uint32_t(hb[k]) >> (2 * j);
      c.q[k] = int32_t((uint32_t(w[k]) & 0x0F0F0F0Fu) | ((hi & 0x01010101u) << 4));
      c.q[4 + k] = int32_t(((uint32_t(w[k]) >> 4) & 0x0F0F0F0Fu) | (((hi >> 1) & 0x01010101u) << 4));
    }
    k4_scales(b, j, c.d, c.m);
    for (int g = 0; g < 2; ++g) c.e[g] = 64 * j + 32 * g + 16 * h;
  }
};

// Q6_K piece p: half H = p / 4 of 128 elements, r = p % 4: ql[64 H + 16 r ..] (low nibbles:
// elements 128 H + 16 r + i; high: 64 further on) with two high bits each from qh[32 H + 16 (r % 2) ..]
// (shift 2 (r / 2) for the low nibbles, 4 more for the high); q - 32 with 16-element scales.
template <>
struct Pieces<BlockQ6_K> {
  static constexpr bool kHas = true;
  static constexpr bool kAligned16 = false;  // 210-byte blocks: 2-byte loads
  STRATA_HD static void load(const BlockQ6_K& b, int p, Piece& c) {
    const int H = p / 4, r = p % 4;
    const uint8_t* ql = b.ql + 64 * H + 16 * r;
    const uint8_t* qh = b.qh + 32 * H + 16 * (r % 2);
    const int shift = 2 * (r / 2);
    for (int k = 0; k < 4; ++k) {
      const uint32_t lo = uint32_t(load_b2(ql + 4 * k));
      const uint32_t hi = uint32_t(load_b2(qh + 4 * k));
      c.q[k] = int32_t((lo & 0x0F0F0F0Fu) | (((hi >> shift) & 0x03030303u) << 4));
      c.q[4 + k] = int32_t(((lo >> 4) & 0x0F0F0F0Fu) | (((hi >> (shift + 4)) & 0x03030303u) << 4));
    }
    const float d = half_to_float(b.d);
    for (int g = 0; g < 2; ++g) {
      c.d[g] = d * float(b.scales[8 * H + 4 * g + r]);
      c.m[g] = -32.0f * c.d[g];
      c.e[g] = 128 * H + 64 * g + 16 * r;
    }
  }
};

// Element i (< 16) of group g of a piece as a float.
STRATA_HD float piece_value(const Piece& c, int g, int i) {
  const int8_t q = int8_t(uint32_t(c.q[4 * g + i / 4]) >> (8 * (i % 4)));
  return c.d[g] * float(q) + c.m[g];
}

// sum of the four signed byte products of a and b, plus c (the dp4a instruction).
STRATA_HD int32_t dot4(int32_t a, int32_t b, int32_t c) {
#if defined(__CUDA_ARCH__)
  return __dp4a(a, b, c);
#else
  for (int k = 0; k < 4; ++k) c += int32_t(int8_t(uint32_t(a) >> (8 * k))) * int32_t(int8_t(uint32_t(b) >> (8 * k)));
  return c;
#endif
}

// A chunk dotted with 32 int8 activations (packed as q) of scale ad: per half h,
// ad * (d[h] * sum(q * a) + m[h] * sum(a)). The matvec kernel's arithmetic, checked on the host too.
STRATA_HD float dot_chunk(const Chunk& ch, const int32_t a[8], float ad) {
  constexpr int32_t kOnes = 0x01010101;
  float part = 0.0f;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int h = 0; h < 2; ++h) {
    int32_t s = 0, u = 0;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int j = 4 * h; j < 4 * h + 4; ++j) {
      s = dot4(ch.q[j], a[j], s);
      u = dot4(kOnes, a[j], u);
    }
    part += ch.d[h] * float(s) + ch.m[h] * float(u);
  }
  return ad * part;
}

// A piece dotted with int8 activations: a[4 g ..] the 16 of group g, of scale ad[g]:
// sum over g of ad[g] * (d[g] * sum(q * a) + m[g] * sum(a)).
STRATA_HD float dot_piece(const Piece& pc, const int32_t a[8], const float ad[2]) {
  constexpr int32_t kOnes = 0x01010101;
  float part = 0.0f;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int g = 0; g < 2; ++g) {
    int32_t s = 0, u = 0;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int j = 4 * g; j < 4 * g + 4; ++j) {
      s = dot4(pc.q[j], a[j], s);
      u = dot4(kOnes, a[j], u);
    }
    part += ad[g] * (pc.d[g] * float(s) + pc.m[g] * float(u));
  }
  return part;
}

// Element i (< 32) of a chunk as a float.
STRATA_HD float chunk_value(const Chunk& c, int i) {
  const int8_t q = int8_t(uint32_t(c.q[i / 4]) >> (8 * (i % 4)));
  return c.d[i / 16] * float(q) + c.m[i / 16];
}

}  // namespace strata::backend::chunks
