// Prompt attention on the tensor cores, flash style: each warp takes 16 tokens of one head and
// walks 32-position tiles of the f16 KV cache; S = Q K^T and O += P V are 16x16x16 f16 products
// with f32 accumulation (WMMA), the online softmax runs on S in shared memory (each row by two
// lanes), and O stays in shared memory in f32, rescaled per row before each P V. q is rounded to
// f16 (as the CPU path does), P to f16 for its product with V (the running sums stay f32), which is
// where this differs from the scalar kernel (attention.cu) by rounding.
#include <mma.h>

#include <cfloat>

#include "backend/cuda/cuda_internal.h"

namespace strata::backend::cuda {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kTileRows = 16;  // tokens per warp
constexpr int kTile = 32;      // positions per tile

constexpr size_t round32(size_t n) { return (n + 31) / 32 * 32; }

// One warp's shared memory for head dimension D (every region 32-byte aligned, as WMMA needs).
template <int D>
struct Layout {
  static constexpr int kLq = D + 8;   // halves per Q / K / V row (8: off the banks of the row above)
  static constexpr int kLs = kTile + 4;  // floats per S row
  static constexpr int kLp = kTile + 8;  // halves per P row
  static constexpr int kLo = D + 4;      // floats per O row
  static constexpr size_t kQ = 0;
  static constexpr size_t kK = kQ + round32(size_t(kTileRows) * kLq * 2);
  static constexpr size_t kV = kK + round32(size_t(kTile) * kLq * 2);
  static constexpr size_t kS = kV + round32(size_t(kTile) * kLq * 2);
  static constexpr size_t kP = kS + round32(size_t(kTileRows) * kLs * 4);
  static constexpr size_t kO = kP + round32(size_t(kTileRows) * kLp * 2);
  static constexpr size_t kM = kO + round32(size_t(kTileRows) * kLo * 4);
  static constexpr size_t kBytes = kM + round32(2 * kTileRows * 4);  // running max and sum per row
};

template <int D, int W>
__global__ void __launch_bounds__(W * 32) attention_mma_kernel(AttentionArgs a) {
  using L = Layout<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  unsigned char* base = smem + size_t(warp) * L::kBytes;
  __half* q_s = reinterpret_cast<__half*>(base + L::kQ);
  __half* k_s = reinterpret_cast<__half*>(base + L::kK);
  __half* v_s = reinterpret_cast<__half*>(base + L::kV);
  float* s_s = reinterpret_cast<float*>(base + L::kS);
  __half* p_s = reinterpret_cast<__half*>(base + L::kP);
  float* o_s = reinterpret_cast<float*>(base + L::kO);
  float* m_s = reinterpret_cast<float*>(base + L::kM);
  float* l_s = m_s + kTileRows;

  const int head = blockIdx.x;
  const int kv_head = head / (a.n_head / a.n_head_kv);
  const int t0 = (int(blockIdx.y) * W + warp) * kTileRows;
  if (t0 >= a.n_tokens) return;  // warps work alone: no block-wide barrier follows
  const int n_rows = min(kTileRows, a.n_tokens - t0);

  for (int i = lane; i < kTileRows * D; i += 32) {
    const int r = i / D, d = i % D;
    q_s[r * L::kLq + d] =
        r < n_rows ? __float2half_rn(a.q[int64_t(t0 + r) * a.q_stride + int64_t(head) * D + d]) : __float2half_rn(0.0f);
  }
  for (int i = lane; i < kTileRows * L::kLo; i += 32) o_s[i] = 0.0f;
  if (lane < kTileRows) {
    m_s[lane] = -FLT_MAX;
    l_s[lane] = 0.0f;
  }
  __syncwarp();
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> q_f[D / 16];
#pragma unroll
  for (int k = 0; k < D / 16; ++k) wmma::load_matrix_sync(q_f[k], q_s + 16 * k, L::kLq);

  const int64_t last = a.pos0 + t0 + n_rows - 1;
  const int64_t lo = a.window > 0 ? max(int64_t(0), a.pos0 + t0 - a.window + 1) : 0;
  const __half* k_base = reinterpret_cast<const __half*>(a.k_cache) + int64_t(kv_head) * D;
  const __half* v_base = reinterpret_cast<const __half*>(a.v_cache) + int64_t(kv_head) * D;
  // This lane's row and half of the tile in the softmax step.
  const int r = lane / 2, h = lane % 2;
  const int64_t pos = a.pos0 + t0 + r;
  const int64_t first = a.window > 0 ? max(int64_t(0), pos - a.window + 1) : 0;

  for (int64_t start = lo; start <= last; start += kTile) {
    // Stage the tile's keys and values, 16 bytes a lane a step; positions past the last are
    // clamped to it (masked below; the slot ahead may hold anything).
    for (int i = lane; i < kTile * (D / 8); i += 32) {
      const int j = i / (D / 8), c = i % (D / 8);
      const int64_t slot = min(start + j, last) % a.n_slots;
      *reinterpret_cast<uint4*>(k_s + j * L::kLq + 8 * c) =
          *reinterpret_cast<const uint4*>(k_base + slot * a.k_width + 8 * c);
      *reinterpret_cast<uint4*>(v_s + j * L::kLq + 8 * c) =
          *reinterpret_cast<const uint4*>(v_base + slot * a.v_width + 8 * c);
    }
    __syncwarp();
#pragma unroll
    for (int n = 0; n < kTile / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> s_f;
      wmma::fill_fragment(s_f, 0.0f);
#pragma unroll
      for (int k = 0; k < D / 16; ++k) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> k_f;  // K^T: column j = key j
        wmma::load_matrix_sync(k_f, k_s + 16 * n * L::kLq + 16 * k, L::kLq);
        wmma::mma_sync(s_f, q_f[k], k_f, s_f);
      }
      wmma::store_matrix_sync(s_s + 16 * n, s_f, L::kLs, wmma::mem_row_major);
    }
    __syncwarp();
    // Online softmax: row r, columns 16 h .. 16 h + 15.
    float sv[16];
    float mx = -FLT_MAX;
#pragma unroll
    for (int c = 0; c < 16; ++c) {
      const int64_t kpos = start + 16 * h + c;
      const bool valid = r < n_rows && kpos >= first && kpos <= pos;
      sv[c] = valid ? s_s[r * L::kLs + 16 * h + c] * a.kq_scale : -FLT_MAX;
      mx = fmaxf(mx, sv[c]);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float m_old = m_s[r];
    const float m_new = fmaxf(m_old, mx);
    const float corr = __expf(m_old - m_new);
    float sum = 0.0f;
#pragma unroll
    for (int c = 0; c < 16; ++c) {
      const float p = sv[c] > -FLT_MAX ? __expf(sv[c] - m_new) : 0.0f;
      sum += p;
      p_s[r * L::kLp + 16 * h + c] = __float2half_rn(p);
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    for (int d = h; d < D; d += 2) o_s[r * L::kLo + d] *= corr;
    __syncwarp();
    if (h == 0) {
      m_s[r] = m_new;
      l_s[r] = l_s[r] * corr + sum;
    }
#pragma unroll
    for (int c = 0; c < D / 16; ++c) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> o_f;
      wmma::load_matrix_sync(o_f, o_s + 16 * c, L::kLo, wmma::mem_row_major);
#pragma unroll
      for (int k = 0; k < kTile / 16; ++k) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> p_f;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> v_f;
        wmma::load_matrix_sync(p_f, p_s + 16 * k, L::kLp);
        wmma::load_matrix_sync(v_f, v_s + 16 * k * L::kLq + 16 * c, L::kLq);
        wmma::mma_sync(o_f, p_f, v_f, o_f);
      }
      wmma::store_matrix_sync(o_s + 16 * c, o_f, L::kLo, wmma::mem_row_major);
    }
    __syncwarp();
  }
  for (int i = lane; i < n_rows * D; i += 32) {
    const int rr = i / D, d = i % D;
    a.out[int64_t(t0 + rr) * a.out_stride + int64_t(head) * D + d] = o_s[rr * L::kLo + d] / l_s[rr];
  }
}

