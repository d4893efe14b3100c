// Attention over the f16 KV cache, flash style: a block takes one head and up to kRows tokens;
// its warps walk 32-position tiles of the visible context (keys staged in shared memory), each
// keeping an online softmax (running max, sum, weighted V) per token; the warps' partial results
// merge at the end. When a batch gives too few blocks to fill the GPU (decode), the context is split
// among blocks (flash-decoding) whose partial results a second kernel combines. These kernels serve
// decode and small batches; prompts of 16 tokens or more go to the tensor cores (attention_mma.cu)
// where the head dims allow. q is rounded to f16 as the CPU path does; scores, probabilities and
// sums stay in f32.
#include <algorithm>
#include <cfloat>

#include "backend/backend.h"
#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/rowdot.cuh"

namespace strata::backend::cuda {

namespace {

constexpr int kRows = 4;   // tokens per block
constexpr int kWarps = 4;  // warps per block, each a share of the tiles
constexpr int kTile = 32;  // positions per tile (one per lane)

struct Params {
  AttentionArgs a;
  int group;
  int k_pitch;      // halves per staged key row: head_dim_k + 4 keeps rows 8-byte aligned, lanes on distinct banks
  int n_split;      // blocks sharing one (head, token block)'s context, blockIdx.z the share
  float* partials;  // n_split > 1: [n_tokens][n_head][n_split] x (m, l, acc[head_dim_v])
};

// Token t's head `head` from its n_split partial results (m, l, acc), by the calling block's
// threads; the output quantized too where asked (whole warps take whole chunks: head_dim_v a
// multiple of 32). Reads bypass L1: other blocks of this launch may just have written them.
__device__ void combine_split(const AttentionArgs& a, int n_split, const float* partials, int t, int head) {
  const int stride = 2 + a.head_dim_v;
  const float* part = partials + (int64_t(t) * a.n_head + head) * n_split * stride;
  float mx = -FLT_MAX;
  for (int s = 0; s < n_split; ++s)
    if (__ldcg(part + s * stride + 1) > 0.0f) mx = fmaxf(mx, __ldcg(part + s * stride));
  for (int d = threadIdx.x; d < a.head_dim_v; d += blockDim.x) {
    float num = 0.0f, den = 0.0f;
    for (int s = 0; s < n_split; ++s) {
      const float l = __ldcg(part + s * stride + 1);
      if (l <= 0.0f) continue;
      const float f = __expf(__ldcg(part + s * stride) - mx);
      num += f * __ldcg(part + s * stride + 2 + d);
      den += f * l;
    }
    const int64_t at = t * a.out_stride + int64_t(head) * a.head_dim_v + d;
    a.out[at] = num / den;
    if (a.out_q) quantize_q8_lane(num / den, threadIdx.x % 32, a.out_q + (at - threadIdx.x % 32), a.out_qd + at / 32);
  }
}

// VPL: values of the output head per lane (head_dim_v = 32 * VPL at most, even).
template <int VPL>
__global__ void __launch_bounds__(kWarps * 32) attention_kernel(Params p) {
  const AttentionArgs& a = p.a;
  extern __shared__ float smem[];
  float* q_s = smem;                                                    // [kRows][head_dim_k]
  __half* k_s = reinterpret_cast<__half*>(q_s + kRows * a.head_dim_k);  // [kWarps][kTile][k_pitch]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int head = blockIdx.x;
  const int kv_head = head / p.group;
  const int t0 = blockIdx.y * kRows;
  const int64_t pos0 = a.pos_dev ? *a.pos_dev : a.pos0;
  const int n_rows = min(kRows, a.n_tokens - t0);

  for (int i = threadIdx.x; i < kRows * a.head_dim_k; i += blockDim.x) {
    const int r = i / a.head_dim_k, d = i % a.head_dim_k;
    q_s[i] = r < n_rows ? __half2float(__float2half_rn(a.q[(t0 + r) * a.q_stride + int64_t(head) * a.head_dim_k + d]))
                        : 0.0f;
  }
  __syncthreads();

  int64_t last = pos0 + t0 + n_rows - 1;
  int64_t lo = a.window > 0 ? max(int64_t(0), pos0 + t0 - a.window + 1) : 0;
  if (p.n_split > 1) {  // this block's share of the tiles
    const int64_t n_tiles = (last - lo + kTile) / kTile;
    const int64_t per = (n_tiles + p.n_split - 1) / p.n_split;
    const int64_t end = min(last, lo + (blockIdx.z + 1) * per * kTile - 1);
    lo += blockIdx.z * per * kTile;
    last = end;
  }
  float m[kRows], l[kRows], acc[kRows][VPL];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    m[r] = -FLT_MAX;
    l[r] = 0.0f;
#pragma unroll
    for (int v = 0; v < VPL; ++v) acc[r][v] = 0.0f;
  }
  __half* k_tile = k_s + warp * kTile * p.k_pitch;
  const __half* k_base = reinterpret_cast<const __half*>(a.k_cache) + int64_t(kv_head) * a.head_dim_k;
  const __half* v_base = reinterpret_cast<const __half*>(a.v_cache) + int64_t(kv_head) * a.head_dim_v;

