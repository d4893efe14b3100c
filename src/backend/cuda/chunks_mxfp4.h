#pragma once
// MXFP4 (gpt-oss's experts) as chunks.h's 32-element chunks: one block is one chunk, its 16 bytes
// of nibbles index kMxfp4Values (the E2M1 values doubled, integers in [-12, 12]) and its E8M0
// exponent is the scale, halved as the doubled table wants (ggml's ggml_e8m0_to_fp32_half), no
// offset. The matvec's dp4a, the f16 dequantization and the row gathers then read it as any other
// chunked type. Blocks are 17 bytes (no alignment): read a byte at a time.
#include "backend/cuda/chunks.h"

namespace strata::backend::chunks {

// 2^(e - 128); e < 2 as the denormals 2^-128 and 2^-127 (kernels_impl.h's e8m0_to_f32_half).
STRATA_HD float e8m0_half(uint8_t e) {
  const uint32_t bits = e < 2 ? 0x00200000u << e : uint32_t(e - 1) << 23;
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
#endif
}

// kMxfp4Values[nibble] (the host table cannot be indexed on the device): magnitudes 0 1 2 3 4 6 8
// 12 packed as bytes, bit 3 the sign.
STRATA_HD int mxfp4_value(uint32_t nibble) {
  const int mag = int((0x0C08060403020100ull >> (8 * (nibble & 7))) & 0xFF);
  return nibble & 8 ? -mag : mag;
}
// The value of a nibble as a byte (two's complement), placed at byte `k` of a word.
STRATA_HD uint32_t mxfp4_byte(uint32_t nibble, int k) {
  return uint32_t(uint8_t(int8_t(mxfp4_value(nibble)))) << (8 * k);
}

template <>
struct Traits<BlockMXFP4> {
  static constexpr int kChunks = 1;
  // Elements 0..15 are the low nibbles of qs[0..15], 16..31 the high nibbles.
  STRATA_HD static void load(const BlockMXFP4& b, int, Chunk& c) {
    for (int j = 0; j < 4; ++j) {
      uint32_t lo = 0, hi = 0;
      for (int k = 0; k < 4; ++k) {
        const uint32_t byte = b.qs[4 * j + k];
        lo |= mxfp4_byte(byte, k);
        hi |= mxfp4_byte(byte >> 4, k);
      }
      c.q[j] = int32_t(lo);
      c.q[j + 4] = int32_t(hi);
    }
    set_scale(c, e8m0_half(b.e), 0.0f);
  }
};

}  // namespace strata::backend::chunks
