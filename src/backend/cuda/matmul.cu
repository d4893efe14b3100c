// Weight kernels: the decode matvec (fused dequantize-dot, each weight byte read once, dp4a on int8
// activations), dequantization to f16 tiles for the prompt GEMM, and row gathers. The one switch
// from tensor type to template is with_block (dispatch.cuh).
#include <cuda_fp16.h>  // before chunks.h: its device half conversions

#include <array>
#include <utility>

#include "backend/cuda/chunks.h"
#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/dispatch.cuh"

namespace strata::backend::cuda {
namespace {

using chunks::Chunk;

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

constexpr int kWarpsPerBlock = 4;

// One warp per 32-element chunk: scale amax / 127, round to nearest even.
__global__ void quantize_q8_kernel(const float* x, int64_t x_stride, int64_t n_cols, int8_t* xq, float* xd,
                                   int64_t n_chunks_total) {
  const int64_t chunk = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (chunk >= n_chunks_total) return;
  const int lane = threadIdx.x % 32;
  const int64_t per_row = n_cols / 32;
  const int64_t t = chunk / per_row, c = chunk % per_row;
  const float v = x[t * x_stride + c * 32 + lane];
  float amax = fabsf(v);
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  xq[t * n_cols + c * 32 + lane] = int8_t(__float2int_rn(v * id));
  if (lane == 0) xd[t * per_row + c] = d;
}

// Rows of a chunked weight against NT tokens of int8 activations: one warp per row, each lane a
// chunk at a time (consecutive lanes read consecutive bytes of the row).
template <typename Block, int NT>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    matvec_chunked(const uint8_t* w, size_t row_bytes, int64_t n_rows, int n_chunks, const int8_t* xq, const float* xd,
                   float* y, int64_t y_stride) {
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (row >= n_rows) return;
  const int lane = threadIdx.x % 32;
  const uint8_t* wr = w + size_t(row) * row_bytes;
  float acc[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) acc[t] = 0.0f;
  for (int c = lane; c < n_chunks; c += 32) {
    Chunk ch;
    chunks::load_chunk<Block>(wr, c, ch);
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      const int4* a4 = reinterpret_cast<const int4*>(xq + (int64_t(t) * n_chunks + c) * 32);
      const int4 a0 = __ldg(a4), a1 = __ldg(a4 + 1);
      const int32_t a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
      acc[t] += chunks::dot_chunk(ch, a, __ldg(xd + int64_t(t) * n_chunks + c));
    }
  }
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const float s = warp_sum(acc[t]);
    if (lane == 0) y[t * y_stride + row] = s;
  }
}

// Rows of a K-quant weight with pieces (chunks.h) against NT tokens of int8 activations: one warp
// per row, eight lanes per block (each one piece of 32 quants, read once with contiguous loads),
// four blocks per warp step, two steps in flight per lane.
template <typename Block, int NT>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    matvec_pieces(const uint8_t* __restrict__ w, size_t row_bytes, int64_t n_rows, int n_blocks,
                  const int8_t* __restrict__ xq, const float* __restrict__ xd, int64_t n_cols, float* __restrict__ y,
                  int64_t y_stride) {
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (row >= n_rows) return;
  const int lane = threadIdx.x % 32;
  const Block* blocks = reinterpret_cast<const Block*>(w + size_t(row) * row_bytes);
  const int piece = lane % 8;
  float acc[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) acc[t] = 0.0f;
#pragma unroll 2
  for (int b = lane / 8; b < n_blocks; b += 4) {
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
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const float s = warp_sum(acc[t]);
    if (lane == 0) y[t * y_stride + row] = s;
  }
}

// Rows of a float weight against NT tokens of float activations, two elements per lane per step.
template <typename F, int NT>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    matvec_float(const uint8_t* w, size_t row_bytes, int64_t n_rows, int64_t n_cols, const float* x, int64_t x_stride,
                 float* y, int64_t y_stride) {
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (row >= n_rows) return;
  const int lane = threadIdx.x % 32;
  const uint8_t* wr = w + size_t(row) * row_bytes;
  float acc[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) acc[t] = 0.0f;
  for (int64_t i = 2 * lane; i < n_cols; i += 64) {
    const float2 wv = F::load2(wr, i);
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      const float2 xv = *reinterpret_cast<const float2*>(x + t * x_stride + i);
      acc[t] += wv.x * xv.x + wv.y * xv.y;
    }
  }
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const float s = warp_sum(acc[t]);
    if (lane == 0) y[t * y_stride + row] = s;
  }
}

