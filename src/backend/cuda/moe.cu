// Expert kernels of mixture-of-experts layers (llama.cpp's mul_mat_id idea): the decode matvecs
// read each slot's expert id from device memory, so a token's routing never crosses to the host
// and decode stays one CUDA graph; the prompt path's gathers and scatters around one GEMM per
// expert; the weighted sum of the slots and the shared expert's sigmoid gate.
#include <cuda_fp16.h>  // before chunks.h: its device half conversions

#include "backend/cuda/chunks.h"
#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/dispatch.cuh"
#include "backend/cuda/rowdot.cuh"

namespace strata::backend::cuda {
namespace {

constexpr int kWarps = 4;  // rows per block, one warp each

unsigned blocks_for(int64_t n, int per_block) { return unsigned((n + per_block - 1) / per_block); }

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Where slot s's expert lives: its slot in the expert arrays, or -1 (not here, or an id out of range).
__device__ __forceinline__ int expert_slot(const ExpertSlots& x, int s) {
  const int e = x.chosen[s];
  if (e < 0 || e >= x.n_expert) return -1;
  if (x.slot_of) return x.slot_of[e];
  if (x.single >= 0) return e == x.single ? 0 : -1;
  return e;
}

// Gate and up rows of slot blockIdx.y's expert against its token's int8 activations: one warp a
// row of each (rowdot.cuh).
template <typename Block, bool kPieces>
__global__ void __launch_bounds__(kWarps * 32)
    gate_up_q8(ExpertSlots x, const uint8_t* gate, size_t gate_stride, const uint8_t* up, size_t up_stride,
               size_t row_bytes, int64_t n_rows, int64_t n_cols, const int8_t* xq, const float* xd, float* g,
               float* u) {
  const int s = blockIdx.y;
  const int slot = expert_slot(x, s);
  const int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (slot < 0 || row >= n_rows) return;
  const int lane = threadIdx.x % 32;
  const int t = s / x.k;
  const int8_t* xt = xq + int64_t(t) * n_cols;
  const float* dt = xd + int64_t(t) * (n_cols / 32);
  float acc_g[1] = {0.0f}, acc_u[1] = {0.0f};
  row_dot_q8<Block, 1, kPieces>(gate + size_t(slot) * gate_stride + size_t(row) * row_bytes, n_cols, xt, dt, lane,
                                acc_g);
  row_dot_q8<Block, 1, kPieces>(up + size_t(slot) * up_stride + size_t(row) * row_bytes, n_cols, xt, dt, lane, acc_u);
  const float sg = warp_sum(acc_g[0]), su = warp_sum(acc_u[0]);
  if (lane == 0) {
    g[int64_t(s) * n_rows + row] = sg;
    u[int64_t(s) * n_rows + row] = su;
  }
}

template <typename F>
__global__ void __launch_bounds__(kWarps * 32)
    gate_up_float(ExpertSlots x, const uint8_t* gate, size_t gate_stride, const uint8_t* up, size_t up_stride,
                  size_t row_bytes, int64_t n_rows, int64_t n_cols, const float* in, float* g, float* u) {
  const int s = blockIdx.y;
  const int slot = expert_slot(x, s);
  const int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (slot < 0 || row >= n_rows) return;
  const int lane = threadIdx.x % 32;
  const float* xr = in + int64_t(s / x.k) * n_cols;
  const uint8_t* gr = gate + size_t(slot) * gate_stride + size_t(row) * row_bytes;
  const uint8_t* ur = up + size_t(slot) * up_stride + size_t(row) * row_bytes;
  float acc_g = 0.0f, acc_u = 0.0f;
  for (int64_t i = 2 * lane; i < n_cols; i += 64) {
    const float2 xv = *reinterpret_cast<const float2*>(xr + i);
    const float2 gv = F::load2(gr, i), uv = F::load2(ur, i);
    acc_g += gv.x * xv.x + gv.y * xv.y;
    acc_u += uv.x * xv.x + uv.y * xv.y;
  }
  acc_g = warp_sum(acc_g);
  acc_u = warp_sum(acc_u);
  if (lane == 0) {
    g[int64_t(s) * n_rows + row] = acc_g;
    u[int64_t(s) * n_rows + row] = acc_u;
  }
}

// Down rows of slot blockIdx.y's expert against the slot's own int8 activations, times its weight.
template <typename Block, bool kPieces>
__global__ void __launch_bounds__(kWarps * 32)
    down_q8(ExpertSlots x, const uint8_t* down, size_t stride, size_t row_bytes, int64_t n_rows, int64_t n_cols,
            const int8_t* aq, const float* ad, const float* weights, float* out) {
  const int s = blockIdx.y;
  const int slot = expert_slot(x, s);
  const int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (slot < 0 || row >= n_rows) return;
  const int lane = threadIdx.x % 32;
  float acc[1] = {0.0f};
  row_dot_q8<Block, 1, kPieces>(down + size_t(slot) * stride + size_t(row) * row_bytes, n_cols,
                                aq + int64_t(s) * n_cols, ad + int64_t(s) * (n_cols / 32), lane, acc);
  const float sum = warp_sum(acc[0]);
  if (lane == 0) out[int64_t(s) * n_rows + row] = sum * weights[s];
}

template <typename F>
__global__ void __launch_bounds__(kWarps * 32)
    down_float(ExpertSlots x, const uint8_t* down, size_t stride, size_t row_bytes, int64_t n_rows, int64_t n_cols,
               const float* in, const float* weights, float* out) {
  const int s = blockIdx.y;
  const int slot = expert_slot(x, s);
  const int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (slot < 0 || row >= n_rows) return;
  const int lane = threadIdx.x % 32;
  const float* ar = in + int64_t(s) * n_cols;
  const uint8_t* wr = down + size_t(slot) * stride + size_t(row) * row_bytes;
  float acc = 0.0f;
  for (int64_t i = 2 * lane; i < n_cols; i += 64) {
    const float2 av = *reinterpret_cast<const float2*>(ar + i);
    const float2 wv = F::load2(wr, i);
    acc += wv.x * av.x + wv.y * av.y;
  }
  acc = warp_sum(acc);
  if (lane == 0) out[int64_t(s) * n_rows + row] = acc * weights[s];
}

// out[i] = x[token of slot perm[i]] for i < count, rows of n.
__global__ void gather_kernel(const float* x, int64_t n, const int32_t* perm, int k, int count, float* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(count) * n) return;
  const int64_t r = i / n, c = i % n;
  out[i] = x[int64_t(perm[r] / k) * n + c];
}

// out[perm[i]] = d[i] * weights[perm[i]] for i < count, rows of n.
__global__ void scatter_kernel(const float* d, int64_t n, const int32_t* perm, const float* weights, int count,
                               float* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(count) * n) return;
  const int64_t r = i / n, c = i % n;
  const int s = perm[r];
  out[int64_t(s) * n + c] = d[i] * weights[s];
}

