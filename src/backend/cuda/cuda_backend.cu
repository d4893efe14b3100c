// The CUDA backend: device memory, one stream in which every op is queued in order, cuBLAS for
// the prompt GEMM (f16 tiles dequantized from the weights, f32 accumulation), and the small
// row and element-wise kernels. Scratch grows to the largest batch once, never per token.
#include <cublas_v2.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/activations.cuh"
#include "backend/cuda/rowdot.cuh"

namespace strata::backend {
namespace cuda {
namespace {

void check_cublas(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) throw Error(std::string("cublas: ") + what + " failed: " + cublasGetStatusString(s));
}

unsigned blocks_for(int64_t n, int per_block) { return unsigned((n + per_block - 1) / per_block); }

// ---- row kernels: one block per row

template <int kThreads>
__device__ double block_sum(double v, double* shared) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) shared[threadIdx.x / 32] = v;
  __syncthreads();
  double total = 0.0;
  for (int w = 0; w < kThreads / 32; ++w) total += shared[w];
  __syncthreads();
  return total;
}

template <int kThreads>
__device__ float block_max(float v, float* shared) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (threadIdx.x % 32 == 0) shared[threadIdx.x / 32] = v;
  __syncthreads();
  float m = -FLT_MAX;
  for (int w = 0; w < kThreads / 32; ++w) m = fmaxf(m, shared[w]);
  __syncthreads();
  return m;
}

constexpr int kRowThreads = 256;

// As the CPU: the sum of squares in double, the scale in float. q (n a multiple of 32): the output
// also quantized for the decode matmul, q [n_rows x n] int8 with a scale per 32 in qd.
__global__ void rms_norm_kernel(const float* x, const float* weight, float* out, int64_t n, float eps, int8_t* q,
                                float* qd) {
  __shared__ double partial[kRowThreads / 32];
  const float* xr = x + blockIdx.x * n;
  float* o = out + blockIdx.x * n;
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kRowThreads) sum += double(xr[i] * xr[i]);
  sum = block_sum<kRowThreads>(sum, partial);
  const float scale = 1.0f / sqrtf(float(sum / double(n)) + eps);
  for (int64_t i = threadIdx.x; i < n; i += kRowThreads) {
    const float v = weight ? (xr[i] * scale) * weight[i] : xr[i] * scale;
    o[i] = v;
    if (q) {  // whole warps take whole chunks: n is a multiple of 32
      const int64_t at = int64_t(blockIdx.x) * n + i;
      quantize_q8_lane(v, threadIdx.x % 32, q + (at - threadIdx.x % 32), qd + at / 32);
    }
  }
}

__global__ void softmax_kernel(float* x, int64_t n) {
  __shared__ double partial[kRowThreads / 32];
  __shared__ float partial_max[kRowThreads / 32];
  float* xr = x + blockIdx.x * n;
  float mx = -INFINITY;
  for (int64_t i = threadIdx.x; i < n; i += kRowThreads) mx = fmaxf(mx, xr[i]);
  mx = block_max<kRowThreads>(mx, partial_max);
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kRowThreads) {
    const float e = expf(xr[i] - mx);
    xr[i] = e;
    sum += double(e);
  }
  sum = block_sum<kRowThreads>(sum, partial);
  const float inv = float(1.0 / sum);
  for (int64_t i = threadIdx.x; i < n; i += kRowThreads) xr[i] *= inv;
}

// One thread per rotated pair. The angle follows the CPU's float sequence exactly: theta is
// pos multiplied by theta_scale once per earlier pair.
__global__ void rope_kernel(float* x, int64_t x_stride, int n_tokens, int n_heads, int head_dim, int n_rot,
                            int64_t pos0, float theta_scale, float freq_scale, bool neox, const float* freq_factors,
                            const int64_t* pos_dev) {
  if (pos_dev) pos0 = *pos_dev;  // a replayable decode graph's position
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int half = n_rot / 2;
  if (i >= int64_t(n_tokens) * n_heads * half) return;
  const int pair = int(i % half);
  const int head = int((i / half) % n_heads);
  const int t = int(i / (int64_t(half) * n_heads));
  float theta = float(pos0 + t);
  for (int k = 0; k < pair; ++k) theta *= theta_scale;
  const float ff = freq_factors ? freq_factors[pair] : 1.0f;
  const float angle = freq_scale * (theta / ff);
  const float c = cosf(angle), s = sinf(angle);
  float* v = x + t * x_stride + int64_t(head) * head_dim;
  const int i0 = neox ? pair : 2 * pair;
  const int i1 = neox ? pair + half : 2 * pair + 1;
  const float x0 = v[i0], x1 = v[i1];
  v[i0] = x0 * c - x1 * s;
  v[i1] = x0 * s + x1 * c;
}

// gate = act(gate) * up; q (n a multiple of 32): the result also quantized for the decode matmul.
template <bool kGelu>
__global__ void gated_kernel(float* gate, const float* up, int64_t n, int8_t* q, float* qd) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;  // whole warps when q is given
  const float v = (kGelu ? gelu_ggml(gate[i]) : silu(gate[i])) * up[i];
  gate[i] = v;
  if (q) quantize_q8_lane(v, threadIdx.x % 32, q + (i - threadIdx.x % 32), qd + i / 32);
}

__global__ void add_kernel(float* x, const float* y, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] += y[i];
}

__global__ void add_bias_kernel(float* rows, const float* bias, int64_t n, int64_t total) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < total) rows[i] += bias[i % n];
}

__global__ void scale_kernel(float* x, float s, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] *= s;
}

// Row t of k [n_tokens x kw] and of v [n_tokens x vw] into their caches' slot (pos0 + t) % n_slots,
// in one launch.
__global__ void store_kv_kernel(const float* k, int64_t kw, int64_t k_slots, __half* k_cache, const float* v,
                                int64_t vw, int64_t v_slots, __half* v_cache, int n_tokens, int64_t pos0,
                                const int64_t* pos_dev) {
  if (pos_dev) pos0 = *pos_dev;
  int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < int64_t(n_tokens) * kw) {
    const int64_t t = i / kw, c = i % kw;
    k_cache[((pos0 + t) % k_slots) * kw + c] = __float2half_rn(k[i]);
    return;
  }
  i -= int64_t(n_tokens) * kw;
  if (i >= int64_t(n_tokens) * vw) return;
  const int64_t t = i / vw, c = i % vw;
  v_cache[((pos0 + t) % v_slots) * vw + c] = __float2half_rn(v[i]);
}

