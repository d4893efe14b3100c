// The KV cache in any of its types (f16, q8_0, q4_0) and attention sinks on the GPU: the cache
// stores written byte for byte as the CPU's ops::kv_store writes them, and an attention kernel that
// reads every cache type and adds gpt-oss's sinks. attention.cu keeps the f16 cache without sinks
// (its tensor-core prompt path and tuned decode); everything else comes here.
//
// Numerics follow the CPU's paths (src/ops/attention.cpp): for quantized caches the query is
// rounded through Q8_0 (the keys' vec_dot type), keys and values dequantized to f32, scores
// scale * q.k, an online softmax in f32 divided at the end; for f16 caches the query is rounded to
// f16. Sinks join the softmax's max and sum after the keys, with no value.
#include <cfloat>

#include "backend/cuda/cuda_internal.h"
#include "tensor/blocks.h"

namespace strata::backend::cuda {
namespace {

unsigned blocks_for(int64_t n, int per_block) { return unsigned((n + per_block - 1) / per_block); }

__device__ __forceinline__ float half_bits_to_float(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ uint16_t float_to_half_bits(float f) { return __half_as_ushort(__float2half_rn(f)); }

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// ---- stores

// One warp per 32-value block of a q8_0 row: as quantize_act_q8_0 (d = amax / 127 stored as f16,
// q = nearbyint(x * 127 / amax)).
__global__ void store_q8_0_kernel(const float* src, int64_t width, int n_tokens, int64_t pos0, int64_t n_slots,
                                  uint8_t* cache, size_t row_bytes, const int64_t* pos_dev) {
  if (pos_dev) pos0 = *pos_dev;
  const int64_t per_row = width / 32;
  const int64_t block = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (block >= int64_t(n_tokens) * per_row) return;
  const int lane = threadIdx.x % 32;
  const int64_t t = block / per_row, b = block % per_row;
  const float x = src[t * width + b * 32 + lane];
  const float amax = warp_max(fabsf(x));
  BlockQ8_0* out = reinterpret_cast<BlockQ8_0*>(cache + size_t((pos0 + t) % n_slots) * row_bytes) + b;
  const float id = amax != 0.0f ? __fdiv_rn(127.0f, amax) : 0.0f;
  out->qs[lane] = int8_t(__float2int_rn(__fmul_rn(x, id)));
  if (lane == 0) out->d = float_to_half_bits(__fdiv_rn(amax, 127.0f));
}

// One thread per 32-value block of a q4_0 row: as quantize_q4_0 (the reference rounding: the
// signed value of largest magnitude, the first on ties, over -8; q = min(15, trunc(x / d + 8.5))).
__global__ void store_q4_0_kernel(const float* src, int64_t width, int n_tokens, int64_t pos0, int64_t n_slots,
                                  uint8_t* cache, size_t row_bytes, const int64_t* pos_dev) {
  if (pos_dev) pos0 = *pos_dev;
  const int64_t per_row = width / 32;
  const int64_t block = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (block >= int64_t(n_tokens) * per_row) return;
  const int64_t t = block / per_row, b = block % per_row;
  const float* x = src + t * width + b * 32;
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < 32; ++j)
    if (amax < fabsf(x[j])) {
      amax = fabsf(x[j]);
      max = x[j];
    }
  const float d = __fdiv_rn(max, -8.0f);
  const float id = d != 0.0f ? __fdiv_rn(1.0f, d) : 0.0f;
  BlockQ4_0* out = reinterpret_cast<BlockQ4_0*>(cache + size_t((pos0 + t) % n_slots) * row_bytes) + b;
  out->d = float_to_half_bits(d);
  for (int j = 0; j < 16; ++j) {
    const int q0 = min(15, int(int8_t(__fadd_rn(__fmul_rn(x[j], id), 8.5f))));
    const int q1 = min(15, int(int8_t(__fadd_rn(__fmul_rn(x[j + 16], id), 8.5f))));
    out->qs[j] = uint8_t(q0 | (q1 << 4));
  }
}

__global__ void store_f16_kernel(const float* src, int64_t width, int n_tokens, int64_t pos0, int64_t n_slots,
                                 uint8_t* cache, size_t row_bytes, const int64_t* pos_dev) {
  if (pos_dev) pos0 = *pos_dev;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(n_tokens) * width) return;
  const int64_t t = i / width, c = i % width;
  reinterpret_cast<uint16_t*>(cache + size_t((pos0 + t) % n_slots) * row_bytes)[c] = float_to_half_bits(src[i]);
}

// ---- reading one element of a cached head

// Element i of one head of `type` at `head` (the cache's bytes of that head and position).
template <KvType kType>
__device__ __forceinline__ float kv_value(const uint8_t* head, int i) {
  if constexpr (kType == KvType::f16) {
    return half_bits_to_float(reinterpret_cast<const uint16_t*>(head)[i]);
  } else if constexpr (kType == KvType::q8_0) {
    const BlockQ8_0* b = reinterpret_cast<const BlockQ8_0*>(head) + i / 32;
    return float(b->qs[i % 32]) * half_bits_to_float(b->d);
  } else {
    const BlockQ4_0* b = reinterpret_cast<const BlockQ4_0*>(head) + i / 32;
    const int j = i % 32;
    const int q = j < 16 ? (b->qs[j] & 0x0F) : (b->qs[j - 16] >> 4);
    return float(q - 8) * half_bits_to_float(b->d);
  }
}

// ---- attention

constexpr int kWarps = 8;  // warps per block, each a share of the context's tiles
constexpr int kTile = 32;  // positions per tile (one per lane)

// One block per (head, token). VPL: output values per lane (head_dim_v <= 32 * VPL).
template <KvType kKey, KvType kVal, int VPL>
__global__ void __launch_bounds__(kWarps * 32) attention_ext_kernel(AttentionExtArgs a) {
  __shared__ float q_s[kMaxHeadDim];
  __shared__ float m_s[kWarps], l_s[kWarps];
  __shared__ float acc_s[kWarps][kMaxHeadDim];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int head = blockIdx.x, t = blockIdx.y;
  const int kv_head = head / (a.n_head / a.n_head_kv);
  const int64_t pos0 = a.pos_dev ? *a.pos_dev : a.pos0;
  const int64_t pos = pos0 + t;
  const int64_t first = a.window > 0 ? max(int64_t(0), pos - a.window + 1) : 0;

  // The query rounded as the keys' dot rounds it: f16 for f16 keys, else through Q8_0.
  const float* q = a.q + int64_t(t) * a.q_stride + int64_t(head) * a.head_dim_k;
  if constexpr (kKey == KvType::f16) {
    for (int i = threadIdx.x; i < a.head_dim_k; i += blockDim.x) q_s[i] = __half2float(__float2half_rn(q[i]));
  } else {
    for (int c = warp; c < a.head_dim_k / 32; c += kWarps) {
      const float x = q[c * 32 + lane];
      const float amax = warp_max(fabsf(x));
      const float d = half_bits_to_float(float_to_half_bits(__fdiv_rn(amax, 127.0f)));
      const float id = amax != 0.0f ? __fdiv_rn(127.0f, amax) : 0.0f;
      q_s[c * 32 + lane] = float(int8_t(__float2int_rn(__fmul_rn(x, id)))) * d;
    }
  }
  __syncthreads();

  float m = -FLT_MAX, l = 0.0f, acc[VPL];
#pragma unroll
  for (int v = 0; v < VPL; ++v) acc[v] = 0.0f;
  for (int64_t start = first + int64_t(warp) * kTile; start <= pos; start += int64_t(kWarps) * kTile) {
    const int64_t kpos = start + lane;
    const bool valid = kpos <= pos;
    float s = -FLT_MAX;
    if (valid) {
      const uint8_t* kh = a.k + size_t(kpos % a.n_slots) * a.k_row_bytes + size_t(kv_head) * a.k_head_bytes;
      float dot = 0.0f;
      for (int i = 0; i < a.head_dim_k; ++i) dot += q_s[i] * kv_value<kKey>(kh, i);
      s = a.kq_scale * dot;
    }
    const float m_new = fmaxf(m, warp_max(s));
    const float corr = expf(m - m_new);
    const float p = valid ? expf(s - m_new) : 0.0f;
    l = l * corr + warp_sum(p);
#pragma unroll
    for (int v = 0; v < VPL; ++v) acc[v] *= corr;
    m = m_new;
    // Values: lane owns dimensions lane + 32 v; positions past the last are never read.
    const int n_valid = int(min(int64_t(kTile), pos - start + 1));
    for (int j = 0; j < n_valid; ++j) {
      const float pj = __shfl_sync(0xffffffffu, p, j);
      const uint8_t* vh = a.v + size_t((start + j) % a.n_slots) * a.v_row_bytes + size_t(kv_head) * a.v_head_bytes;
#pragma unroll
      for (int v = 0; v < VPL; ++v) {
        const int d = lane + 32 * v;
        if (d < a.head_dim_v) acc[v] += pj * kv_value<kVal>(vh, d);
      }
    }
  }

  // Merge the warps (a warp that saw no position has l = 0), then the sink, then divide.
  if (lane == 0) {
    m_s[warp] = m;
    l_s[warp] = l;
  }
#pragma unroll
  for (int v = 0; v < VPL; ++v) {
    const int d = lane + 32 * v;
    if (d < a.head_dim_v) acc_s[warp][d] = acc[v];
  }
  __syncthreads();
  float mx = -FLT_MAX;
  for (int w = 0; w < kWarps; ++w)
    if (l_s[w] > 0.0f) mx = fmaxf(mx, m_s[w]);
  const float sink = a.sinks ? a.sinks[head] : -FLT_MAX;
  const float m_all = fmaxf(mx, sink);
  float den = a.sinks ? expf(sink - m_all) : 0.0f;
  for (int w = 0; w < kWarps; ++w)
    if (l_s[w] > 0.0f) den += expf(m_s[w] - m_all) * l_s[w];
  float* out = a.out + int64_t(t) * a.out_stride + int64_t(head) * a.head_dim_v;
  for (int d = threadIdx.x; d < a.head_dim_v; d += blockDim.x) {
    float num = 0.0f;
    for (int w = 0; w < kWarps; ++w)
      if (l_s[w] > 0.0f) num += expf(m_s[w] - m_all) * acc_s[w][d];
    out[d] = num / den;
  }
}

template <KvType kKey, KvType kVal>
void launch_ext(const AttentionExtArgs& a, cudaStream_t stream) {
  const dim3 grid(unsigned(a.n_head), unsigned(a.n_tokens));
  if (a.head_dim_v <= 64)
    attention_ext_kernel<kKey, kVal, 2><<<grid, kWarps * 32, 0, stream>>>(a);
  else if (a.head_dim_v <= 128)
    attention_ext_kernel<kKey, kVal, 4><<<grid, kWarps * 32, 0, stream>>>(a);
  else
    attention_ext_kernel<kKey, kVal, 8><<<grid, kWarps * 32, 0, stream>>>(a);
  STRATA_CUDA_LAUNCHED();
}

template <KvType kKey>
void launch_for_values(const AttentionExtArgs& a, cudaStream_t stream) {
  switch (a.v_type) {
    case KvType::f16:
      return launch_ext<kKey, KvType::f16>(a, stream);
    case KvType::q8_0:
      return launch_ext<kKey, KvType::q8_0>(a, stream);
    case KvType::q4_0:
      return launch_ext<kKey, KvType::q4_0>(a, stream);
  }
}

}  // namespace