// Chunk `chunk` of a [n_rows x n_chunks] weight to 32 outputs (f16 or f32) at out + row * out_stride,
// row ids[r] where ids is given: an id outside [0, n_src_rows) gives zeros and is reported in
// *bad_id (1 + the id's index), which the backend turns into an error at its next wait.
// kSplit threads share a chunk, each writing 32 / kSplit consecutive outputs, so that a warp's
// stores are contiguous (the prompt's f16 tiles: four threads, 16 bytes each).
template <typename Block, typename Out, int kSplit>
__global__ void dequantize_chunked(const uint8_t* w, size_t row_bytes, const int32_t* ids, int64_t n_src_rows,
                                   int64_t n_rows, int n_chunks, Out* out, int64_t out_stride, int* bad_id) {
  constexpr int kPer = 32 / kSplit;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_rows * n_chunks * kSplit) return;
  const int part = int(i % kSplit);
  const int64_t r = i / kSplit / n_chunks;
  const int c = int(i / kSplit % n_chunks);
  Out* o = out + r * out_stride + int64_t(c) * 32 + part * kPer;
  int64_t src_row = r;
  if (ids) {
    src_row = ids[r];
    if (src_row < 0 || src_row >= n_src_rows) {
      if (bad_id) atomicCAS(bad_id, 0, int(r) + 1);
#pragma unroll
      for (int k = 0; k < kPer; ++k) o[k] = Out(0.0f);
      return;
    }
  }
  Chunk ch;
  chunks::load_chunk<Block>(w + size_t(src_row) * row_bytes, c, ch);
  if constexpr (sizeof(Out) == 2 && kPer == 8) {  // one 16-byte store (rows of whole chunks: 64-byte aligned)
    __half2 h[4];
#pragma unroll
    for (int k = 0; k < 4; ++k)
      h[k] = __floats2half2_rn(chunks::chunk_value(ch, part * kPer + 2 * k), chunks::chunk_value(ch, part * kPer + 2 * k + 1));
    *reinterpret_cast<uint4*>(o) = *reinterpret_cast<const uint4*>(h);
  } else {
#pragma unroll
    for (int k = 0; k < kPer; ++k) o[k] = Out(chunks::chunk_value(ch, part * kPer + k));
  }
}

template <typename F, typename Out>
__global__ void dequantize_float(const uint8_t* w, size_t row_bytes, const int32_t* ids, int64_t n_src_rows,
                                 int64_t n_rows, int64_t n_cols, Out* out, int64_t out_stride, int* bad_id) {
  const int64_t i = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * 2;
  if (i >= n_rows * n_cols) return;
  const int64_t r = i / n_cols, c = i % n_cols;
  int64_t src_row = r;
  float2 v = make_float2(0.0f, 0.0f);
  if (ids) {
    src_row = ids[r];
    if (src_row < 0 || src_row >= n_src_rows) {
      if (bad_id) atomicCAS(bad_id, 0, int(r) + 1);
      src_row = -1;
    }
  }
  if (src_row >= 0) v = F::load2(w + size_t(src_row) * row_bytes, c);
  if constexpr (sizeof(Out) == 2) {
    out[r * out_stride + c] = __float2half_rn(v.x);
    out[r * out_stride + c + 1] = __float2half_rn(v.y);
  } else {
    out[r * out_stride + c] = v.x;
    out[r * out_stride + c + 1] = v.y;
  }
}

__global__ void to_f16_kernel(const float* x, int64_t x_stride, int64_t n, int64_t n_cols, __half* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int64_t t = i / n_cols, c = i % n_cols;
  out[i] = __float2half_rn(x[t * x_stride + c]);
}

unsigned blocks_for(int64_t n, int per_block) { return unsigned((n + per_block - 1) / per_block); }

template <typename Out>
void dequantize_rows(const WeightView& w, const int32_t* ids, int64_t n_rows, Out* out, int64_t out_stride,
                     int* bad_id, cudaStream_t stream) {
  const int n_chunks = int(w.n_cols / 32);
  const bool chunked = with_block(w.type, [&](auto block) {
    using Block = decltype(block);
    constexpr int kSplit = sizeof(Out) == 2 ? 4 : 1;
    dequantize_chunked<Block, Out, kSplit><<<blocks_for(n_rows * n_chunks * kSplit, 256), 256, 0, stream>>>(
        w.data, w.row_bytes, ids, w.n_rows, n_rows, n_chunks, out, out_stride, bad_id);
  });
  if (!chunked && !with_float(w.type, [&](auto f) {
        using F = decltype(f);
        dequantize_float<F, Out><<<blocks_for(n_rows * w.n_cols / 2, 256), 256, 0, stream>>>(
            w.data, w.row_bytes, ids, w.n_rows, n_rows, w.n_cols, out, out_stride, bad_id);
      }))
    throw Error(std::string("cuda: no kernels for tensor type ") + type_name(w.type));
  STRATA_CUDA_LAUNCHED();
}