// One warp per token: softmax over the experts (kMaxExperts / 32 per lane), then k rounds of
// arg-max across the warp, ties to the lower index.
__global__ void route_kernel(const float* logits, int n_tokens, int n_expert, int k, bool normalize, int32_t* chosen,
                             float* weights) {
  constexpr int kPerLane = kMaxExperts / 32;
  const int t = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (t >= n_tokens) return;
  const int lane = threadIdx.x % 32;
  float p[kPerLane];
  float mx = -INFINITY;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int e = lane + 32 * j;
    p[j] = e < n_expert ? logits[int64_t(t) * n_expert + e] : -INFINITY;
    mx = fmaxf(mx, p[j]);
  }
  for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  double sum = 0.0;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    p[j] = lane + 32 * j < n_expert ? expf(p[j] - mx) : 0.0f;
    sum += double(p[j]);
  }
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  const float inv = float(1.0 / sum);
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) p[j] = lane + 32 * j < n_expert ? p[j] * inv : -1.0f;
  float picked_sum = 0.0f;
  float picked[kMaxExpertsUsed];
  int picked_id[kMaxExpertsUsed];
  for (int r = 0; r < k; ++r) {
    float best = -2.0f;
    int best_e = n_expert;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j)
      if (p[j] > best) {  // strictly greater: the lower index of this lane wins a tie
        best = p[j];
        best_e = lane + 32 * j;
      }
    for (int o = 16; o > 0; o >>= 1) {
      const float ob = __shfl_xor_sync(0xffffffffu, best, o);
      const int oe = __shfl_xor_sync(0xffffffffu, best_e, o);
      if (ob > best || (ob == best && oe < best_e)) {
        best = ob;
        best_e = oe;
      }
    }
    if (best_e % 32 == lane) p[best_e / 32] = -1.0f;  // taken
    picked[r] = best;
    picked_id[r] = best_e;
    picked_sum += best;
  }
  if (lane == 0)
    for (int r = 0; r < k; ++r) {
      chosen[int64_t(t) * k + r] = picked_id[r];
      weights[int64_t(t) * k + r] = normalize ? picked[r] / picked_sum : picked[r];
    }
}

