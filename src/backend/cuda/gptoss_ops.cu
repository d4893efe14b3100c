// gpt-oss's ops on the GPU: its routing (the top k logits, then a softmax over those k), its clamped
// SwiGLU (ggml's swiglu_oai) and the per-expert biases of its routed experts, added per (token,
// rank) slot with the expert read from the routing on the device. The CPU forms are in
// cpu_backend.cpp; the expert op that composes these is CudaBackend::moe_experts_biased.
#include <cfloat>

#include "backend/cuda/cuda_internal.h"

namespace strata::backend::cuda {
namespace {

unsigned blocks_for(int64_t n, int per_block) { return unsigned((n + per_block - 1) / per_block); }

// As the CPU: x = min(gate, limit), y = clamp(up, -limit, limit), x / (1 + e^(alpha * -x)) * (y + 1).
__global__ void swiglu_oai_kernel(float* gate, const float* up, int64_t n, float alpha, float limit) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float x = fminf(gate[i], limit);
  const float y = fminf(fmaxf(up[i], -limit), limit);
  gate[i] = __fmul_rn(__fdiv_rn(x, __fadd_rn(1.0f, expf(__fmul_rn(alpha, -x)))), __fadd_rn(y, 1.0f));
}

// One warp per token: k rounds of arg-max over the logits (ties to the lower index, as top_k), then
// lane 0 takes the softmax of the k picked logits as ops::softmax does (max, e^(x - max), the sum in
// double, times 1 / sum).
__global__ void route_softmax_kernel(const float* logits, int n_tokens, int n_expert, int k, int32_t* chosen,
                                     float* weights) {
  constexpr int kPerLane = kMaxExperts / 32;
  const int t = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (t >= n_tokens) return;
  const int lane = threadIdx.x % 32;
  float v[kPerLane];
  bool taken[kPerLane];
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int e = lane + 32 * j;
    v[j] = e < n_expert ? logits[int64_t(t) * n_expert + e] : -INFINITY;
    taken[j] = e >= n_expert;
  }
  float picked[kMaxExpertsUsed];
  int picked_id[kMaxExpertsUsed];
  for (int r = 0; r < k; ++r) {
    float best = -INFINITY;
    int best_e = n_expert;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j)
      if (!taken[j] && (best_e == n_expert || v[j] > best)) {  // strictly greater: the lower index wins a tie
        best = v[j];
        best_e = lane + 32 * j;
      }
    for (int o = 16; o > 0; o >>= 1) {
      const float ob = __shfl_xor_sync(0xffffffffu, best, o);
      const int oe = __shfl_xor_sync(0xffffffffu, best_e, o);
      if (oe < n_expert && (best_e == n_expert || ob > best || (ob == best && oe < best_e))) {
        best = ob;
        best_e = oe;
      }
    }
    if (best_e % 32 == lane) taken[best_e / 32] = true;
    picked[r] = best;
    picked_id[r] = best_e;
  }
  if (lane != 0) return;
  float mx = -INFINITY;
  for (int r = 0; r < k; ++r) mx = fmaxf(mx, picked[r]);
  double sum = 0.0;
  for (int r = 0; r < k; ++r) {
    picked[r] = expf(picked[r] - mx);
    sum += double(picked[r]);
  }
  const float inv = float(1.0 / sum);
  for (int r = 0; r < k; ++r) {
    chosen[int64_t(t) * k + r] = picked_id[r];
    weights[int64_t(t) * k + r] = picked[r] * inv;
  }
}

// rows[s] += scale_s * bias[e_s] for each slot whose expert e_s is here (ExpertWeights' rule), rows
// of n; scale_s = weights[s] where given, else 1.
__global__ void slot_bias_kernel(float* rows, int64_t n, const float* bias, ExpertSlots x, const float* weights) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(x.n_slots) * n) return;
  const int s = int(i / n);
  const int64_t c = i % n;
  const int e = x.chosen[s];
  if (e < 0 || e >= x.n_expert) return;
  const int slot = x.slot_of ? x.slot_of[e] : (x.single >= 0 ? (e == x.single ? 0 : -1) : e);
  if (slot < 0) return;
  const float b = bias[int64_t(e) * n + c];
  rows[i] += weights ? weights[s] * b : b;
}

}  // namespace

void swiglu_oai(float* gate, const float* up, int64_t n, float alpha, float limit, cudaStream_t stream) {
  if (n <= 0) return;
  swiglu_oai_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(gate, up, n, alpha, limit);
  STRATA_CUDA_LAUNCHED();
}

void route_top_k_softmax(const float* logits, int n_tokens, int n_expert, int k, int32_t* chosen, float* weights,
                         cudaStream_t stream) {
  if (n_tokens <= 0) return;
  route_softmax_kernel<<<blocks_for(n_tokens, 4), 128, 0, stream>>>(logits, n_tokens, n_expert, k, chosen, weights);
  STRATA_CUDA_LAUNCHED();
}

void add_slot_bias(float* rows, int64_t n, const float* bias, const ExpertSlots& x, const float* weights,
                   cudaStream_t stream) {
  const int64_t total = int64_t(x.n_slots) * n;
  if (total <= 0 || !bias) return;
  slot_bias_kernel<<<blocks_for(total, 256), 256, 0, stream>>>(rows, n, bias, x, weights);
  STRATA_CUDA_LAUNCHED();
}

}  // namespace strata::backend::cuda