// As the CPU: out = slot 0, then += each later slot in order.
__global__ void sum_kernel(const float* slots, int n_tokens, int k, int64_t n, float* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(n_tokens) * n) return;
  const int64_t t = i / n, c = i % n;
  const float* r = slots + t * k * n + c;
  float v = r[0];
  for (int j = 1; j < k; ++j) v += r[int64_t(j) * n];
  out[i] = v;
}

__global__ void add_sigmoid_gated_kernel(float* x, const float* y, const float* gate_logit, int n_tokens, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(n_tokens) * n) return;
  const float scale = 1.0f / (1.0f + expf(-gate_logit[i / n]));
  x[i] += y[i] * scale;
}

}  // namespace

void moe_gate_up(const ExpertSlots& x, const WeightView& gate, size_t gate_stride, const WeightView& up,
                 size_t up_stride, const int8_t* xq, const float* xd, const float* in, float* g, float* u,
                 cudaStream_t stream) {
  if (x.n_slots <= 0) return;
  const dim3 grid(blocks_for(gate.n_rows, kWarps), unsigned(x.n_slots));
  const bool chunked = with_block(gate.type, [&](auto block) {
    using Block = decltype(block);
    if (use_pieces<Block>(gate.data, gate.row_bytes, gate_stride) && use_pieces<Block>(up.data, up.row_bytes, up_stride))
      gate_up_q8<Block, chunks::Pieces<Block>::kHas><<<grid, kWarps * 32, 0, stream>>>(
          x, gate.data, gate_stride, up.data, up_stride, gate.row_bytes, gate.n_rows, gate.n_cols, xq, xd, g, u);
    else
      gate_up_q8<Block, false><<<grid, kWarps * 32, 0, stream>>>(x, gate.data, gate_stride, up.data, up_stride,
                                                                 gate.row_bytes, gate.n_rows, gate.n_cols, xq, xd, g, u);
  });
  if (!chunked && !with_float(gate.type, [&](auto f) {
        using F = decltype(f);
        gate_up_float<F><<<grid, kWarps * 32, 0, stream>>>(x, gate.data, gate_stride, up.data, up_stride,
                                                           gate.row_bytes, gate.n_rows, gate.n_cols, in, g, u);
      }))
    throw Error(std::string("cuda moe: no kernels for expert type ") + type_name(gate.type));
  STRATA_CUDA_LAUNCHED();
}

