// Weight kernels: the decode matvec (fused dequantize-dot, each weight byte read once, dp4a on int8
// activations), dequantization to f16 tiles for the prompt GEMM, and row gathers. The one switch
// from tensor type to template is with_block (dispatch.cuh).
#include <cuda_fp16.h>  // before chunks.h: its device half conversions

#include <array>
#include <type_traits>
#include <utility>

#include "backend/cuda/activations.cuh"
#include "backend/cuda/chunks.h"
#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/dispatch.cuh"
#include "backend/cuda/rowdot.cuh"

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
  quantize_q8_lane(x[t * x_stride + c * 32 + lane], lane, xq + t * n_cols + c * 32, xd + t * per_row + c);
}

// Rows of a chunked weight against NT tokens of int8 activations, W warps per row (rowdot.cuh:
// pieces for the K-quants that have them, else a chunk per lane), kWarpsPerBlock / W rows a block.
template <typename Block, int NT, bool kPieces, int W>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    matvec_q8(const uint8_t* __restrict__ w, size_t row_bytes, int64_t n_rows, int64_t n_cols,
              const int8_t* __restrict__ xq, const float* __restrict__ xd, float* __restrict__ y, int64_t y_stride) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * (kWarpsPerBlock / W) + warp / W;
  float acc[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) acc[t] = 0.0f;
  if (row < n_rows)
    row_dot_q8<Block, NT, kPieces, W>(w + size_t(row) * row_bytes, n_cols, xq, xd, (warp % W) * 32 + lane, acc);
#pragma unroll
  for (int t = 0; t < NT; ++t) acc[t] = warp_sum(acc[t]);
  if constexpr (W == 1) {
    if (row < n_rows && lane == 0) {
#pragma unroll
      for (int t = 0; t < NT; ++t) y[t * y_stride + row] = acc[t];
    }
  } else {  // the row's warps add up in shared memory (every thread reaches the barrier)
    __shared__ float part[kWarpsPerBlock][NT];
    if (lane == 0) {
#pragma unroll
      for (int t = 0; t < NT; ++t) part[warp][t] = acc[t];
    }
    __syncthreads();
    if (row < n_rows && warp % W == 0 && lane < NT) {
      float s = 0.0f;
#pragma unroll
      for (int k = 0; k < W; ++k) s += part[warp + k][lane];
      y[lane * y_stride + row] = s;
    }
  }
}

// An FFN's gate and up rows against NT tokens, one warp per row of each: out[t, r] =
// act(gate[r] . x_t) * (up[r] . x_t), the two products exactly as matvec_q8 with one warp a row
// gives them and the activation as the element-wise kernel applies it.
template <typename Block, int NT, bool kPieces, bool kGelu>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    gate_up_q8(const uint8_t* __restrict__ gate, const uint8_t* __restrict__ up, size_t row_bytes, int64_t n_rows,
               int64_t n_cols, const int8_t* __restrict__ xq, const float* __restrict__ xd, float* __restrict__ out) {
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (row >= n_rows) return;
  const int lane = threadIdx.x % 32;
  float acc_g[NT], acc_u[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) acc_g[t] = acc_u[t] = 0.0f;
  row_dot_q8<Block, NT, kPieces>(gate + size_t(row) * row_bytes, n_cols, xq, xd, lane, acc_g);
  row_dot_q8<Block, NT, kPieces>(up + size_t(row) * row_bytes, n_cols, xq, xd, lane, acc_u);
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const float g = warp_sum(acc_g[t]), u = warp_sum(acc_u[t]);
    if (lane == 0) out[t * n_rows + row] = (kGelu ? gelu_ggml(g) : silu(g)) * u;
  }
}

// Warps a decode matvec gives each row (1, 2 or 4): set_matvec_warps_per_row's choice, else by shape.
int g_matvec_warps = 0;
int matvec_warps(int n_tokens) {
  if (n_tokens > 1) return 1;
  return g_matvec_warps > 0 ? g_matvec_warps : 1;
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

// The K-quants with pieces to f16 rows (the prompt GEMM's tiles): one thread a piece, its quants
// read once with wide loads and each group's 16 values written as two 16-byte stores; the values
// chunk_value gives (d * q + m per group).
template <typename Block>
__global__ void dequantize_pieces(const uint8_t* __restrict__ w, size_t row_bytes, int64_t n_rows, int n_blocks,
                                  __half* __restrict__ out, int64_t out_stride) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_rows * n_blocks * 8) return;
  const int piece = int(i % 8);
  const int64_t b = i / 8 % n_blocks, r = i / 8 / n_blocks;
  chunks::Piece pc;
  chunks::Pieces<Block>::load(reinterpret_cast<const Block*>(w + size_t(r) * row_bytes)[b], piece, pc);
  __half* o = out + r * out_stride + b * 256;