  for (int64_t start = lo + int64_t(warp) * kTile; start <= last; start += int64_t(kWarps) * kTile) {
    // Stage the tile's keys: row j at k_tile[j * k_pitch], two halves per lane per step.
    for (int j = 0; j < kTile; ++j) {
      const int64_t pos = min(start + j, last);
      const __half2* src = reinterpret_cast<const __half2*>(k_base + (pos % a.n_slots) * a.k_width);
      for (int d = lane; d < a.head_dim_k / 2; d += 32) reinterpret_cast<__half2*>(k_tile + j * p.k_pitch)[d] = src[d];
    }
    __syncwarp();
    const int64_t kpos = start + lane;
    float pr[kRows];  // this lane's position's probability per token (0: invisible)
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      pr[r] = 0.0f;
      if (r >= n_rows) continue;
      const int64_t pos = pos0 + t0 + r;
      const int64_t first = a.window > 0 ? max(int64_t(0), pos - a.window + 1) : 0;
      if (start > pos || start + kTile - 1 < first) continue;  // tile invisible to this token (uniform)
      const bool valid = kpos >= first && kpos <= pos;
      float s = -FLT_MAX;
      if (valid) {
        const float* q = q_s + r * a.head_dim_k;
        float dot = 0.0f;
        if (a.head_dim_k % 4 == 0) {  // four dimensions a step: one 16-byte q and one 8-byte k load
          const float4* q4 = reinterpret_cast<const float4*>(q);
          const uint2* k4 = reinterpret_cast<const uint2*>(k_tile + lane * p.k_pitch);
          for (int d = 0; d < a.head_dim_k / 4; ++d) {
            const float4 qv = q4[d];
            const uint2 kk = k4[d];
            const float2 k0 = __half22float2(*reinterpret_cast<const __half2*>(&kk.x));
            const float2 k1 = __half22float2(*reinterpret_cast<const __half2*>(&kk.y));
            dot += qv.x * k0.x + qv.y * k0.y + qv.z * k1.x + qv.w * k1.y;
          }
        } else {
          const __half2* kr = reinterpret_cast<const __half2*>(k_tile + lane * p.k_pitch);
          for (int d = 0; d < a.head_dim_k / 2; ++d) {
            const float2 kv = __half22float2(kr[d]);
            dot += q[2 * d] * kv.x + q[2 * d + 1] * kv.y;
          }
        }
        s = dot * a.kq_scale;
      }
      float tile_max = s;
      for (int o = 16; o > 0; o >>= 1) tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, o));
      const float m_new = fmaxf(m[r], tile_max);
      const float corr = __expf(m[r] - m_new);
      pr[r] = valid ? __expf(s - m_new) : 0.0f;
      float sum = pr[r];
      for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
      l[r] = l[r] * corr + sum;
#pragma unroll
      for (int v = 0; v < VPL; ++v) acc[r][v] *= corr;
      m[r] = m_new;
    }
    // Weighted values: each V row read once for all the block's tokens, two halves per lane per
    // step (dimension 2 lane + 64 (v / 2) + v % 2), the tile's loads unrolled so they overlap.
    // Positions past the last are clamped to it (their probability is 0; the slot ahead may hold
    // anything, even non-finite bits).
