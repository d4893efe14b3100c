// Speed of the CUDA backend's weight kernels against the memory bound (run on a GPU machine:
// bench/cuda_ops.sh). Decode: the fused dequantize-dot matvec for every type on llama-3-8B shapes,
// replayed from a CUDA graph over copies of the weights that together exceed the L2 cache, as
// GB/s of weight bytes and as a percentage of the device's measured copy bandwidth and of the
// nominal HBM3 bound (3.35 TB/s on an H100 SXM). Prompt: matmul of 512 tokens (dequantize to f16 +
// cuBLAS) in TFLOP/s. Attention: one decode step and a 512-token prompt over the f16 KV cache.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_internal.h"

using namespace strata;
namespace cu = strata::backend::cuda;

namespace {

constexpr double kNominalGBs = 3350.0;
constexpr size_t kRotationBytes = size_t(512) << 20;  // > 50 MB of L2, many times over
int g_warps = 0;  // the one-token matvec's warps per row now set (0: the backend's choice)

void set_warps(int w) {
  g_warps = w;
  cu::set_matvec_warps_per_row(w);
}

__global__ void fill_kernel(uint8_t* p, size_t n, uint32_t seed) {
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t x = uint32_t(i) * 2654435761u ^ seed;
    x ^= x >> 13;
    x *= 0x5bd1e995u;
    // Keep f16 fields finite: clear the top exponent bit of odd bytes (no NaN/inf scales).
    p[i] = uint8_t(x >> 7) & ((i & 1) ? 0x3F : 0xFF);
  }
}

void fill(void* p, size_t n, uint32_t seed) {
  fill_kernel<<<1024, 256>>>(static_cast<uint8_t*>(p), n, seed);
  STRATA_CUDA_LAUNCHED();
}

double copy_bandwidth_gbs() {
  const size_t n = size_t(1) << 30;
  void *a, *b;
  STRATA_CUDA_CHECK(cudaMalloc(&a, n));
  STRATA_CUDA_CHECK(cudaMalloc(&b, n));
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice);
  cudaEventRecord(e0);
  for (int i = 0; i < 10; ++i) cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice);
  cudaEventRecord(e1);
  cudaEventSynchronize(e1);
  float ms = 0;
  cudaEventElapsedTime(&ms, e0, e1);
  cudaFree(a);
  cudaFree(b);
  return 2.0 * n * 10 / (ms * 1e-3) / 1e9;  // bytes read + written
}

struct Shape {
  const char* name;
  int64_t rows, cols;
};

