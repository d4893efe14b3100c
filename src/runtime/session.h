#pragma once
// A conversation's state on one model: KV cache, scratch buffers and the token history.
// Prompts are evaluated in batches of up to n_batch tokens (matrix-matrix products).
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "model/blocks.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "ops/thread_pool.h"

namespace strata {

// Where a session computes. automatic: the GPU when this build and machine have one and the
// model runs there whole (see gpu_unsupported), else the CPU. Sessions default to the CPU; the
// commands default to automatic.
enum class Device { automatic, cpu, gpu };

struct SessionParams {
  int n_ctx = 4096;   // clamped to the model's training context
  int n_batch = 512;  // tokens per forward pass during prompt processing
  int n_threads = 0;  // 0: physical cores
  DType kv_type = DType::F16;  // KV cache element type (f16, q8_0, q4_0)
  Device device = Device::cpu;
  // A GPU session leaves the MoE layers' routed experts in host memory when false: an
  // ExpertCompute (set_expert_compute: the GPU expert tier) places and computes them.
  bool routed_experts_on_gpu = true;
};

// Why a session with these parameters cannot compute on the GPU (no CUDA build or device, a layer
// or type without CUDA kernels, too little free VRAM), or "" when it can.
std::string gpu_unsupported(const Model& model, const SessionParams& params);
// What a GPU session of these parameters holds in VRAM: its weights as uploaded (without the MoE
// layers' routed experts where routed_experts_on_gpu is false), KV cache, activations, and the
// scratch its ops grow to (vram_reserved_bytes). The one count of it: gpu_unsupported weighs it
// against the device's free memory, the three-tier plan takes it as the GPU's fixed part
// (tier::TieringOptions::gpu_session_bytes) and the GPU expert tier gets the rest of --gpu-mem.
// The CUDA context's own memory (outside any --gpu-mem budget) is not in it.
size_t gpu_session_vram_bytes(const Model& model, const SessionParams& params);
// The widest KV cache type (f16, then q8_0, then q4_0) with which a session of these parameters
// runs on the GPU, or none: --kv-type auto's choice where sessions compute on the GPU.
std::optional<DType> gpu_kv_type(const Model& model, SessionParams params);

class Session {
 public:
  Session(const Model& model, const SessionParams& params);
  ~Session();

  // Appends tokens to the context and evaluates them. Returns the logits of the last token
  // (n_vocab floats, valid until the next call). Throws strata::Error when the context is full.
  const float* eval(const std::vector<int32_t>& tokens);
  // Like eval, but keeps the logits of every token: [tokens.size() x n_vocab].
  std::vector<float> eval_all_logits(const std::vector<int32_t>& tokens);
  // Like eval, calling on_logits(i, logits of tokens[i]) for every token in order. Batches are
  // shortened so that a batch's logits stay within 64 MiB.
  void eval_each(const std::vector<int32_t>& tokens, const std::function<void(size_t, const float*)>& on_logits);
  // Like eval, calling on_hidden(i, final hidden state of tokens[i] after the output norm,
  // n_embd floats) for every token in order: what embeddings pool.
  void eval_hidden(const std::vector<int32_t>& tokens, const std::function<void(size_t, const float*)>& on_hidden);
  // FFN matrices this source streams (from the SSD) come from it instead of memory. The source
  // must outlive the session's evaluations; null restores all-resident.
  void set_ffn_source(FfnSource* source);
  // Likewise for the expert slices of MoE layers; the source's hook (its guesses) comes along.
  void set_expert_source(ExpertSource* source);
  // Sees every MoE layer's routing and the guesses made of it; null: none. guesses: a hook that
  // makes the guesses where the expert source makes none (experts resident); may be null.
  void set_routing_observer(RoutingObserver* observer, ForwardHook* guesses = nullptr);
  // The MoE layers it computes come to it (GPU sessions with routed_experts_on_gpu false need
  // one); null: computed as bound. Decode is then no longer one CUDA graph (it syncs per layer).
  void set_expert_compute(ExpertCompute* compute) { expert_compute_ = compute; }
  // Where the forward pass computes, and the threads of the CPU's share (the GPU tier's).
  backend::Backend& backend() { return *backend_; }
  ThreadPool& pool() { return pool_; }
  // Forgets everything after the first n tokens (n <= n_past()), or everything when a
  // sliding-window layer no longer holds the window position n would see, or a recurrent state
  // (qwen35) is neither at n nor checkpointed there (the end of the last prompt batch); n_past()
  // tells which.
  void truncate(int n);

  int n_past() const { return int(history_.size()); }
  int n_ctx() const { return params_.n_ctx; }
  int n_batch() const { return params_.n_batch; }
  const std::vector<int32_t>& history() const { return history_; }
  const Model& model() const { return model_; }
  int n_threads() const { return pool_.n_threads(); }
  size_t memory_bytes() const { return kv_.bytes() + buf_.bytes(); }
  // The device the forward pass runs on ("cpu (avx2, 8 threads)", "cuda:0 NVIDIA H100 ..."), and
  // what it holds in GPU memory (weights, KV cache, activations; 0 on the CPU).
  std::string device_name() const;
  bool on_gpu() const { return gpu_ != nullptr; }
  size_t vram_bytes() const;
  // What a GPU session's scratch grows to beyond vram_bytes() (prompt GEMM tiles, the expert
  // path's rows); 0 on the CPU. The CUDA context's own memory is counted by neither.
  size_t vram_reserved_bytes() const;
  // The GPU's measured memory bandwidth in GB/s (0 for a CPU session).
  double gpu_memory_gbps() { return gpu_ ? backend_->memory_gbps() : 0.0; }

 private:
  void forward_batch(const int32_t* tokens, int n, bool all_logits, bool hidden_only = false);

  const Model& model_;
  SessionParams params_;
  ThreadPool pool_;
  KvCache kv_;
  ForwardBuffers buf_;
  std::vector<int32_t> history_;
  class Weights;  // the resident weights, except what the streamers serve
  std::unique_ptr<Weights> weights_;
  RoutingObserver* routing_observer_ = nullptr;
  ExpertCompute* expert_compute_ = nullptr;
  std::shared_ptr<backend::Backend> backend_;  // where every op runs (shared with the GPU weights it allocated)
  struct Gpu;                                  // the model's weights and activations on the GPU
  std::unique_ptr<Gpu> gpu_;
};

}  // namespace strata