#pragma unroll 8
    for (int j = 0; j < kTile; ++j) {
      const __half* vr = v_base + (min(start + j, last) % a.n_slots) * a.v_width;
      float2 val[VPL / 2];
#pragma unroll
      for (int v = 0; v < VPL / 2; ++v) {
        const int d = 2 * lane + 64 * v;
        val[v] = d < a.head_dim_v ? __half22float2(*reinterpret_cast<const __half2*>(vr + d)) : make_float2(0.0f, 0.0f);
      }
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const float pj = __shfl_sync(0xffffffffu, pr[r], j);
#pragma unroll
        for (int v = 0; v < VPL / 2; ++v) {
          acc[r][2 * v] += pj * val[v].x;
          acc[r][2 * v + 1] += pj * val[v].y;
        }
      }
    }
    __syncwarp();
  }

  // Merge the warps: each writes (m, l, acc) per token; then all threads combine.
  __syncthreads();
  float* m_s = smem;                    // [kWarps][kRows]
  float* l_s = m_s + kWarps * kRows;    // [kWarps][kRows]
  float* acc_s = l_s + kWarps * kRows;  // [kWarps][kRows][head_dim_v]
  if (lane == 0)
    for (int r = 0; r < kRows; ++r) {
      m_s[warp * kRows + r] = m[r];
      l_s[warp * kRows + r] = l[r];
    }
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int v = 0; v < VPL; ++v) {
      const int d = 2 * lane + 64 * (v / 2) + v % 2;
      if (d < a.head_dim_v) acc_s[(warp * kRows + r) * a.head_dim_v + d] = acc[r][v];
    }
  __syncthreads();
  const int stride = 2 + a.head_dim_v;
  for (int i = threadIdx.x; i < n_rows * a.head_dim_v; i += blockDim.x) {
    const int r = i / a.head_dim_v, d = i % a.head_dim_v;
    float mx = -FLT_MAX;
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, m_s[w * kRows + r]);
    float num = 0.0f, den = 0.0f;
    for (int w = 0; w < kWarps; ++w) {
      const float f = l_s[w * kRows + r] > 0.0f ? __expf(m_s[w * kRows + r] - mx) : 0.0f;
      num += f * acc_s[(w * kRows + r) * a.head_dim_v + d];
      den += f * l_s[w * kRows + r];
    }
    if (p.n_split == 1) {
      const int64_t at = (t0 + r) * a.out_stride + int64_t(head) * a.head_dim_v + d;
      a.out[at] = num / den;
      if (a.out_q) quantize_q8_lane(num / den, threadIdx.x % 32, a.out_q + (at - threadIdx.x % 32), a.out_qd + at / 32);
    } else {
      float* part = p.partials + ((int64_t(t0 + r) * a.n_head + head) * p.n_split + blockIdx.z) * stride;
      if (d == 0) {
        part[0] = mx;
        part[1] = den;
      }
      part[2 + d] = num;
    }
  }
  // Split: the last of the (token block, head)'s blocks to finish combines them all (no second
  // launch) and resets the count for the next launch.
  if (p.n_split > 1 && a.split_counters) {
    __shared__ bool last;
    __threadfence();  // this block's partials reach device memory before its count
    __syncthreads();
    if (threadIdx.x == 0) {
      int* count = a.split_counters + int64_t(blockIdx.y) * a.n_head + head;
      last = atomicAdd(count, 1) == p.n_split - 1;
      if (last) *count = 0;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    for (int r = 0; r < n_rows; ++r) combine_split(a, p.n_split, p.partials, t0 + r, head);
  }
}

// One block per (token, head): the splits' partial softmax sums combined (combine_split).
__global__ void combine_kernel(AttentionArgs a, int n_split, const float* partials) {
  combine_split(a, n_split, partials, blockIdx.y, blockIdx.x);
}

constexpr int kMaxSplit = 32;

// Blocks enough for two per multiprocessor, each share at least one tile per warp.
int split_count(const AttentionArgs& a, int n_sm) {
  const int64_t blocks = int64_t(a.n_head) * ((a.n_tokens + kRows - 1) / kRows);
  const int64_t ctx =
      a.window > 0 ? std::min<int64_t>(a.window + a.n_tokens, a.pos0 + a.n_tokens) : a.pos0 + a.n_tokens;
  // A replayable graph's split may not depend on the position: as many as the shape takes (the
  // blocks past the context find no tiles).
  const int64_t by_ctx = a.pos_dev ? kMaxSplit : std::max<int64_t>(1, ctx / (int64_t(kWarps) * kTile));
  const int64_t want = (2 * int64_t(n_sm) + blocks - 1) / blocks;
  return int(std::max<int64_t>(1, std::min<int64_t>({want, by_ctx, kMaxSplit})));
}