void bench_matvec(DType type, const Shape& s, int n_tokens, double copy_gbs) {
  const size_t rb = row_bytes(type, s.cols), bytes = rb * size_t(s.rows);
  const int copies = int(std::max<size_t>(2, (kRotationBytes + bytes - 1) / bytes));
  std::vector<void*> weights(static_cast<size_t>(copies), nullptr);
  for (int i = 0; i < copies; ++i) {
    STRATA_CUDA_CHECK(cudaMalloc(&weights[size_t(i)], bytes));
    fill(weights[size_t(i)], bytes, uint32_t(i + 1));
  }
  float *x, *y, *xd;
  int8_t* xq;
  STRATA_CUDA_CHECK(cudaMalloc(&x, size_t(n_tokens) * s.cols * 4));
  STRATA_CUDA_CHECK(cudaMalloc(&y, size_t(n_tokens) * s.rows * 4));
  STRATA_CUDA_CHECK(cudaMalloc(&xq, size_t(n_tokens) * s.cols));
  STRATA_CUDA_CHECK(cudaMalloc(&xd, size_t(n_tokens) * s.cols / 32 * 4));
  STRATA_CUDA_CHECK(cudaMemset(x, 0, size_t(n_tokens) * s.cols * 4));
  cudaStream_t stream;
  STRATA_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const bool chunked = cu::is_chunked(type);
  const int reps = copies * std::max(1, 200 / copies);
  auto step = [&](int i) {
    WeightView w{type, static_cast<const uint8_t*>(weights[size_t(i % copies)]), s.cols, s.rows, rb};
    if (chunked) cu::quantize_q8(x, s.cols, n_tokens, s.cols, xq, xd, stream);
    cu::matvec(w, xq, xd, x, s.cols, n_tokens, y, s.rows, stream);
  };
  // The forward pass's decode will be a graph too: capture, replay, time the replays.
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  STRATA_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  for (int i = 0; i < reps; ++i) step(i);
  STRATA_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  STRATA_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  STRATA_CUDA_CHECK(cudaGraphLaunch(exec, stream));  // warm-up
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  cudaEventRecord(e0, stream);
  constexpr int kLaunches = 5;
  for (int i = 0; i < kLaunches; ++i) STRATA_CUDA_CHECK(cudaGraphLaunch(exec, stream));
  cudaEventRecord(e1, stream);
  STRATA_CUDA_CHECK(cudaEventSynchronize(e1));
  float ms = 0;
  cudaEventElapsedTime(&ms, e0, e1);
  const double us = ms * 1e3 / (kLaunches * reps);
  const double gbs = double(bytes) / (us * 1e-6) / 1e9;
  std::printf(
      "matvec %-5s %-9s %6lldx%-6lld tokens %d warps/row %d: %8.1f us  %7.0f GB/s  %5.1f%% of copy bw  %5.1f%% of %.0f "
      "GB/s\n",
      type_name(type), s.name, (long long)s.rows, (long long)s.cols, n_tokens, g_warps, us, gbs, 100.0 * gbs / copy_gbs,
      100.0 * gbs / kNominalGBs, kNominalGBs);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
  for (void* p : weights) cudaFree(p);
  cudaFree(x);
  cudaFree(y);
  cudaFree(xq);
  cudaFree(xd);
}

double seconds_of(backend::Backend& b, int reps, const std::function<void()>& fn) {
  fn();
  b.synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) fn();
  b.synchronize();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
}

void bench_prompt(backend::Backend& b, DType type, const Shape& s, int n_tokens) {
  const size_t rb = row_bytes(type, s.cols), bytes = rb * size_t(s.rows);
  void* w = b.alloc(bytes);
  fill(w, bytes, 7);
  float* x = static_cast<float*>(b.alloc(size_t(n_tokens) * s.cols * 4));
  float* y = static_cast<float*>(b.alloc(size_t(n_tokens) * s.rows * 4));
  STRATA_CUDA_CHECK(cudaMemset(x, 0, size_t(n_tokens) * s.cols * 4));
  const WeightView wv{type, static_cast<const uint8_t*>(w), s.cols, s.rows, rb};
  const double sec = seconds_of(b, 20, [&] { b.matmul(wv, x, s.cols, n_tokens, y, s.rows); });
  std::printf("matmul %-5s %-9s %6lldx%-6lld tokens %d: %8.1f us  %6.1f TFLOP/s (dequantize to f16 + cuBLAS)\n",
              type_name(type), s.name, (long long)s.rows, (long long)s.cols, n_tokens, sec * 1e6,
              2.0 * s.rows * s.cols * n_tokens / sec / 1e12);
  b.free(w);
  b.free(x);
  b.free(y);
}