// Device scratch that grows to the largest request and stays.
struct Scratch {
  void* ptr = nullptr;
  size_t bytes = 0;
  void* reserve(size_t need, cudaStream_t stream) {
    if (need <= bytes) return ptr;
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    STRATA_CUDA_CHECK(cudaStreamIsCapturing(stream, &capturing));
    if (capturing != cudaStreamCaptureStatusNone)
      throw Error("cuda: scratch must grow to " + std::to_string(need) +
                  " bytes inside a graph; run the step once outside a graph first");
    if (ptr) {
      STRATA_CUDA_CHECK(cudaStreamSynchronize(stream));
      STRATA_CUDA_CHECK(cudaFree(ptr));
      ptr = nullptr;
      bytes = 0;
    }
    const cudaError_t e = cudaMalloc(&ptr, need);
    if (e != cudaSuccess) {
      ptr = nullptr;
      throw Error("cuda: cannot allocate " + std::to_string(need) + " bytes of scratch: " + cudaGetErrorString(e));
    }
    bytes = need;
    ++grown;
    return ptr;
  }
  int grown = 0;  // reallocations: a recorded graph holding the old address is stale
  ~Scratch() {
    if (ptr) cudaFree(ptr);
  }
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : device_(device) {
    STRATA_CUDA_CHECK(cudaSetDevice(device));
    STRATA_CUDA_CHECK(cudaGetDeviceProperties(&props_, device));
    STRATA_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    check_cublas(cublasCreate(&blas_), "cublasCreate");
    check_cublas(cublasSetStream(blas_, stream_), "cublasSetStream");
    STRATA_CUDA_CHECK(cudaHostAlloc(&pos_host_, sizeof(int64_t), cudaHostAllocDefault));
    STRATA_CUDA_CHECK(cudaMalloc(&pos_dev_, sizeof(int64_t)));
    STRATA_CUDA_CHECK(cudaHostAlloc(&bad_id_host_, sizeof(int), cudaHostAllocMapped));
    *bad_id_host_ = 0;
    STRATA_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&bad_id_), bad_id_host_, 0));
    if (const char* w = std::getenv("STRATA_CUDA_MATVEC_WARPS")) cuda::set_matvec_warps_per_row(std::atoi(w));
  }
  ~CudaBackend() override {
    cudaStreamSynchronize(stream_);
    if (copy_stream_) {
      cudaStreamSynchronize(copy_stream_);
      cudaEventDestroy(copies_done_);
      cudaEventDestroy(ops_done_);
      cudaStreamDestroy(copy_stream_);
    }
    if (graph_exec_) cudaGraphExecDestroy(graph_exec_);
    cublasDestroy(blas_);
    cudaStreamDestroy(stream_);
    cudaFreeHost(bad_id_host_);
    cudaFreeHost(pos_host_);
    cudaFree(pos_dev_);
  }

  DeviceKind kind() const override { return DeviceKind::cuda; }
  std::string name() const override {
    return "cuda:" + std::to_string(device_) + " " + props_.name + " (sm_" + std::to_string(props_.major) +
           std::to_string(props_.minor) + ", " + std::to_string(props_.totalGlobalMem >> 20) + " MiB)";
  }

  void* alloc(size_t bytes) override {
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, std::max<size_t>(bytes, 1));
    if (e != cudaSuccess)
      throw Error("cuda:" + std::to_string(device_) + ": cannot allocate " + std::to_string(bytes) +
                  " bytes: " + cudaGetErrorString(e));
    return p;
  }
  void free(void* p) override {
    if (p) STRATA_CUDA_CHECK(cudaFree(p));
  }
  void upload(void* dst, const void* src, size_t bytes) override {
    q8_forget();
    STRATA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
    STRATA_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the host buffer may go away after return
  }
  void download(void* dst, const void* src, size_t bytes) override {
    STRATA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    STRATA_CUDA_CHECK(cudaStreamSynchronize(stream_));
    check_ids();
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    q8_forget();
    STRATA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
  }
  void synchronize() override {
    STRATA_CUDA_CHECK(cudaStreamSynchronize(stream_));
    check_ids();
  }

  double memory_gbps() override {
    constexpr size_t kBytes = size_t(256) << 20;
    constexpr int kReps = 10;
    void* a = alloc(kBytes);
    void* b = alloc(kBytes);
    cudaEvent_t start, stop;
    STRATA_CUDA_CHECK(cudaEventCreate(&start));
    STRATA_CUDA_CHECK(cudaEventCreate(&stop));
    copy(b, a, kBytes);  // warm-up
    STRATA_CUDA_CHECK(cudaEventRecord(start, stream_));
    for (int i = 0; i < kReps; ++i) copy(i % 2 ? a : b, i % 2 ? b : a, kBytes);
    STRATA_CUDA_CHECK(cudaEventRecord(stop, stream_));
    STRATA_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0.0f;
    STRATA_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    free(a);
    free(b);
    return 2.0 * double(kBytes) * kReps / (double(ms) * 1e-3) / 1e9;
  }

  void begin_graph() override {
    replayable_ = false;
    STRATA_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
  }
  void end_graph() override {
    const bool position_step = recording_position_;
    recording_position_ = false;  // ops after this take their positions by value again, even if this throws
    cudaGraph_t graph = nullptr;
    STRATA_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
    // Same ops with new arguments (positions, lengths) update the executable graph in place.
    cudaGraphExecUpdateResultInfo info{};
    if (graph_exec_ && cudaGraphExecUpdate(graph_exec_, graph, &info) != cudaSuccess) {
      cudaGetLastError();  // clear the failed update; instantiate anew
      STRATA_CUDA_CHECK(cudaGraphExecDestroy(graph_exec_));
      graph_exec_ = nullptr;
    }
    if (!graph_exec_) {
      const cudaError_t e = cudaGraphInstantiate(&graph_exec_, graph, 0);
      if (e != cudaSuccess) {
        cudaGraphDestroy(graph);
        fail(e, "cudaGraphInstantiate", __FILE__, __LINE__);
      }
    }
    cudaGraphDestroy(graph);
    if (position_step) {  // replayable for any later position while no scratch moves
      replayable_ = true;
      recorded_grown_ = scratch_grown();
    }
    STRATA_CUDA_CHECK(cudaGraphLaunch(graph_exec_, stream_));
  }

  void matmul(const WeightView& w, const float* x, int64_t x_stride, int n_tokens, float* y,
              int64_t y_stride) override {
    if (n_tokens <= 0 || w.n_rows <= 0) return;
    const bool chunked = cuda::is_chunked(w.type);
    if (!chunked && !cuda::is_float(w.type))
      throw Error(std::string("cuda matmul: no kernels for tensor type ") + type_name(w.type));
    if (chunked ? w.n_cols % 32 != 0 : (w.n_cols % 2 != 0 || x_stride % 2 != 0))  // paired float loads
      throw Error("cuda matmul: " + std::to_string(w.n_cols) + " columns of " + type_name(w.type) +
                  ", activation stride " + std::to_string(x_stride));
    last_matmul_decode_ = n_tokens <= cuda::kMaxMatvecTokens;
    if (n_tokens <= cuda::kMaxMatvecTokens) {
      int8_t* xq = nullptr;
      float* xd = nullptr;
      const int64_t n = int64_t(n_tokens) * w.n_cols;
      const bool contiguous = x_stride == w.n_cols;
      if (chunked && contiguous && q8_holds(x, n)) {  // quantized already (by its producer or a matmul before)
        xq = static_cast<int8_t*>(q8_.ptr);
        xd = q8_scales(n);
      } else if (chunked) {
        if (contiguous) {
          xq = q8_room(n, xd);
        } else {
          const size_t q_bytes = size_t(n);
          uint8_t* s = static_cast<uint8_t*>(act_.reserve(q_bytes + q_bytes / 32 * 4, stream_));
          xq = reinterpret_cast<int8_t*>(s);
          xd = reinterpret_cast<float*>(s + q_bytes);
        }
        cuda::quantize_q8(x, x_stride, n_tokens, w.n_cols, xq, xd, stream_);
        if (contiguous) q8_made(x, n);
      }
      const bool held = q8_valid();  // this x's copy, or (float weights) whichever rows were quantized last
      cuda::matvec(w, xq, xd, x, x_stride, n_tokens, y, y_stride, stream_);
      if (held) q8_keep(y, (size_t(n_tokens - 1) * size_t(y_stride) + size_t(w.n_rows)) * sizeof(float));
      return;
    }
    // Prompt: f16 weights and activations on the tensor cores, f32 accumulation and output.
    // Column-major view: y^T [n_rows x n_tokens] = W^T(f16 [n_cols x n_rows])^T * x^T [n_cols x n_tokens].
    __half* wh = static_cast<__half*>(weights_f16_.reserve(size_t(w.n_rows) * w.n_cols * 2, stream_));
    __half* xh = static_cast<__half*>(act_.reserve(size_t(n_tokens) * w.n_cols * 2, stream_));
    cuda::dequantize_f16(w, wh, stream_);
    cuda::to_f16(x, x_stride, n_tokens, w.n_cols, xh, stream_);
    const float one = 1.0f, zero = 0.0f;
    check_cublas(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, int(w.n_rows), n_tokens, int(w.n_cols), &one, wh,
                              CUDA_R_16F, int(w.n_cols), xh, CUDA_R_16F, int(w.n_cols), &zero, y, CUDA_R_32F,
                              int(y_stride), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 "cublasGemmEx");
  }

  // Pieces of a streamed matrix: the CUDA backend holds whole matrices, so each piece is a matmul.
  void prepare_matmul(DType, int64_t, const float* x, int64_t x_stride, int n_tokens) override {
    prepared_x_ = x;
    prepared_stride_ = x_stride;
    prepared_tokens_ = n_tokens;
  }
  void matmul_prepared(const WeightView& piece, float* y, int64_t y_stride) override {
    matmul(piece, prepared_x_, prepared_stride_, prepared_tokens_, y, y_stride);
  }

  void get_rows(const WeightView& w, const int32_t* ids, int n, float* out, int64_t out_stride) override {
    if (n <= 0) return;
    cuda::get_rows(w, ids, n, out, out_stride, bad_id_, stream_);
  }

  void rms_norm(const float* x, const float* weight, float* out, int64_t n, int n_rows, float eps) override {
    if (n_rows <= 0) return;
    // Decode rows: quantized for the matmuls that read them, in the same launch.
    const bool quantize = n_rows <= cuda::kMaxMatvecTokens && n % 32 == 0;
    float* qd = nullptr;
    int8_t* q = quantize ? q8_room(int64_t(n_rows) * n, qd) : nullptr;
    rms_norm_kernel<<<unsigned(n_rows), kRowThreads, 0, stream_>>>(x, weight, out, n, eps, q, qd);
    STRATA_CUDA_LAUNCHED();
    if (quantize) q8_made(out, int64_t(n_rows) * n);
  }

  void rope(float* x, int64_t x_stride, int n_tokens, int n_heads, int head_dim, int64_t pos0,
            const ops::RopeParams& params) override {
    const int n_rot = params.n_rot;
    if (n_rot > 1024 || n_rot % 2 || n_rot > head_dim)
      throw Error("cuda rope: unsupported rotary dimension " + std::to_string(n_rot));
    if (cuda::rope_needs_ext(params))  // YaRN: rope_ext.cu
      return cuda::rope_ext(x, x_stride, n_tokens, n_heads, head_dim, pos0, position(pos0), params, stream_);
    const int64_t n = int64_t(n_tokens) * n_heads * (n_rot / 2);
    if (n <= 0) return;
    const float theta_scale = std::pow(params.freq_base, -2.0f / float(n_rot));  // the host's pow, as the CPU
    rope_kernel<<<blocks_for(n, 256), 256, 0, stream_>>>(x, x_stride, n_tokens, n_heads, head_dim, n_rot, pos0,
                                                         theta_scale, params.freq_scale,
                                                         params.kind == ops::RopeKind::neox, params.freq_factors,
                                                         position(pos0));
    STRATA_CUDA_LAUNCHED();
  }

  void softmax(float* x, int64_t n, int n_rows) override {
    if (n_rows <= 0) return;
    softmax_kernel<<<unsigned(n_rows), kRowThreads, 0, stream_>>>(x, n);
    STRATA_CUDA_LAUNCHED();
  }

  void gated_activation(float* gate, const float* up, int64_t n, GatedActivation act) override {
    // After decode matmuls (gate and up) the result feeds another (down): quantized in the same launch.
    gated(gate, up, n, act, last_matmul_decode_);
  }

  void add(float* x, const float* y, int64_t n) override {
    if (n <= 0) return;
    add_kernel<<<blocks_for(n, 256), 256, 0, stream_>>>(x, y, n);
    STRATA_CUDA_LAUNCHED();
  }
  void scale(float* x, float s, int64_t n) override {
    if (n <= 0) return;
    scale_kernel<<<blocks_for(n, 256), 256, 0, stream_>>>(x, s, n);
    STRATA_CUDA_LAUNCHED();
  }

  void store_kv(const ops::KvLayerView& k_cache, const ops::KvLayerView& v_cache, const float* k, const float* v,
                int n_tokens, int64_t pos0, int n_head_kv, int head_dim_k, int head_dim_v) override {
    if (k_cache.type != DType::F16 || v_cache.type != DType::F16)  // quantized caches: kv_quant.cu
      return store_kv_any(k_cache, v_cache, k, v, n_tokens, pos0, n_head_kv, head_dim_k, head_dim_v);
    check_f16_cache(k_cache, int64_t(n_head_kv) * head_dim_k, "store_kv");
    check_f16_cache(v_cache, int64_t(n_head_kv) * head_dim_v, "store_kv");
    if (n_tokens <= 0) return;
    const int64_t kw = int64_t(n_head_kv) * head_dim_k, vw = int64_t(n_head_kv) * head_dim_v;
    store_kv_kernel<<<blocks_for(n_tokens * (kw + vw), 256), 256, 0, stream_>>>(
        k, kw, k_cache.n_slots, reinterpret_cast<__half*>(k_cache.data), v, vw, v_cache.n_slots,
        reinterpret_cast<__half*>(v_cache.data), n_tokens, pos0, position(pos0));
    STRATA_CUDA_LAUNCHED();
  }

  void attention(const ops::AttentionShape& shape, const float* q, int n_tokens, int64_t pos0,
                 const ops::KvLayerView& k_cache, const ops::KvLayerView& v_cache, float* out) override {
    if (k_cache.type != DType::F16 || v_cache.type != DType::F16 || shape.sinks)  // kv_quant.cu
      return attention_any(shape, q, n_tokens, pos0, k_cache, v_cache, out);
    check_f16_cache(k_cache, int64_t(shape.n_head_kv) * shape.head_dim_k, "attention");
    check_f16_cache(v_cache, int64_t(shape.n_head_kv) * shape.head_dim_v, "attention");
    cuda::AttentionArgs a;
    a.q = q;
    a.q_stride = int64_t(shape.n_head) * shape.head_dim_k;
    a.k_cache = reinterpret_cast<const uint16_t*>(k_cache.data);
    a.v_cache = reinterpret_cast<const uint16_t*>(v_cache.data);
    a.k_width = int64_t(shape.n_head_kv) * shape.head_dim_k;
    a.v_width = int64_t(shape.n_head_kv) * shape.head_dim_v;
    a.n_slots = std::min(k_cache.n_slots, v_cache.n_slots);
    a.out = out;
    a.out_stride = int64_t(shape.n_head) * shape.head_dim_v;
    a.n_tokens = n_tokens;
    a.n_head = shape.n_head;
    a.n_head_kv = shape.n_head_kv;
    a.head_dim_k = shape.head_dim_k;
    a.head_dim_v = shape.head_dim_v;
    a.pos0 = pos0;
    a.window = shape.window;
    a.kq_scale = shape.scale;
    a.pos_dev = position(pos0);
    const size_t bytes = cuda::attention_partials_bytes(a, props_.multiProcessorCount);
    // Decode batches reserve the largest split at once: the split grows with the context, and a
    // captured graph may not grow scratch.
    const size_t need = n_tokens <= cuda::kMaxMatvecTokens ? std::max(bytes, cuda::attention_partials_bytes_max(a)) : bytes;
    void* scratch = need ? attention_.reserve(need, stream_) : nullptr;
    float* partials = bytes ? static_cast<float*>(scratch) : nullptr;
    // The split's counts: zeros once allocated, left at zero by every launch. Decode batches reserve
    // them with the partials, split or not yet: a later step inside a captured graph may split.
    if (partials || n_tokens <= cuda::kMaxMatvecTokens) {
      const int grown = split_counters_.grown;
      int* counters = static_cast<int*>(split_counters_.reserve(cuda::attention_counters_max(a) * sizeof(int), stream_));
      if (split_counters_.grown != grown)
        STRATA_CUDA_CHECK(cudaMemsetAsync(split_counters_.ptr, 0, split_counters_.bytes, stream_));
      if (partials) a.split_counters = counters;
    }
    // Decode: the output quantized for the o matmul in the same launch, where the kernel says it did.
    const int64_t n_out = int64_t(n_tokens) * a.out_stride;
    if (n_tokens <= cuda::kMaxMatvecTokens && shape.head_dim_v % 32 == 0) a.out_q = q8_room(n_out, a.out_qd);
    if (cuda::attention(a, partials, props_.multiProcessorCount, stream_)) q8_made(out, n_out);
  }

  void begin_position_graph(int64_t pos) override {
    set_position(pos);  // before the capture: the recorded step's launch reads it
    begin_graph();
    recording_pos_ = pos;
    recording_position_ = true;
  }
  bool replay_graph(int64_t pos) override {
    if (!replayable_ || !graph_exec_ || scratch_grown() != recorded_grown_) return false;
    set_position(pos);
    STRATA_CUDA_CHECK(cudaGraphLaunch(graph_exec_, stream_));
    return true;
  }

  void add_bias(float* rows, const float* bias, int64_t n, int n_rows) override {
    const int64_t total = n * n_rows;
    if (total <= 0) return;
    add_bias_kernel<<<blocks_for(total, 256), 256, 0, stream_>>>(rows, bias, n, total);
    STRATA_CUDA_LAUNCHED();
  }

  void route_top_k(const float* logits, int n_tokens, int n_expert, int k, bool normalize, int32_t* chosen,
                   float* weights) override {
    const bool held = q8_valid();  // the routed rows' int8 copy survives: this writes only the choice
    if (n_expert <= 0 || n_expert > kMaxExperts || k <= 0 || k > kMaxExpertsUsed || k > n_expert)
      throw Error("cuda route_top_k: " + std::to_string(k) + " of " + std::to_string(n_expert) + " experts (at most " +
                  std::to_string(kMaxExpertsUsed) + " of " + std::to_string(kMaxExperts) + ")");
    if (n_tokens <= 0) return;
    route_kernel<<<blocks_for(n_tokens, 4), 128, 0, stream_>>>(logits, n_tokens, n_expert, k, normalize, chosen,
                                                               weights);
    STRATA_CUDA_LAUNCHED();
    if (held) {
      q8_keep(chosen, size_t(n_tokens) * k * sizeof(int32_t));
      q8_keep(weights, size_t(n_tokens) * k * sizeof(float));
    }
  }

  // ---- mixture of experts
  // Decode (up to kMaxMatvecTokens tokens): per slot matvecs that read the expert ids on the
  // device, no host round trip. Prompt: the routing comes to the host once per layer, the slots
  // are grouped per expert and each expert runs once over its tokens (matmul: the f16 GEMM).
  void moe_experts(const ExpertWeights& w, const ExpertBatch& b) override {
    check_experts(w, b);
    const int64_t n_embd = w.gate.n_cols, ff = w.gate.n_rows;
    const int n_slots = b.n_tokens * b.k;
    if (n_slots <= 0) return;
    if (b.n_tokens <= cuda::kMaxMatvecTokens) {
      const cuda::ExpertSlots xs{b.chosen, n_slots, b.k, b.n_expert, w.slot_of, w.single};
      const size_t x_q = aligned(size_t(b.n_tokens) * n_embd), x_d = aligned(size_t(b.n_tokens) * n_embd / 32 * 4);
      const size_t a_f = aligned(size_t(n_slots) * ff * 4), a_q = aligned(size_t(n_slots) * ff),
                   a_d = aligned(size_t(n_slots) * ff / 32 * 4);
      auto* base = static_cast<uint8_t*>(moe_.reserve(x_q + x_d + 2 * a_f + a_q + a_d, stream_));
      auto* xq = reinterpret_cast<int8_t*>(base);
      auto* xd = reinterpret_cast<float*>(base + x_q);
      auto* g = reinterpret_cast<float*>(base + x_q + x_d);
      auto* u = reinterpret_cast<float*>(base + x_q + x_d + a_f);
      auto* aq = reinterpret_cast<int8_t*>(base + x_q + x_d + 2 * a_f);
      auto* ad = reinterpret_cast<float*>(base + x_q + x_d + 2 * a_f + a_q);
      if (cuda::is_chunked(w.gate.type)) {
        if (q8_holds(b.x, int64_t(b.n_tokens) * n_embd)) {  // the router's matmul quantized them
          xq = static_cast<int8_t*>(q8_.ptr);
          xd = q8_scales(int64_t(b.n_tokens) * n_embd);
        } else {
          cuda::quantize_q8(b.x, n_embd, b.n_tokens, n_embd, xq, xd, stream_);
        }
      }
      cuda::moe_gate_up(xs, w.gate, w.gate_stride, w.up, w.up_stride, xq, xd, b.x, g, u, stream_);
      const bool down_q8 = cuda::is_chunked(w.down.type);
      gated(g, u, int64_t(n_slots) * ff, b.act, down_q8);
      if (down_q8) {
        if (q8_holds(g, int64_t(n_slots) * ff)) {
          aq = static_cast<int8_t*>(q8_.ptr);
          ad = q8_scales(int64_t(n_slots) * ff);
        } else {
          cuda::quantize_q8(g, ff, n_slots, ff, aq, ad, stream_);
        }
      }
      cuda::moe_down(xs, w.down, w.down_stride, aq, ad, g, b.weights, b.out, stream_);
      return;
    }
    // Prompt: the slots of each expert here, ascending expert, then slot.
    moe_chosen_.resize(size_t(n_slots));
    download(moe_chosen_.data(), b.chosen, size_t(n_slots) * sizeof(int32_t));
    moe_slot_of_.assign(size_t(b.n_expert), 0);
    if (w.slot_of) download(moe_slot_of_.data(), w.slot_of, size_t(b.n_expert) * sizeof(int32_t));
    auto slot_of = [&](int e) {
      if (w.slot_of) return moe_slot_of_[size_t(e)];
      return w.single >= 0 ? (e == w.single ? 0 : -1) : e;
    };
    moe_perm_.clear();
    moe_groups_.clear();
    for (int e = 0; e < b.n_expert; ++e) {
      const int slot = slot_of(e);
      if (slot < 0) continue;
      const int first = int(moe_perm_.size());
      for (int s = 0; s < n_slots; ++s)
        if (moe_chosen_[size_t(s)] == e) moe_perm_.push_back(s);
      if (int(moe_perm_.size()) > first) moe_groups_.push_back({slot, first, int(moe_perm_.size()) - first});
    }
    const int count = int(moe_perm_.size());
    if (count == 0) return;
    const size_t p_b = aligned(size_t(count) * 4), x_b = aligned(size_t(count) * n_embd * 4),
                 a_b = aligned(size_t(count) * ff * 4);
    auto* base = static_cast<uint8_t*>(moe_.reserve(p_b + 2 * x_b + 2 * a_b, stream_));
    auto* perm = reinterpret_cast<int32_t*>(base);
    auto* xs = reinterpret_cast<float*>(base + p_b);
    auto* d = reinterpret_cast<float*>(base + p_b + x_b);
    auto* g = reinterpret_cast<float*>(base + p_b + 2 * x_b);
    auto* u = reinterpret_cast<float*>(base + p_b + 2 * x_b + a_b);
    upload(perm, moe_perm_.data(), size_t(count) * sizeof(int32_t));
    cuda::moe_gather(b.x, n_embd, perm, b.k, count, xs, stream_);
    auto expert = [](const WeightView& v, size_t stride, int slot) {
      WeightView e = v;
      e.data += size_t(slot) * stride;
      return e;
    };
    for (const MoeGroup& gr : moe_groups_) {
      const float* in = xs + size_t(gr.first) * n_embd;
      matmul(expert(w.gate, w.gate_stride, gr.slot), in, n_embd, gr.count, g + size_t(gr.first) * ff, ff);
      matmul(expert(w.up, w.up_stride, gr.slot), in, n_embd, gr.count, u + size_t(gr.first) * ff, ff);
    }
    gated(g, u, int64_t(count) * ff, b.act, false);  // the down GEMMs read floats
    for (const MoeGroup& gr : moe_groups_)
      matmul(expert(w.down, w.down_stride, gr.slot), g + size_t(gr.first) * ff, ff, gr.count,
             d + size_t(gr.first) * n_embd, n_embd);
    cuda::moe_scatter(d, n_embd, perm, b.weights, count, b.out, stream_);
  }

  void moe_sum(const float* slots, int n_tokens, int k, int64_t n, float* out) override {
    cuda::moe_sum(slots, n_tokens, k, n, out, stream_);
  }

  void add_sigmoid_gated(float* x, const float* y, const float* gate_logit, int n_tokens, int64_t n) override {
    cuda::add_sigmoid_gated(x, y, gate_logit, n_tokens, n, stream_);
  }

  // ---- copies beside compute: pinned host memory, a copy stream, events as fences
  void* alloc_host(size_t bytes) override {
    void* p = nullptr;
    const cudaError_t e = cudaHostAlloc(&p, std::max<size_t>(bytes, 1), cudaHostAllocDefault);
    if (e != cudaSuccess)
      throw Error("cuda:" + std::to_string(device_) + ": cannot pin " + std::to_string(bytes) +
                  " bytes of host memory: " + cudaGetErrorString(e));
    return p;
  }
  void free_host(void* p) override {
    if (p) STRATA_CUDA_CHECK(cudaFreeHost(p));
  }
  void upload_async(void* dst, const void* src, size_t bytes) override {
    q8_forget();
    STRATA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, copy_stream()));
  }
  void ops_after_copies() override {
    if (!copy_stream_) return;
    STRATA_CUDA_CHECK(cudaEventRecord(copies_done_, copy_stream_));
    STRATA_CUDA_CHECK(cudaStreamWaitEvent(stream_, copies_done_, 0));
  }
  void copies_after_ops() override {
    cudaStream_t copies = copy_stream();  // first: it creates the events
    STRATA_CUDA_CHECK(cudaEventRecord(ops_done_, stream_));
    STRATA_CUDA_CHECK(cudaStreamWaitEvent(copies, ops_done_, 0));
  }

  // ---- timing the two queues (tier14: the GPU expert tier's telemetry): a ring of timing events
  int mark(bool copies) override {
    if (marks_.events.empty()) {
      marks_.events.assign(size_t(kMarks), nullptr);
      for (cudaEvent_t& e : marks_.events) STRATA_CUDA_CHECK(cudaEventCreate(&e));
    }
    const int id = int(marks_.next++ % uint64_t(kMarks));
    STRATA_CUDA_CHECK(cudaEventRecord(marks_.events[size_t(id)], copies ? copy_stream() : stream_));
    return id;
  }
  double seconds_between(int from, int to) override {
    if (from < 0 || to < 0 || marks_.events.empty()) return 0.0;
    STRATA_CUDA_CHECK(cudaEventSynchronize(marks_.events[size_t(to)]));
    float ms = 0.0f;
    STRATA_CUDA_CHECK(cudaEventElapsedTime(&ms, marks_.events[size_t(from)], marks_.events[size_t(to)]));
    return double(ms) / 1e3;
  }

  // ---- fused forms (gpu13)
  // Decode (one token): gate and up of one chunked type in one launch with the activation, on the
  // activations' int8 copy (rms_norm's, usually); else the ops one by one.
  void ffn_gate_up(const WeightView& gate, const WeightView& up, const float* x, int n_tokens, float* gate_out,
                   float* up_out, GatedActivation act) override {
    const bool fused = n_tokens == 1 && cuda::is_chunked(gate.type) &&
                       gate.type == up.type && gate.n_rows == up.n_rows && gate.n_cols == up.n_cols &&
                       gate.row_bytes == up.row_bytes && gate.n_cols % 32 == 0;
    if (!fused) {
      Backend::ffn_gate_up(gate, up, x, n_tokens, gate_out, up_out, act);
      return;
    }
    const int64_t n = int64_t(n_tokens) * gate.n_cols;
    int8_t* xq = nullptr;
    float* xd = nullptr;
    if (q8_holds(x, n)) {
      xq = static_cast<int8_t*>(q8_.ptr);
      xd = q8_scales(n);
    } else {
      xq = q8_room(n, xd);
      cuda::quantize_q8(x, gate.n_cols, n_tokens, gate.n_cols, xq, xd, stream_);
      q8_made(x, n);
    }
    last_matmul_decode_ = true;
    cuda::gate_up(gate, up, xq, xd, n_tokens, act == GatedActivation::gelu_tanh, gate_out, stream_);
    q8_keep(gate_out, size_t(n_tokens) * size_t(gate.n_rows) * sizeof(float));
  }

  // ---- gpt-oss's ops and the KV cache's types (kv_quant.cu, gptoss_ops.cu)
  void route_top_k_softmax(const float* logits, int n_tokens, int n_expert, int k, int32_t* chosen,
                           float* weights) override {
    if (n_expert <= 0 || n_expert > kMaxExperts || k <= 0 || k > kMaxExpertsUsed || k > n_expert)
      throw Error("cuda route_top_k_softmax: " + std::to_string(k) + " of " + std::to_string(n_expert) +
                  " experts (at most " + std::to_string(kMaxExpertsUsed) + " of " + std::to_string(kMaxExperts) + ")");
    cuda::route_top_k_softmax(logits, n_tokens, n_expert, k, chosen, weights, stream_);
  }

  void swiglu_oai(float* gate, const float* up, int64_t n, const SwigluOai& act) override {
    cuda::swiglu_oai(gate, up, n, act.alpha, act.limit, stream_);
  }

  // moe_experts' two paths with a bias after each matrix and the clamped SwiGLU. Decode: per slot
  // matvecs, the biases added per slot by the expert read on the device. Prompt: the routing on the
  // host, each expert once over its tokens, its biases added to its rows.
  void moe_experts_biased(const ExpertWeights& w, const ExpertBiases& bias, const ExpertBatch& b) override {
    check_experts(w, b);
    const int64_t n_embd = w.gate.n_cols, ff = w.gate.n_rows;
    const int n_slots = b.n_tokens * b.k;
    if (n_slots <= 0) return;
    if (b.n_tokens <= cuda::kMaxMatvecTokens) {
      const cuda::ExpertSlots xs{b.chosen, n_slots, b.k, b.n_expert, w.slot_of, w.single};
      const size_t x_q = aligned(size_t(b.n_tokens) * n_embd), x_d = aligned(size_t(b.n_tokens) * n_embd / 32 * 4);
      const size_t a_f = aligned(size_t(n_slots) * ff * 4), a_q = aligned(size_t(n_slots) * ff),
                   a_d = aligned(size_t(n_slots) * ff / 32 * 4);
      auto* base = static_cast<uint8_t*>(moe_.reserve(x_q + x_d + 2 * a_f + a_q + a_d, stream_));
      auto* xq = reinterpret_cast<int8_t*>(base);
      auto* xd = reinterpret_cast<float*>(base + x_q);
      auto* g = reinterpret_cast<float*>(base + x_q + x_d);
      auto* u = reinterpret_cast<float*>(base + x_q + x_d + a_f);
      auto* aq = reinterpret_cast<int8_t*>(base + x_q + x_d + 2 * a_f);
      auto* ad = reinterpret_cast<float*>(base + x_q + x_d + 2 * a_f + a_q);
      if (cuda::is_chunked(w.gate.type)) cuda::quantize_q8(b.x, n_embd, b.n_tokens, n_embd, xq, xd, stream_);
      cuda::moe_gate_up(xs, w.gate, w.gate_stride, w.up, w.up_stride, xq, xd, b.x, g, u, stream_);
      cuda::add_slot_bias(g, ff, bias.gate, xs, nullptr, stream_);
      cuda::add_slot_bias(u, ff, bias.up, xs, nullptr, stream_);
      swiglu_oai(g, u, int64_t(n_slots) * ff, bias.act);
      if (cuda::is_chunked(w.down.type)) cuda::quantize_q8(g, ff, n_slots, ff, aq, ad, stream_);
      cuda::moe_down(xs, w.down, w.down_stride, aq, ad, g, b.weights, b.out, stream_);
      cuda::add_slot_bias(b.out, n_embd, bias.down, xs, b.weights, stream_);  // weights * (down + bias)
      return;
    }
    moe_chosen_.resize(size_t(n_slots));
    download(moe_chosen_.data(), b.chosen, size_t(n_slots) * sizeof(int32_t));
    moe_slot_of_.assign(size_t(b.n_expert), 0);
    if (w.slot_of) download(moe_slot_of_.data(), w.slot_of, size_t(b.n_expert) * sizeof(int32_t));
    moe_perm_.clear();
    biased_groups_.clear();
    for (int e = 0; e < b.n_expert; ++e) {
      const int slot = w.slot_of ? moe_slot_of_[size_t(e)] : w.slot(e);
      if (slot < 0) continue;
      const int first = int(moe_perm_.size());
      for (int s = 0; s < n_slots; ++s)
        if (moe_chosen_[size_t(s)] == e) moe_perm_.push_back(s);
      if (int(moe_perm_.size()) > first) biased_groups_.push_back({e, slot, first, int(moe_perm_.size()) - first});
    }
    const int count = int(moe_perm_.size());
    if (count == 0) return;
    const size_t p_b = aligned(size_t(count) * 4), x_b = aligned(size_t(count) * n_embd * 4),
                 a_b = aligned(size_t(count) * ff * 4);
    auto* base = static_cast<uint8_t*>(moe_.reserve(p_b + 2 * x_b + 2 * a_b, stream_));
    auto* perm = reinterpret_cast<int32_t*>(base);
    auto* xs = reinterpret_cast<float*>(base + p_b);
    auto* d = reinterpret_cast<float*>(base + p_b + x_b);
    auto* g = reinterpret_cast<float*>(base + p_b + 2 * x_b);
    auto* u = reinterpret_cast<float*>(base + p_b + 2 * x_b + a_b);
    upload(perm, moe_perm_.data(), size_t(count) * sizeof(int32_t));
    cuda::moe_gather(b.x, n_embd, perm, b.k, count, xs, stream_);
    auto expert = [](const WeightView& v, size_t stride, int slot) {
      WeightView e = v;
      e.data += size_t(slot) * stride;
      return e;
    };
    for (const BiasedGroup& gr : biased_groups_) {
      const float* in = xs + size_t(gr.first) * n_embd;
      float* gg = g + size_t(gr.first) * ff;
      float* uu = u + size_t(gr.first) * ff;
      matmul(expert(w.gate, w.gate_stride, gr.slot), in, n_embd, gr.count, gg, ff);
      matmul(expert(w.up, w.up_stride, gr.slot), in, n_embd, gr.count, uu, ff);
      if (bias.gate) add_bias(gg, bias.gate + size_t(gr.expert) * ff, ff, gr.count);
      if (bias.up) add_bias(uu, bias.up + size_t(gr.expert) * ff, ff, gr.count);
    }
    swiglu_oai(g, u, int64_t(count) * ff, bias.act);
    for (const BiasedGroup& gr : biased_groups_) {
      float* dd = d + size_t(gr.first) * n_embd;
      matmul(expert(w.down, w.down_stride, gr.slot), g + size_t(gr.first) * ff, ff, gr.count, dd, n_embd);
      if (bias.down) add_bias(dd, bias.down + size_t(gr.expert) * n_embd, n_embd, gr.count);
    }
    cuda::moe_scatter(d, n_embd, perm, b.weights, count, b.out, stream_);
  }

 private:
  struct BiasedGroup {
    int expert, slot, first, count;  // an expert, its slot and its run of moe_perm_
  };
  std::vector<BiasedGroup> biased_groups_;

  void store_kv_any(const ops::KvLayerView& k_cache, const ops::KvLayerView& v_cache, const float* k, const float* v,
                    int n_tokens, int64_t pos0, int n_head_kv, int head_dim_k, int head_dim_v) {
    const int64_t* pos = position(pos0);
    cuda::store_kv_any(k, int64_t(n_head_kv) * head_dim_k, n_tokens, pos0, pos, k_cache, stream_);
    cuda::store_kv_any(v, int64_t(n_head_kv) * head_dim_v, n_tokens, pos0, pos, v_cache, stream_);
  }

  void attention_any(const ops::AttentionShape& shape, const float* q, int n_tokens, int64_t pos0,
                     const ops::KvLayerView& k_cache, const ops::KvLayerView& v_cache, float* out) {
    cuda::AttentionExtArgs a;
    if (!cuda::kv_type_of(k_cache.type, a.k_type) || !cuda::kv_type_of(v_cache.type, a.v_type))
      throw Error(std::string("cuda attention: no kernels for a KV cache of ") + type_name(k_cache.type) + " / " +
                  type_name(v_cache.type) + " (f16, q8_0, q4_0)");
    a.q = q;
    a.q_stride = int64_t(shape.n_head) * shape.head_dim_k;
    a.k = k_cache.data;
    a.v = v_cache.data;
    a.k_row_bytes = k_cache.row_bytes;
    a.k_head_bytes = k_cache.head_bytes;
    a.v_row_bytes = v_cache.row_bytes;
    a.v_head_bytes = v_cache.head_bytes;
    a.n_slots = std::min(k_cache.n_slots, v_cache.n_slots);
    a.out = out;
    a.out_stride = int64_t(shape.n_head) * shape.head_dim_v;
    a.n_tokens = n_tokens;
    a.n_head = shape.n_head;
    a.n_head_kv = shape.n_head_kv;
    a.head_dim_k = shape.head_dim_k;
    a.head_dim_v = shape.head_dim_v;
    a.pos0 = pos0;
    a.pos_dev = position(pos0);
    a.window = shape.window;
    a.kq_scale = shape.scale;
    a.sinks = shape.sinks;
    cuda::attention_ext(a, stream_);
  }

 private:
  // While a position graph records: the position's device address for the ops that take one (they
  // must be called with the recorded position); else null (the ops take pos0 by value).
  const int64_t* position(int64_t pos0) const {
    if (!recording_position_) return nullptr;
    if (pos0 != recording_pos_)
      throw Error("cuda: an op at position " + std::to_string(pos0) + " inside a graph recorded for position " +
                  std::to_string(recording_pos_));
    return pos_dev_;
  }
  int scratch_grown() const {
    return act_.grown + weights_f16_.grown + attention_.grown + moe_.grown + q8_.grown + split_counters_.grown;
  }
  // The position a recorded step reads, into device memory in stream order (the pinned source is
  // rewritten only once the stream has drained).
  void set_position(int64_t pos) {
    STRATA_CUDA_CHECK(cudaStreamSynchronize(stream_));
    *pos_host_ = pos;
    STRATA_CUDA_CHECK(cudaMemcpyAsync(pos_dev_, pos_host_, sizeof(int64_t), cudaMemcpyHostToDevice, stream_));
  }
  // A get_rows id outside its tensor (the kernel wrote zeros for it): an error at the next wait.
  void check_ids() {
    const int bad = *static_cast<volatile int*>(bad_id_host_);
    if (bad == 0) return;
    *bad_id_host_ = 0;
    throw Error("cuda get_rows: the id at index " + std::to_string(bad - 1) + " of a batch is outside its tensor's rows");
  }
  cudaStream_t copy_stream() {
    if (!copy_stream_) {
      STRATA_CUDA_CHECK(cudaStreamCreateWithFlags(&copy_stream_, cudaStreamNonBlocking));
      STRATA_CUDA_CHECK(cudaEventCreateWithFlags(&copies_done_, cudaEventDisableTiming));
      STRATA_CUDA_CHECK(cudaEventCreateWithFlags(&ops_done_, cudaEventDisableTiming));
    }
    return copy_stream_;
  }
  // ---- the decode matmul's int8 activations (gpu13): rows quantized once, by the op that made them
  // (rms_norm, the gated activation) or the first matmul that reads them, and reused by the next
  // matmuls that read the same rows. The copy in q8_ is of the n contiguous floats at q8_key_.x and
  // holds while no kernel has been launched since q8_key_.at (cuda::launches) other than ones known
  // not to write them (q8_keep); copies of memory drop it.
  struct Q8Key {
    const float* x = nullptr;
    int64_t n = 0;
    uint64_t at = ~uint64_t(0);
  };
  bool q8_valid() const { return q8_key_.x && q8_key_.at == cuda::launches.load(std::memory_order_relaxed); }
  bool q8_holds(const float* x, int64_t n) const { return q8_valid() && q8_key_.x == x && q8_key_.n == n; }
  void q8_forget() { q8_key_ = Q8Key{}; }
  // Room for n values (n / 32 scales after them); the int8 part, and the scales in d.
  int8_t* q8_room(int64_t n, float*& d) {
    auto* base = static_cast<uint8_t*>(q8_.reserve(aligned(size_t(n)) + size_t(n) / 32 * sizeof(float), stream_));
    d = reinterpret_cast<float*>(base + aligned(size_t(n)));
    return reinterpret_cast<int8_t*>(base);
  }
  float* q8_scales(int64_t n) { return reinterpret_cast<float*>(static_cast<uint8_t*>(q8_.ptr) + aligned(size_t(n))); }
  void q8_made(const float* x, int64_t n) { q8_key_ = Q8Key{x, n, cuda::launches.load(std::memory_order_relaxed)}; }
  // The kernel just launched wrote only [p, p + bytes): the copy holds on if that misses its rows.
  void q8_keep(const void* p, size_t bytes) {
    const auto* a = static_cast<const uint8_t*>(p);
    const auto* x = reinterpret_cast<const uint8_t*>(q8_key_.x);
    if (!q8_key_.x || a + bytes <= x || a >= x + size_t(q8_key_.n) * sizeof(float)) {
      if (q8_key_.x) q8_key_.at = cuda::launches.load(std::memory_order_relaxed);
    } else {
      q8_forget();
    }
  }
  // gate = act(gate) * up over n values, quantized in the same launch where `quantize` (and n a
  // multiple of 32).
  void gated(float* gate, const float* up, int64_t n, GatedActivation act, bool quantize) {
    if (n <= 0) return;
    quantize = quantize && n % 32 == 0;
    float* qd = nullptr;
    int8_t* q = quantize ? q8_room(n, qd) : nullptr;
    if (act == GatedActivation::silu)
      gated_kernel<false><<<blocks_for(n, 256), 256, 0, stream_>>>(gate, up, n, q, qd);
    else
      gated_kernel<true><<<blocks_for(n, 256), 256, 0, stream_>>>(gate, up, n, q, qd);
    STRATA_CUDA_LAUNCHED();
    if (quantize) q8_made(gate, n);
  }
  Q8Key q8_key_;
  Scratch q8_;
  bool last_matmul_decode_ = false;  // the last matmul was a matvec (its outputs feed matvecs)

  cudaStream_t copy_stream_ = nullptr;  // created on the first async copy
  cudaEvent_t copies_done_ = nullptr, ops_done_ = nullptr;
  struct Marks {  // mark()'s events, created on the first mark (tier14)
    std::vector<cudaEvent_t> events;
    uint64_t next = 0;
    ~Marks() {
      for (cudaEvent_t e : events)
        if (e) cudaEventDestroy(e);
    }
  } marks_;
  static size_t aligned(size_t n) { return (n + 255) / 256 * 256; }
  static void check_experts(const ExpertWeights& w, const ExpertBatch& b) {
    if (b.n_expert <= 0 || b.n_expert > kMaxExperts || b.k <= 0 || b.k > kMaxExpertsUsed || b.k > b.n_expert)
      throw Error("cuda moe_experts: " + std::to_string(b.k) + " of " + std::to_string(b.n_expert) +
                  " experts (at most " + std::to_string(kMaxExpertsUsed) + " of " + std::to_string(kMaxExperts) + ")");
    const WeightView& g = w.gate;
    if (w.up.type != g.type || w.up.n_rows != g.n_rows || w.up.n_cols != g.n_cols || w.down.n_cols != g.n_rows ||
        w.down.n_rows != g.n_cols)
      throw Error(std::string("cuda moe_experts: expert shapes gate ") + type_name(g.type) + " " +
                  std::to_string(g.n_rows) + "x" + std::to_string(g.n_cols) + ", up " + type_name(w.up.type) + " " +
                  std::to_string(w.up.n_rows) + "x" + std::to_string(w.up.n_cols) + ", down " +
                  std::to_string(w.down.n_rows) + "x" + std::to_string(w.down.n_cols) +
                  " (gate and up of one type, down their transpose)");
    for (const WeightView* v : {&w.gate, &w.down}) {
      const bool chunked = cuda::is_chunked(v->type);
      if (!chunked && !cuda::is_float(v->type))
        throw Error(std::string("cuda moe_experts: no kernels for expert type ") + type_name(v->type));
      if (v->n_cols % (chunked ? 32 : 2) != 0)
        throw Error("cuda moe_experts: " + std::to_string(v->n_cols) + " columns of " + type_name(v->type));
    }
  }
  struct MoeGroup {
    int slot, first, count;  // an expert's slot and its run of perm
  };
  Scratch moe_;  // the expert path's activations (decode: quantized inputs, gate/up; prompt: gathered rows)
  std::vector<int32_t> moe_chosen_, moe_slot_of_, moe_perm_;  // the prompt path's routing on the host
  std::vector<MoeGroup> moe_groups_;

  static void check_f16_cache(const ops::KvLayerView& c, int64_t width, const char* op) {
    if (c.type != DType::F16 || c.row_bytes != size_t(width) * 2 || c.n_slots <= 0)
      throw Error(std::string("cuda ") + op + ": the KV cache must be f16 rows of " + std::to_string(width) +
                  " values (got " + type_name(c.type) + ", " + std::to_string(c.row_bytes) + " bytes a row, " +
                  std::to_string(c.n_slots) + " slots)");
  }

  int device_;
  const float* prepared_x_ = nullptr;
  int64_t prepared_stride_ = 0;
  int prepared_tokens_ = 0;
  cudaDeviceProp props_{};
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  cudaGraphExec_t graph_exec_ = nullptr;
  int64_t* pos_host_ = nullptr;  // pinned: a replayable graph's position, copied to pos_dev_ per step
  int64_t* pos_dev_ = nullptr;   // device memory the recorded kernels read it from
  bool recording_position_ = false;   // between begin_position_graph and end_graph
  int64_t recording_pos_ = 0;
  bool replayable_ = false;           // graph_exec_ reads its position from pos_host_
  int recorded_grown_ = 0;            // scratch_grown() when it was recorded
  int* bad_id_host_ = nullptr;  // mapped host memory get_rows reports a bad id in (1 + its index)
  int* bad_id_ = nullptr;       // its device address
  Scratch act_;          // quantized or f16 activations of one matmul
  Scratch weights_f16_;  // one weight matrix dequantized to f16 (prompt GEMM)
  Scratch attention_;    // partial results of attention split over the context
  Scratch split_counters_;  // attention's per-(token block, head) counts of finished splits
};

}  // namespace
}  // namespace cuda

bool cuda_built() { return true; }

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver / no device" error
    return 0;
  }
  return n;
}

bool cuda_memory(int device, size_t& free_bytes, size_t& total_bytes) {
  if (device < 0 || device >= cuda_device_count()) return false;
  int current = 0;
  if (cudaGetDevice(&current) != cudaSuccess || cudaSetDevice(device) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  const bool ok = cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess;
  if (!ok) cudaGetLastError();
  cudaSetDevice(current);
  return ok;
}

bool cuda_supports(DType type) { return cuda::is_chunked(type) || cuda::is_float(type); }

uint64_t cuda_free_memory(int device) {
  size_t free_bytes = 0, total_bytes = 0;
  return cuda_memory(device, free_bytes, total_bytes) ? uint64_t(free_bytes) : 0;
}

std::unique_ptr<Backend> make_cuda_backend(int device) {
  const int n = cuda_device_count();
  if (device < 0 || device >= n)
    throw Error("cuda: device " + std::to_string(device) + " requested, " + std::to_string(n) +
                " present (no CUDA device or driver on this machine?)");
  return std::make_unique<cuda::CudaBackend>(device);
}

}  // namespace strata::backend
