#pragma once
// Internal to src/backend/cuda: one weight row dotted with int8 activations by one warp, the
// decode matvec's inner loop, written once for the dense matvec (matmul.cu) and the expert matvecs
// (moe.cu). Two layouts of the same arithmetic (chunks.h): K-quants with pieces read each block's
// quants once with wide loads (eight lanes a block, four blocks a warp step); every other chunked
// type reads a 32-element chunk per lane.
#include <cuda_fp16.h>  // before chunks.h: its device half conversions

#include "backend/cuda/chunks.h"

namespace strata::backend::cuda {

// The decode's int8 activations: value v of this lane, one 32-element chunk per warp (every lane
// calls it), to q[lane] with the chunk's scale *d = amax / 127, rounded to nearest even.
__device__ __forceinline__ void quantize_q8_lane(float v, int lane, int8_t* q, float* d) {
  float amax = fabsf(v);
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  const float dd = amax / 127.0f;
  const float id = dd != 0.0f ? 1.0f / dd : 0.0f;
  q[lane] = int8_t(__float2int_rn(v * id));
  if (lane == 0) *d = dd;
}

// Whether a row of Block at `data` with rows of row_bytes (and experts `stride` apart) may take the
// pieces path: a K-quant with pieces whose 16-byte loads, where it makes them, are aligned.
template <typename Block>
bool use_pieces(const void* data, size_t row_bytes, size_t stride = 0) {
  if constexpr (!chunks::Pieces<Block>::kHas) {
    return false;
  } else {
    return !chunks::Pieces<Block>::kAligned16 ||
           (reinterpret_cast<uintptr_t>(data) % 16 == 0 && row_bytes % 16 == 0 && stride % 16 == 0);
  }
}

// acc[t] += this lane's share of row . x_t for NT tokens: xq [NT x n_cols] int8 activations, xd
// [NT x n_cols / 32] their scales. The lanes of W warps (lane in [0, 32 W)) together cover the row;
// the caller sums them.
template <typename Block, int NT, bool kPieces, int W = 1>
__device__ __forceinline__ void row_dot_q8(const uint8_t* __restrict__ row, int64_t n_cols,
                                           const int8_t* __restrict__ xq, const float* __restrict__ xd, int lane,
                                           float (&acc)[NT]) {
  if constexpr (kPieces) {
    const Block* blocks = reinterpret_cast<const Block*>(row);
    const int piece = lane % 8;
    const int n_blocks = int(n_cols / 256);
#pragma unroll 2
    for (int b = lane / 8; b < n_blocks; b += 4 * W) {
      chunks::Piece pc;
      chunks::Pieces<Block>::load(blocks[b], piece, pc);
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        const int8_t* xt = xq + int64_t(t) * n_cols + int64_t(b) * 256;
        const float* dt = xd + int64_t(t) * (n_cols / 32) + int64_t(b) * 8;
        const int4 a0 = __ldg(reinterpret_cast<const int4*>(xt + pc.e[0]));
        const int4 a1 = __ldg(reinterpret_cast<const int4*>(xt + pc.e[1]));
        const int32_t a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
        const float ad[2] = {__ldg(dt + pc.e[0] / 32), __ldg(dt + pc.e[1] / 32)};
        acc[t] += chunks::dot_piece(pc, a, ad);
      }
    }
  } else {
    const int n_chunks = int(n_cols / 32);
    for (int c = lane; c < n_chunks; c += 32 * W) {
      chunks::Chunk ch;
      chunks::load_chunk<Block>(row, c, ch);
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        const int4* a4 = reinterpret_cast<const int4*>(xq + int64_t(t) * n_cols + int64_t(c) * 32);
        const int4 a0 = __ldg(a4), a1 = __ldg(a4 + 1);
        const int32_t a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
        acc[t] += chunks::dot_chunk(ch, a, __ldg(xd + int64_t(t) * n_chunks + c));
      }
    }
  }
}

}  // namespace strata::backend::cuda