void moe_down(const ExpertSlots& x, const WeightView& down, size_t stride, const int8_t* aq, const float* ad,
              const float* a, const float* weights, float* out, cudaStream_t stream) {
  if (x.n_slots <= 0) return;
  const dim3 grid(blocks_for(down.n_rows, kWarps), unsigned(x.n_slots));
  const bool chunked = with_block(down.type, [&](auto block) {
    using Block = decltype(block);
    if (use_pieces<Block>(down.data, down.row_bytes, stride))
      down_q8<Block, chunks::Pieces<Block>::kHas><<<grid, kWarps * 32, 0, stream>>>(
          x, down.data, stride, down.row_bytes, down.n_rows, down.n_cols, aq, ad, weights, out);
    else
      down_q8<Block, false><<<grid, kWarps * 32, 0, stream>>>(x, down.data, stride, down.row_bytes, down.n_rows,
                                                              down.n_cols, aq, ad, weights, out);
  });
  if (!chunked && !with_float(down.type, [&](auto f) {
        using F = decltype(f);
        down_float<F><<<grid, kWarps * 32, 0, stream>>>(x, down.data, stride, down.row_bytes, down.n_rows,
                                                        down.n_cols, a, weights, out);
      }))
    throw Error(std::string("cuda moe: no kernels for expert type ") + type_name(down.type));
  STRATA_CUDA_LAUNCHED();
}

void moe_gather(const float* x, int64_t n, const int32_t* perm, int k, int count, float* out, cudaStream_t stream) {
  if (count <= 0) return;
  gather_kernel<<<blocks_for(int64_t(count) * n, 256), 256, 0, stream>>>(x, n, perm, k, count, out);
  STRATA_CUDA_LAUNCHED();
}

void moe_scatter(const float* d, int64_t n, const int32_t* perm, const float* weights, int count, float* out,
                 cudaStream_t stream) {
  if (count <= 0) return;
  scatter_kernel<<<blocks_for(int64_t(count) * n, 256), 256, 0, stream>>>(d, n, perm, weights, count, out);
  STRATA_CUDA_LAUNCHED();
}

void moe_sum(const float* slots, int n_tokens, int k, int64_t n, float* out, cudaStream_t stream) {
  if (n_tokens <= 0) return;
  sum_kernel<<<blocks_for(int64_t(n_tokens) * n, 256), 256, 0, stream>>>(slots, n_tokens, k, n, out);
  STRATA_CUDA_LAUNCHED();
}

void add_sigmoid_gated(float* x, const float* y, const float* gate_logit, int n_tokens, int64_t n,
                       cudaStream_t stream) {
  if (n_tokens <= 0) return;
  add_sigmoid_gated_kernel<<<blocks_for(int64_t(n_tokens) * n, 256), 256, 0, stream>>>(x, y, gate_logit, n_tokens,
                                                                                        n);
  STRATA_CUDA_LAUNCHED();
}

}  // namespace strata::backend::cuda