template <int VPL>
void launch(const Params& p, cudaStream_t stream) {
  const AttentionArgs& a = p.a;
  const size_t stage = size_t(kRows) * a.head_dim_k * 4 + size_t(kWarps) * kTile * p.k_pitch * 2;
  const size_t merge = size_t(kWarps) * kRows * (2 + a.head_dim_v) * 4;
  const size_t bytes = stage > merge ? stage : merge;
  static bool configured = false;  // per instantiation: allow the largest staging area once
  if (!configured) {
    STRATA_CUDA_CHECK(
        cudaFuncSetAttribute(attention_kernel<VPL>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             int(size_t(kRows) * kMaxHeadDim * 4 + size_t(kWarps) * kTile * (kMaxHeadDim + 4) * 2)));
    configured = true;
  }
  const dim3 grid(unsigned(a.n_head), unsigned((a.n_tokens + kRows - 1) / kRows), unsigned(p.n_split));
  attention_kernel<VPL><<<grid, kWarps * 32, bytes, stream>>>(p);
  STRATA_CUDA_LAUNCHED();
  if (p.n_split > 1 && !a.split_counters) {
    combine_kernel<<<dim3(unsigned(a.n_head), unsigned(a.n_tokens)), 128, 0, stream>>>(a, p.n_split, p.partials);
    STRATA_CUDA_LAUNCHED();
  }
}

}  // namespace

size_t attention_partials_bytes(const AttentionArgs& a, int n_sm) {
  const int n_split = split_count(a, n_sm);
  return n_split > 1 ? size_t(a.n_tokens) * a.n_head * n_split * (2 + a.head_dim_v) * sizeof(float) : 0;
}

size_t attention_counters_max(const AttentionArgs& a) {
  return size_t((a.n_tokens + kRows - 1) / kRows) * size_t(a.n_head);
}

size_t attention_partials_bytes_max(const AttentionArgs& a) {
  return size_t(a.n_tokens) * a.n_head * kMaxSplit * (2 + a.head_dim_v) * sizeof(float);
}

// partials: attention_partials_bytes(a, n_sm) bytes of device scratch (may be null when 0).
bool attention(const AttentionArgs& a, float* partials, int n_sm, cudaStream_t stream) {
  if (a.n_tokens <= 0) return false;
  if (a.head_dim_k <= 0 || a.head_dim_k > kMaxHeadDim || a.head_dim_k % 2 || a.head_dim_v <= 0 || a.head_dim_v % 2 ||
      a.head_dim_v > kMaxHeadDim || a.n_head_kv <= 0 || a.n_head % a.n_head_kv || a.n_slots <= 0)
    throw Error("cuda attention: unsupported heads (head_dim_k " + std::to_string(a.head_dim_k) + ", head_dim_v " +
                std::to_string(a.head_dim_v) + ", n_head " + std::to_string(a.n_head) + ", n_head_kv " +
                std::to_string(a.n_head_kv) + ", " + std::to_string(a.n_slots) + " cache rows)");
  if (attention_mma(a, stream)) return false;  // prompts: the tensor-core kernel (never quantizes)
  if (a.out_q && (a.head_dim_v % 32 || a.out_stride != int64_t(a.n_head) * a.head_dim_v))
    throw Error("cuda attention: a quantized output needs whole chunks of 32 (head_dim_v " +
                std::to_string(a.head_dim_v) + ")");
  Params p{a, a.n_head / a.n_head_kv, a.head_dim_k + 4, partials ? split_count(a, n_sm) : 1, partials};
  if (a.head_dim_v <= 64)
    launch<2>(p, stream);
  else if (a.head_dim_v <= 128)
    launch<4>(p, stream);
  else
    launch<8>(p, stream);
  return a.out_q != nullptr;
}

}  // namespace strata::backend::cuda
