// The CUDA backend: device memory, one stream in which every op is queued in order, cuBLAS for
// the prompt GEMM (f16 tiles dequantized from the weights, f32 accumulation), and the small
// row and element-wise kernels. Scratch grows to the largest batch once, never per token.
#include <cublas_v2.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_internal.h"

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

// As the CPU: the sum of squares in double, the scale in float.
__global__ void rms_norm_kernel(const float* x, const float* weight, float* out, int64_t n, float eps) {
  __shared__ double partial[kRowThreads / 32];
  const float* xr = x + blockIdx.x * n;
  float* o = out + blockIdx.x * n;
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kRowThreads) sum += double(xr[i] * xr[i]);
  sum = block_sum<kRowThreads>(sum, partial);
  const float scale = 1.0f / sqrtf(float(sum / double(n)) + eps);
  for (int64_t i = threadIdx.x; i < n; i += kRowThreads) o[i] = weight ? (xr[i] * scale) * weight[i] : xr[i] * scale;
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

__global__ void silu_mul_kernel(float* gate, const float* up, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float g = gate[i];
  gate[i] = (g / (1.0f + expf(-g))) * up[i];
}

// ggml's GELU: the input rounded to f16, the tanh form evaluated, the result rounded to f16 (what
// the CPU's table holds); identity past 10, zero below -10.
__global__ void gelu_mul_kernel(float* gate, const float* up, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float x = gate[i];
  float g;
  if (x <= -10.0f) {
    g = 0.0f;
  } else if (x >= 10.0f) {
    g = x;
  } else {
    constexpr float kSqrt2OverPi = 0.79788456080286535587989211986876f;
    constexpr float kCoefA = 0.044715f;
    const float h = __half2float(__float2half_rn(x));
    g = __half2float(__float2half_rn(0.5f * h * (1.0f + tanhf(kSqrt2OverPi * h * (1.0f + kCoefA * h * h)))));
  }
  gate[i] = g * up[i];
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

// Row t of src [n_tokens x width] into cache slot (pos0 + t) % n_slots.
__global__ void store_kv_kernel(const float* src, int64_t width, int n_tokens, int64_t pos0, int64_t n_slots,
                                __half* cache, const int64_t* pos_dev) {
  if (pos_dev) pos0 = *pos_dev;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(n_tokens) * width) return;
  const int64_t t = i / width, c = i % width;
  cache[((pos0 + t) % n_slots) * width + c] = __float2half_rn(src[i]);
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
    STRATA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
    STRATA_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the host buffer may go away after return
  }
  void download(void* dst, const void* src, size_t bytes) override {
    STRATA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    STRATA_CUDA_CHECK(cudaStreamSynchronize(stream_));
    check_ids();
  }
  void copy(void* dst, const void* src, size_t bytes) override {
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
    if (n_tokens <= cuda::kMaxMatvecTokens) {
      int8_t* xq = nullptr;
      float* xd = nullptr;
      if (chunked) {
        const size_t q_bytes = size_t(n_tokens) * size_t(w.n_cols);
        uint8_t* s = static_cast<uint8_t*>(act_.reserve(q_bytes + q_bytes / 32 * 4, stream_));
        xq = reinterpret_cast<int8_t*>(s);
        xd = reinterpret_cast<float*>(s + q_bytes);
        cuda::quantize_q8(x, x_stride, n_tokens, w.n_cols, xq, xd, stream_);
      }
      cuda::matvec(w, xq, xd, x, x_stride, n_tokens, y, y_stride, stream_);
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
    rms_norm_kernel<<<unsigned(n_rows), kRowThreads, 0, stream_>>>(x, weight, out, n, eps);
    STRATA_CUDA_LAUNCHED();
  }

  void rope(float* x, int64_t x_stride, int n_tokens, int n_heads, int head_dim, int64_t pos0,
            const ops::RopeParams& params) override {
    const int n_rot = params.n_rot;
    if (n_rot > 1024 || n_rot % 2 || n_rot > head_dim)
      throw Error("cuda rope: unsupported rotary dimension " + std::to_string(n_rot));
    if (params.ext_factor != 0.0f || params.attn_factor != 1.0f)
      throw Error("cuda rope: YaRN scaling (ext_factor " + std::to_string(params.ext_factor) + ", attn_factor " +
                  std::to_string(params.attn_factor) + ") has no CUDA kernel yet");
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
    if (n <= 0) return;
    if (act == GatedActivation::silu)
      silu_mul_kernel<<<blocks_for(n, 256), 256, 0, stream_>>>(gate, up, n);
    else
      gelu_mul_kernel<<<blocks_for(n, 256), 256, 0, stream_>>>(gate, up, n);
    STRATA_CUDA_LAUNCHED();
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
    check_f16_cache(k_cache, int64_t(n_head_kv) * head_dim_k, "store_kv");
    check_f16_cache(v_cache, int64_t(n_head_kv) * head_dim_v, "store_kv");
    if (n_tokens <= 0) return;
    const int64_t kw = int64_t(n_head_kv) * head_dim_k, vw = int64_t(n_head_kv) * head_dim_v;
    store_kv_kernel<<<blocks_for(n_tokens * kw, 256), 256, 0, stream_>>>(
        k, kw, n_tokens, pos0, k_cache.n_slots, reinterpret_cast<__half*>(k_cache.data), position(pos0));
    store_kv_kernel<<<blocks_for(n_tokens * vw, 256), 256, 0, stream_>>>(
        v, vw, n_tokens, pos0, v_cache.n_slots, reinterpret_cast<__half*>(v_cache.data), position(pos0));
    STRATA_CUDA_LAUNCHED();
  }

  void attention(const ops::AttentionShape& shape, const float* q, int n_tokens, int64_t pos0,
                 const ops::KvLayerView& k_cache, const ops::KvLayerView& v_cache, float* out) override {
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
    cuda::attention(a, partials, props_.multiProcessorCount, stream_);
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
    if (n_expert <= 0 || n_expert > kMaxExperts || k <= 0 || k > kMaxExpertsUsed || k > n_expert)
      throw Error("cuda route_top_k: " + std::to_string(k) + " of " + std::to_string(n_expert) + " experts (at most " +
                  std::to_string(kMaxExpertsUsed) + " of " + std::to_string(kMaxExperts) + ")");
    if (n_tokens <= 0) return;
    route_kernel<<<blocks_for(n_tokens, 4), 128, 0, stream_>>>(logits, n_tokens, n_expert, k, normalize, chosen,
                                                               weights);
    STRATA_CUDA_LAUNCHED();
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
      if (cuda::is_chunked(w.gate.type)) cuda::quantize_q8(b.x, n_embd, b.n_tokens, n_embd, xq, xd, stream_);
      cuda::moe_gate_up(xs, w.gate, w.gate_stride, w.up, w.up_stride, xq, xd, b.x, g, u, stream_);
      gated_activation(g, u, int64_t(n_slots) * ff, b.act);
      if (cuda::is_chunked(w.down.type)) cuda::quantize_q8(g, ff, n_slots, ff, aq, ad, stream_);
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
    gated_activation(g, u, int64_t(count) * ff, b.act);
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
  int scratch_grown() const { return act_.grown + weights_f16_.grown + attention_.grown; }
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