void bench_attention(backend::Backend& b, int n_ctx, int n_tokens) {
  constexpr int kHead = 32, kHeadKv = 8, kDim = 128;
  const int64_t kv_width = kHeadKv * kDim, q_width = kHead * kDim;
  auto* k = static_cast<uint16_t*>(b.alloc(size_t(n_ctx) * kv_width * 2));
  auto* v = static_cast<uint16_t*>(b.alloc(size_t(n_ctx) * kv_width * 2));
  auto* q = static_cast<float*>(b.alloc(size_t(n_tokens) * q_width * 4));
  auto* out = static_cast<float*>(b.alloc(size_t(n_tokens) * q_width * 4));
  STRATA_CUDA_CHECK(cudaMemset(k, 0, size_t(n_ctx) * kv_width * 2));
  STRATA_CUDA_CHECK(cudaMemset(v, 0, size_t(n_ctx) * kv_width * 2));
  STRATA_CUDA_CHECK(cudaMemset(q, 0, size_t(n_tokens) * q_width * 4));
  const ops::KvLayerView kv_k{reinterpret_cast<uint8_t*>(k), DType::F16, size_t(kv_width) * 2, kDim * 2, n_ctx};
  const ops::KvLayerView kv_v{reinterpret_cast<uint8_t*>(v), DType::F16, size_t(kv_width) * 2, kDim * 2, n_ctx};
  const ops::AttentionShape shape{kHead, kHeadKv, kDim, kDim, 0.088f, 0};
  const double sec = seconds_of(b, 20, [&] { b.attention(shape, q, n_tokens, n_ctx - n_tokens, kv_k, kv_v, out); });
  const double kv_bytes = 2.0 * n_ctx * kv_width * 2;
  std::printf("attention 32/8 heads x 128, context %5d, tokens %3d: %8.1f us  (KV %.0f MB: %.0f GB/s)\n", n_ctx,
              n_tokens, sec * 1e6, kv_bytes / 1e6, kv_bytes / sec / 1e9);
  b.free(k);
  b.free(v);
  b.free(q);
  b.free(out);
}

// A whole decode token and a whole prompt of a llama-shaped model through the backend's ops (the
// forward pass's sequence: embed, per layer norm, q/k/v, rope, store_kv, attention, o, residual, norm,
// gate/up, activation, down, residual; final norm and output head) on random weights: what the
// forward pass will cost on this GPU once it runs on the backend, before any fusion.
struct ModelShape {
  const char* name;
  int n_layer, n_embd, n_head, n_head_kv, head_dim, n_ff, n_vocab;
  DType attn, ffn_up, ffn_down, output;
};