template <int NT>
void matvec_n(const WeightView& w, const int8_t* xq, const float* xd, const float* x, int64_t x_stride, float* y,
              int64_t y_stride, cudaStream_t stream) {
  const unsigned grid = blocks_for(w.n_rows, kWarpsPerBlock);
  const bool chunked = with_block(w.type, [&](auto block) {
    using Block = decltype(block);
    if constexpr (chunks::Pieces<Block>::kHas) {
      // 16-byte loads need 16-byte aligned rows (device allocations are; a view into the middle of
      // a row piece might not be).
      if (!chunks::Pieces<Block>::kAligned16 ||
          (reinterpret_cast<uintptr_t>(w.data) % 16 == 0 && w.row_bytes % 16 == 0)) {
        matvec_pieces<Block, NT><<<grid, kWarpsPerBlock * 32, 0, stream>>>(
            w.data, w.row_bytes, w.n_rows, int(w.n_cols / 256), xq, xd, w.n_cols, y, y_stride);
        return;
      }
    }
    matvec_chunked<Block, NT><<<grid, kWarpsPerBlock * 32, 0, stream>>>(w.data, w.row_bytes, w.n_rows,
                                                                        int(w.n_cols / 32), xq, xd, y, y_stride);
  });
  if (!chunked && !with_float(w.type, [&](auto f) {
        using F = decltype(f);
        matvec_float<F, NT><<<grid, kWarpsPerBlock * 32, 0, stream>>>(w.data, w.row_bytes, w.n_rows, w.n_cols, x,
                                                                      x_stride, y, y_stride);
      }))
    throw Error(std::string("cuda: no kernels for tensor type ") + type_name(w.type));
  STRATA_CUDA_LAUNCHED();
}

}  // namespace

bool is_chunked(DType type) {
  return with_block(type, [](auto) {});
}
bool is_float(DType type) {
  return with_float(type, [](auto) {});
}

void quantize_q8(const float* x, int64_t x_stride, int n_tokens, int64_t n_cols, int8_t* xq, float* xd,
                 cudaStream_t stream) {
  const int64_t n_chunks = int64_t(n_tokens) * (n_cols / 32);
  quantize_q8_kernel<<<blocks_for(n_chunks, kWarpsPerBlock), kWarpsPerBlock * 32, 0, stream>>>(x, x_stride, n_cols, xq,
                                                                                               xd, n_chunks);
  STRATA_CUDA_LAUNCHED();
}

void matvec(const WeightView& w, const int8_t* xq, const float* xd, const float* x, int64_t x_stride, int n_tokens,
            float* y, int64_t y_stride, cudaStream_t stream) {
  using Matvec = void (*)(const WeightView&, const int8_t*, const float*, const float*, int64_t, float*, int64_t,
                         cudaStream_t);
  // matvec_n<1> .. matvec_n<kMaxMatvecTokens>, indexed by n_tokens - 1.
  static constexpr auto kByTokens = []<size_t... I>(std::index_sequence<I...>) {
    return std::array<Matvec, sizeof...(I)>{&matvec_n<int(I) + 1>...};
  }(std::make_index_sequence<kMaxMatvecTokens>{});
  if (n_tokens < 1 || n_tokens > kMaxMatvecTokens)
    throw Error("cuda matvec: " + std::to_string(n_tokens) + " tokens (at most " + std::to_string(kMaxMatvecTokens) +
                ")");
  kByTokens[size_t(n_tokens - 1)](w, xq, xd, x, x_stride, y, y_stride, stream);
}

void dequantize_f16(const WeightView& w, __half* out, cudaStream_t stream) {
  dequantize_rows<__half>(w, nullptr, w.n_rows, out, w.n_cols, nullptr, stream);
}

void to_f16(const float* x, int64_t x_stride, int n_tokens, int64_t n_cols, __half* out, cudaStream_t stream) {
  const int64_t n = int64_t(n_tokens) * n_cols;
  to_f16_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(x, x_stride, n, n_cols, out);
  STRATA_CUDA_LAUNCHED();
}

void get_rows(const WeightView& w, const int32_t* ids, int n, float* out, int64_t out_stride, int* bad_id,
              cudaStream_t stream) {
  dequantize_rows<float>(w, ids, n, out, out_stride, bad_id, stream);
}

}  // namespace strata::backend::cuda