#pragma unroll
  for (int g = 0; g < 2; ++g) {
    __half2 h[8];
#pragma unroll
    for (int k = 0; k < 8; ++k)
      h[k] = __floats2half2_rn(chunks::piece_value(pc, g, 2 * k), chunks::piece_value(pc, g, 2 * k + 1));
    uint4* dst = reinterpret_cast<uint4*>(o + pc.e[g]);
    dst[0] = *reinterpret_cast<const uint4*>(h);
    dst[1] = *reinterpret_cast<const uint4*>(h + 4);
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
    if constexpr (sizeof(Out) == 2 && chunks::Pieces<Block>::kHas) {
      // Whole rows to f16 (the prompt's tiles), 16-byte stores: aligned rows of whole blocks.
      if (!ids && use_pieces<Block>(w.data, w.row_bytes) && reinterpret_cast<uintptr_t>(out) % 16 == 0 &&
          out_stride % 8 == 0) {
        const int n_blocks = int(w.n_cols / 256);
        dequantize_pieces<Block><<<blocks_for(n_rows * n_blocks * 8, 256), 256, 0, stream>>>(
            w.data, w.row_bytes, n_rows, n_blocks, out, out_stride);
        return;
      }
    }
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

template <typename Block, int NT, bool kPieces, int W>
void launch_q8(const WeightView& w, const int8_t* xq, const float* xd, float* y, int64_t y_stride,
               cudaStream_t stream) {
  matvec_q8<Block, NT, kPieces, W><<<blocks_for(w.n_rows, kWarpsPerBlock / W), kWarpsPerBlock * 32, 0, stream>>>(
      w.data, w.row_bytes, w.n_rows, w.n_cols, xq, xd, y, y_stride);
}

template <typename Block, int NT, bool kPieces>
void launch_q8_warps(const WeightView& w, const int8_t* xq, const float* xd, float* y, int64_t y_stride,
                     cudaStream_t stream) {
  if constexpr (NT == 1) {
    switch (matvec_warps(NT)) {
      case 2:
        return launch_q8<Block, NT, kPieces, 2>(w, xq, xd, y, y_stride, stream);
      case 4:
        return launch_q8<Block, NT, kPieces, 4>(w, xq, xd, y, y_stride, stream);
      default:
        break;
    }
  }
  launch_q8<Block, NT, kPieces, 1>(w, xq, xd, y, y_stride, stream);
}

template <int NT>
void matvec_n(const WeightView& w, const int8_t* xq, const float* xd, const float* x, int64_t x_stride, float* y,
              int64_t y_stride, cudaStream_t stream) {
  const bool chunked = with_block(w.type, [&](auto block) {
    using Block = decltype(block);
    if (use_pieces<Block>(w.data, w.row_bytes))
      launch_q8_warps<Block, NT, chunks::Pieces<Block>::kHas>(w, xq, xd, y, y_stride, stream);
    else
      launch_q8_warps<Block, NT, false>(w, xq, xd, y, y_stride, stream);
  });
  if (!chunked && !with_float(w.type, [&](auto f) {
        using F = decltype(f);
        matvec_float<F, NT><<<blocks_for(w.n_rows, kWarpsPerBlock), kWarpsPerBlock * 32, 0, stream>>>(
            w.data, w.row_bytes, w.n_rows, w.n_cols, x, x_stride, y, y_stride);
      }))
    throw Error(std::string("cuda: no kernels for tensor type ") + type_name(w.type));
  STRATA_CUDA_LAUNCHED();
}

template <int NT>
void gate_up_n(const WeightView& gate, const WeightView& up, const int8_t* xq, const float* xd, bool gelu, float* out,
               cudaStream_t stream) {
  const unsigned grid = blocks_for(gate.n_rows, kWarpsPerBlock);
  const bool chunked = with_block(gate.type, [&](auto block) {
    using Block = decltype(block);
    auto launch = [&](auto pieces, auto act) {
      gate_up_q8<Block, NT, decltype(pieces)::value, decltype(act)::value><<<grid, kWarpsPerBlock * 32, 0, stream>>>(
          gate.data, up.data, gate.row_bytes, gate.n_rows, gate.n_cols, xq, xd, out);
    };
    using Yes = std::integral_constant<bool, chunks::Pieces<Block>::kHas>;
    using No = std::false_type;
    if (use_pieces<Block>(gate.data, gate.row_bytes) && use_pieces<Block>(up.data, up.row_bytes))
      gelu ? launch(Yes{}, std::true_type{}) : launch(Yes{}, std::false_type{});
    else
      gelu ? launch(No{}, std::true_type{}) : launch(No{}, std::false_type{});
  });
  if (!chunked) throw Error(std::string("cuda gate_up: no fused kernel for tensor type ") + type_name(gate.type));
  STRATA_CUDA_LAUNCHED();
}

}  // namespace

void gate_up(const WeightView& gate, const WeightView& up, const int8_t* xq, const float* xd, int n_tokens, bool gelu,
             float* out, cudaStream_t stream) {
  if (n_tokens != 1 || gate.type != up.type || gate.n_rows != up.n_rows || gate.n_cols != up.n_cols ||
      gate.row_bytes != up.row_bytes)
    throw Error("cuda gate_up: " + std::to_string(n_tokens) + " tokens, gate " + type_name(gate.type) + " " +
                std::to_string(gate.n_rows) + "x" + std::to_string(gate.n_cols) + ", up " + type_name(up.type) + " " +
                std::to_string(up.n_rows) + "x" + std::to_string(up.n_cols) + " (one token, one type and shape)");
  gate_up_n<1>(gate, up, xq, xd, gelu, out, stream);
}

void set_matvec_warps_per_row(int warps) { g_matvec_warps = warps == 1 || warps == 2 || warps == 4 ? warps : 0; }

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