bool kv_type_of(DType type, KvType& out) {
  switch (type) {
    case DType::F16:
      out = KvType::f16;
      return true;
    case DType::Q8_0:
      out = KvType::q8_0;
      return true;
    case DType::Q4_0:
      out = KvType::q4_0;
      return true;
    default:
      return false;
  }
}

void store_kv_any(const float* src, int64_t width, int n_tokens, int64_t pos0, const int64_t* pos_dev,
                  const ops::KvLayerView& cache, cudaStream_t stream) {
  if (n_tokens <= 0) return;
  KvType type;
  if (!kv_type_of(cache.type, type) || cache.n_slots <= 0 || cache.row_bytes != row_bytes(cache.type, width) ||
      (type != KvType::f16 && width % 32 != 0))
    throw Error(std::string("cuda store_kv: a KV cache of ") + type_name(cache.type) + " rows of " +
                std::to_string(cache.row_bytes) + " bytes cannot hold " + std::to_string(width) +
                " values a position (" + std::to_string(cache.n_slots) + " slots; types f16, q8_0, q4_0)");
  const int64_t n_blocks = int64_t(n_tokens) * width / 32;
  switch (type) {
    case KvType::f16:
      store_f16_kernel<<<blocks_for(int64_t(n_tokens) * width, 256), 256, 0, stream>>>(
          src, width, n_tokens, pos0, cache.n_slots, cache.data, cache.row_bytes, pos_dev);
      break;
    case KvType::q8_0:
      store_q8_0_kernel<<<blocks_for(n_blocks, 8), 256, 0, stream>>>(src, width, n_tokens, pos0, cache.n_slots,
                                                                     cache.data, cache.row_bytes, pos_dev);
      break;
    case KvType::q4_0:
      store_q4_0_kernel<<<blocks_for(n_blocks, 128), 128, 0, stream>>>(src, width, n_tokens, pos0, cache.n_slots,
                                                                       cache.data, cache.row_bytes, pos_dev);
      break;
  }
  STRATA_CUDA_LAUNCHED();
}

void attention_ext(const AttentionExtArgs& a, cudaStream_t stream) {
  if (a.n_tokens <= 0) return;
  const bool quantized_keys = a.k_type != KvType::f16;
  if (a.head_dim_k <= 0 || a.head_dim_k > kMaxHeadDim || a.head_dim_v <= 0 || a.head_dim_v > kMaxHeadDim ||
      a.n_head_kv <= 0 || a.n_head % a.n_head_kv || a.n_slots <= 0 || (quantized_keys && a.head_dim_k % 32))
    throw Error("cuda attention: unsupported heads (head_dim_k " + std::to_string(a.head_dim_k) + ", head_dim_v " +
                std::to_string(a.head_dim_v) + ", n_head " + std::to_string(a.n_head) + ", n_head_kv " +
                std::to_string(a.n_head_kv) + ", " + std::to_string(a.n_slots) + " cache rows)");
  switch (a.k_type) {
    case KvType::f16:
      return launch_for_values<KvType::f16>(a, stream);
    case KvType::q8_0:
      return launch_for_values<KvType::q8_0>(a, stream);
    case KvType::q4_0:
      return launch_for_values<KvType::q4_0>(a, stream);
  }
}

}  // namespace strata::backend::cuda