void bench_model(backend::Backend& b, const ModelShape& m) {
  std::vector<void*> owned;
  size_t weight_bytes = 0;
  auto matrix = [&](DType type, int64_t rows, int64_t cols) {
    const size_t rb = row_bytes(type, cols), bytes = rb * size_t(rows);
    void* p = b.alloc(bytes);
    fill(p, bytes, uint32_t(owned.size() + 3));
    owned.push_back(p);
    weight_bytes += bytes;
    return WeightView{type, static_cast<const uint8_t*>(p), cols, rows, rb};
  };
  auto floats = [&](size_t n) {
    void* p = b.alloc(n * 4);
    STRATA_CUDA_CHECK(cudaMemset(p, 0, n * 4));
    owned.push_back(p);
    return static_cast<float*>(p);
  };
  const int64_t q_dim = int64_t(m.n_head) * m.head_dim, kv_dim = int64_t(m.n_head_kv) * m.head_dim;
  struct Layer {
    WeightView wq, wk, wv, wo, gate, up, down;
    float* norm1;
    float* norm2;
    uint16_t *k_cache, *v_cache;
  };
  constexpr int kCtx = 1024, kPrompt = 512, kGen = 128;
  std::vector<Layer> layers(size_t(m.n_layer));
  for (Layer& l : layers) {
    l.wq = matrix(m.attn, q_dim, m.n_embd);
    l.wk = matrix(m.attn, kv_dim, m.n_embd);
    l.wv = matrix(m.attn, kv_dim, m.n_embd);
    l.wo = matrix(m.attn, m.n_embd, q_dim);
    l.gate = matrix(m.ffn_up, m.n_ff, m.n_embd);
    l.up = matrix(m.ffn_up, m.n_ff, m.n_embd);
    l.down = matrix(m.ffn_down, m.n_embd, m.n_ff);
    l.norm1 = floats(size_t(m.n_embd));
    l.norm2 = floats(size_t(m.n_embd));
    l.k_cache = reinterpret_cast<uint16_t*>(floats(size_t(kCtx) * kv_dim / 2));
    l.v_cache = reinterpret_cast<uint16_t*>(floats(size_t(kCtx) * kv_dim / 2));
  }
  const size_t per_token_bytes = weight_bytes;  // every layer matrix once per token
  const WeightView output = matrix(m.output, m.n_vocab, m.n_embd);
  const WeightView embd = matrix(m.output, m.n_vocab, m.n_embd);  // tied or alike
  const size_t token_bytes = per_token_bytes + output.row_bytes * size_t(output.n_rows) + embd.row_bytes;
  float* norm_out = floats(size_t(m.n_embd));
  float *x = floats(size_t(kPrompt) * m.n_embd), *h = floats(size_t(kPrompt) * m.n_embd);
  float *o = floats(size_t(kPrompt) * m.n_embd), *q = floats(size_t(kPrompt) * q_dim);
  float *k = floats(size_t(kPrompt) * kv_dim), *v = floats(size_t(kPrompt) * kv_dim);
  float* att = floats(size_t(kPrompt) * q_dim);
  float *gate = floats(size_t(kPrompt) * m.n_ff), *up = floats(size_t(kPrompt) * m.n_ff);
  float* logits = floats(size_t(m.n_vocab));
  auto* ids = static_cast<int32_t*>(b.alloc(size_t(kPrompt) * 4));
  STRATA_CUDA_CHECK(cudaMemset(ids, 0, size_t(kPrompt) * 4));
  owned.push_back(ids);

  // One layer's ops in the forward pass's order, each a labelled call (the decode profile below
  // times each label over all layers).
  struct Op {
    const char* label;
    std::function<void(Layer&, int, int64_t)> run;
  };
  ops::RopeParams rope;
  rope.n_rot = m.head_dim;
  rope.freq_base = 500000.0f;
  const ops::AttentionShape shape{m.n_head, m.n_head_kv, m.head_dim, m.head_dim, 1.0f / std::sqrt(float(m.head_dim)),
                                  0};
  auto kv_view = [&](uint16_t* cache) {
    return ops::KvLayerView{reinterpret_cast<uint8_t*>(cache), DType::F16, size_t(kv_dim) * 2, size_t(m.head_dim) * 2,
                            kCtx};
  };
  const std::vector<Op> layer_ops = {
      {"rms_norm (attn)", [&](Layer& l, int n, int64_t) { b.rms_norm(x, l.norm1, h, m.n_embd, n, 1e-5f); }},
      {"matmul wq", [&](Layer& l, int n, int64_t) { b.matmul(l.wq, h, m.n_embd, n, q, q_dim); }},
      {"matmul wk", [&](Layer& l, int n, int64_t) { b.matmul(l.wk, h, m.n_embd, n, k, kv_dim); }},
      {"matmul wv", [&](Layer& l, int n, int64_t) { b.matmul(l.wv, h, m.n_embd, n, v, kv_dim); }},
      {"rope q", [&](Layer&, int n, int64_t pos) { b.rope(q, q_dim, n, m.n_head, m.head_dim, pos, rope); }},
      {"rope k", [&](Layer&, int n, int64_t pos) { b.rope(k, kv_dim, n, m.n_head_kv, m.head_dim, pos, rope); }},
      {"store_kv",
       [&](Layer& l, int n, int64_t pos) {
         b.store_kv(kv_view(l.k_cache), kv_view(l.v_cache), k, v, n, pos, m.n_head_kv, m.head_dim, m.head_dim);
       }},
      {"attention",
       [&](Layer& l, int n, int64_t pos) { b.attention(shape, q, n, pos, kv_view(l.k_cache), kv_view(l.v_cache), att); }},
      {"matmul wo", [&](Layer& l, int n, int64_t) { b.matmul(l.wo, att, q_dim, n, o, m.n_embd); }},
      {"add (attn)", [&](Layer&, int n, int64_t) { b.add(x, o, int64_t(n) * m.n_embd); }},
      {"rms_norm (ffn)", [&](Layer& l, int n, int64_t) { b.rms_norm(x, l.norm2, h, m.n_embd, n, 1e-5f); }},
      {"gate, up, silu",  // as blocks::ffn with both matrices resident
       [&](Layer& l, int n, int64_t) {
         b.ffn_gate_up(l.gate, l.up, h, n, gate, up, backend::GatedActivation::silu);
       }},
      {"matmul down", [&](Layer& l, int n, int64_t) { b.matmul(l.down, gate, m.n_ff, n, o, m.n_embd); }},
      {"add (ffn)", [&](Layer&, int n, int64_t) { b.add(x, o, int64_t(n) * m.n_embd); }},
  };
  auto head = [&](int n) {
    b.rms_norm(x + size_t(n - 1) * m.n_embd, layers[0].norm1, norm_out, m.n_embd, 1, 1e-5f);
    b.matmul(output, norm_out, m.n_embd, 1, logits, m.n_vocab);
  };
  auto forward = [&](int n, int64_t pos0) {
    b.get_rows(embd, ids, n, x, m.n_embd);
    for (Layer& l : layers)
      for (const Op& op : layer_ops) op.run(l, n, pos0);
    head(n);
  };
  forward(kPrompt, 0);  // warm-up: scratch at its largest
  forward(1, kPrompt);
  const double pp = seconds_of(b, 3, [&] { forward(kPrompt, 0); });
  b.synchronize();
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kGen; ++i) forward(1, kPrompt + i);
  b.synchronize();
  const double tg_direct = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / kGen;
  t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kGen; ++i) {
    b.begin_graph();
    forward(1, kPrompt + i);
    b.end_graph();
  }
  b.synchronize();
  const double tg_graph = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / kGen;
  // As the engine decodes: one step recorded for its position, replayed at each later one.
  b.begin_position_graph(kPrompt);
  forward(1, kPrompt);
  b.end_graph();
  b.synchronize();
  t0 = std::chrono::steady_clock::now();
  int replayed = 0;
  for (int i = 1; i <= kGen; ++i) replayed += b.replay_graph(kPrompt + i);
  b.synchronize();
  const double tg_replay = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / kGen;
  std::printf(
      "model %-22s weights %.2f GB/token: pp%d %8.0f tok/s | tg%d (context %d..) direct %6.1f tok/s, "
      "graph %6.1f tok/s, replayed %6.1f tok/s (%d of %d) = %.0f GB/s, %.1f%% of %.0f GB/s\n",
      m.name, token_bytes / 1e9, kPrompt, kPrompt / pp, kGen, kPrompt, 1.0 / tg_direct, 1.0 / tg_graph,
      1.0 / tg_replay, replayed, kGen, token_bytes / tg_replay / 1e9, 100.0 * token_bytes / tg_replay / 1e9 / kNominalGBs,
      kNominalGBs);
  // Where a decode step's time goes: each op of the layer run for every layer (each its own
  // weights and cache, as in a step) recorded as one replayed graph, per step.
  constexpr int kProfileReps = 20;
  double sum_us = 0.0;
  auto profile = [&](const char* label, const std::function<void()>& fn, int launches_per_step) {
    b.begin_position_graph(kPrompt);
    fn();
    b.end_graph();
    b.synchronize();
    const auto p0 = std::chrono::steady_clock::now();
    for (int r = 0; r < kProfileReps; ++r) b.replay_graph(kPrompt);
    b.synchronize();
    const double us =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - p0).count() / kProfileReps * 1e6;
    sum_us += us;
    std::printf("  decode op %-16s %8.1f us a step (%d calls, %.2f us each)\n", label, us, launches_per_step,
                us / launches_per_step);
  };
  for (const Op& op : layer_ops)
    profile(op.label, [&] { for (Layer& l : layers) op.run(l, 1, kPrompt); }, m.n_layer);
  profile("embed + head", [&] {
    b.get_rows(embd, ids, 1, x, m.n_embd);
    head(1);
  }, 1);
  std::printf("  decode ops summed: %.1f us a step (the replayed step: %.1f us)\n", sum_us, tg_replay * 1e6);
  for (int w : {1, 2, 4}) {  // the replayed step with each matvec layout
    set_warps(w);
    b.begin_position_graph(kPrompt);
    forward(1, kPrompt);
    b.end_graph();
    b.synchronize();
    t0 = std::chrono::steady_clock::now();
    for (int i = 1; i <= kGen; ++i) b.replay_graph(kPrompt + i);
    b.synchronize();
    const double tg = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / kGen;
    std::printf("  replayed step, one-token matvec %d warps/row: %.1f us = %.1f tok/s, %.1f%% of %.0f GB/s\n", w,
                tg * 1e6, 1.0 / tg, 100.0 * token_bytes / tg / 1e9 / kNominalGBs, kNominalGBs);
  }
  set_warps(0);
  for (void* p : owned) b.free(p);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (backend::cuda_device_count() == 0) {
      std::fprintf(stderr, "cuda_ops_bench: no CUDA device\n");
      return 1;
    }
    auto b = backend::make_cuda_backend(0);
    std::printf("%s\n", b->name().c_str());
    const double copy_gbs = copy_bandwidth_gbs();
    std::printf("device-to-device copy: %.0f GB/s (read + written)\n", copy_gbs);
    // Sections: all (default), or any of matvec (matvec-main: fewer types), prompt, attention, model as arguments.
    auto wants = [&](const char* section) {
      if (argc < 2) return true;
      for (int i = 1; i < argc; ++i)
        if (std::string(argv[i]) == section) return true;
      return false;
    };
    const std::vector<DType> types = {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::Q2_K,
                                      DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::F16,  DType::BF16};
    const Shape shapes[] = {{"attn_q", 4096, 4096}, {"ffn_up", 14336, 4096}, {"ffn_down", 4096, 14336}};
    if (wants("model")) {
      bench_model(*b, {"SmolLM2-135M Q4_1", 30, 576, 9, 3, 64, 1536, 49152, DType::Q4_1, DType::Q4_1, DType::Q4_1,
                       DType::Q8_0});
      bench_model(*b, {"llama-3-8B Q4_K (~M)", 32, 4096, 32, 8, 128, 14336, 128256, DType::Q4_K, DType::Q4_K,
                       DType::Q6_K, DType::Q6_K});
    }
    if (wants("matvec") || wants("matvec-main")) {  // matvec-main: the types the benchmarked models use
      const std::vector<DType> main_types = {DType::Q4_0, DType::Q4_1, DType::Q8_0,
                                             DType::Q4_K, DType::Q5_K, DType::Q6_K};
      for (DType t : wants("matvec") ? types : main_types)
        for (const Shape& s : shapes)
          for (int w : {1, 2, 4}) {
            set_warps(w);
            bench_matvec(t, s, 1, copy_gbs);
          }
      set_warps(0);
      for (DType t : {DType::Q4_0, DType::Q4_K, DType::Q6_K})
        for (int n : {2, 4, 8}) bench_matvec(t, shapes[1], n, copy_gbs);
    }
    if (wants("prompt"))
      for (DType t : {DType::Q4_0, DType::Q4_K, DType::Q6_K, DType::F16}) bench_prompt(*b, t, shapes[1], 512);
    if (wants("attention")) {
      for (int ctx : {512, 4096, 16384}) bench_attention(*b, ctx, 1);
      bench_attention(*b, 512, 512);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cuda_ops_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