template <int D, int W>
void launch(const AttentionArgs& a, cudaStream_t stream) {
  constexpr size_t kBytes = size_t(W) * Layout<D>::kBytes;
  static bool configured = false;  // per instantiation
  if (!configured) {
    STRATA_CUDA_CHECK(
        cudaFuncSetAttribute(attention_mma_kernel<D, W>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kBytes)));
    configured = true;
  }
  const dim3 grid(unsigned(a.n_head), unsigned((a.n_tokens + W * kTileRows - 1) / (W * kTileRows)));
  attention_mma_kernel<D, W><<<grid, W * 32, kBytes, stream>>>(a);
  STRATA_CUDA_LAUNCHED();
}

}  // namespace

bool attention_mma(const AttentionArgs& a, cudaStream_t stream) {
  if (a.n_tokens < kTileRows || a.pos_dev || a.head_dim_k != a.head_dim_v || a.n_head_kv <= 0 || a.n_head % a.n_head_kv ||
      a.k_width % 8 || a.v_width % 8)
    return false;
  switch (a.head_dim_k) {
    case 64:
      launch<64, 4>(a, stream);
      return true;
    case 128:
      launch<128, 4>(a, stream);
      return true;
    case 256:
      launch<256, 2>(a, stream);
      return true;
    default:
      return false;
  }
}

}  // namespace strata::backend::cuda
