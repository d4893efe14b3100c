#include "runtime/session.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>

#include "model/device_model.h"
#include "util/error.h"

namespace strata {

namespace {
SessionParams resolve(const Model& model, SessionParams p) {
  if (p.n_ctx <= 0 || p.n_ctx > model.config().n_ctx_train) p.n_ctx = model.config().n_ctx_train;
  if (p.n_batch <= 0) p.n_batch = 512;
  p.n_batch = std::min(p.n_batch, p.n_ctx);
  if (p.n_threads <= 0) p.n_threads = ThreadPool::physical_cores();
  return p;
}
}  // namespace

// The one WeightSource of a session's forward passes: each matrix and each MoE layer's experts
// from the streamer that serves them, everything else resident. The only place that knows which
// is which; compute asks without knowing.
class Session::Weights : public WeightSource {
 public:
  explicit Weights(const Model& model) : resident_(model.config(), model.weights()) {}
  FfnSource* ffn = nullptr;
  ExpertSource* experts = nullptr;
  ForwardHook* guesses = nullptr;  // used where the expert source makes no guesses
  ForwardHook* hook() const {
    ForwardHook* own = experts ? experts->hook() : nullptr;
    return own ? own : guesses;
  }

  void begin_matrix(int layer, FfnPart part) override {
    ffn_streams_ = ffn && ffn->streams(layer, part);
    if (ffn_streams_) ffn->begin(layer, part);
    else resident_.begin_matrix(layer, part);
  }
  bool next_piece(WeightView& piece, int64_t& row0) override {
    return ffn_streams_ ? ffn->next(piece, row0) : resident_.next_piece(piece, row0);
  }
  void begin_experts(int layer, const int32_t* list, int n, const int32_t* chosen, int n_tokens) override {
    experts_stream_ = experts && experts->streams(layer);
    if (experts_stream_) experts->begin_layer(layer, list, n, chosen, n_tokens);
    else resident_.begin_experts(layer, list, n, chosen, n_tokens);
  }
  int next_expert(WeightView& gate, WeightView& up, WeightView& down) override {
    return experts_stream_ ? experts->next_ready(gate, up, down) : resident_.next_expert(gate, up, down);
  }
  void expert_done(int expert) override {
    if (experts_stream_) experts->done(expert);
    else resident_.expert_done(expert);
  }
  bool experts_resident(int layer) const override { return !(experts && experts->streams(layer)); }
  bool ffn_resident(int layer, FfnPart part) const override { return !(ffn && ffn->streams(layer, part)); }

 private:
  ResidentWeights resident_;
  bool ffn_streams_ = false, experts_stream_ = false;
};

// One copy of a model's weights on the GPU, shared by every session of that model in the process:
// a server that opens a session for another context, or a caller that holds two sessions, never
// uploads the weights twice. The copy keeps the backend it was allocated through (the first
// session's: sessions end in any order) and is freed with the last session that uses it.
struct SharedDeviceWeights {
  SharedDeviceWeights(const Model& model, bool routed_experts, std::shared_ptr<backend::Backend> owner)
      : device(std::move(owner)), weights(model.weights(), *device, routed_experts) {}
  std::shared_ptr<backend::Backend> device;
  DeviceWeights weights;
};

namespace {

constexpr size_t kReserve = size_t(512) << 20;  // CUDA context, cuBLAS workspace, graphs

// Rows of logits one evaluation keeps at most: eval_each shortens its batches to 64 MiB of them.
int logits_rows(const ModelConfig& c, int n_batch) {
  const size_t cap = std::max<size_t>(1, (size_t(64) << 20) / (size_t(c.n_vocab) * sizeof(float)));
  return int(std::min(cap, size_t(n_batch)));
}

// What a GPU session allocates there besides its weights: KV cache, activations, and the prompt
// path's scratch (the largest matrix dequantized to f16, the batch's activations converted).
size_t gpu_session_bytes(const Model& model, const SessionParams& p) {
  const ModelConfig& c = model.config();
  size_t largest = 0;
  auto see = [&](const WeightView& w) { largest = std::max(largest, size_t(w.n_rows) * size_t(w.n_cols)); };
  see(model.weights().output);
  for (const LayerWeights& L : model.weights().layers)
    for (const WeightView* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down, &L.w_gate_shexp,
                                &L.w_up_shexp, &L.w_down_shexp})
      see(*w);
  if (c.n_expert > 0) largest = std::max(largest, size_t(c.n_ff_expert) * size_t(c.n_embd));  // one expert
  const size_t widest = size_t(std::max({c.n_embd, c.n_head * c.head_dim_v, c.max_ff()}));
  // The prompt path's expert scratch: per routed slot its index, gathered input and output rows
  // [n_embd], gate and up rows [n_ff_expert].
  const size_t slots = size_t(p.n_batch) * size_t(std::max(c.n_expert_used, 0));
  const size_t moe = c.n_expert > 0 ? slots * (4 + 8 * size_t(c.n_embd) + 8 * size_t(c.n_ff_expert)) + 4096 : 0;
  return KvCache::bytes_for(c, p.n_ctx, p.kv_type, p.n_batch) +
         DeviceBuffers::bytes_for(c, p.n_batch, logits_rows(c, p.n_batch)) + largest * 2 +
         size_t(p.n_batch) * widest * 2 + moe;
}

std::mutex shared_weights_mutex;
// Keyed by the model and whether its routed experts are uploaded (a --gpu-mem session's are not).
std::map<std::pair<const Model*, bool>, std::weak_ptr<SharedDeviceWeights>> shared_weights;  // under the mutex

// The live copy of this model's weights, if a session holds one.
std::shared_ptr<SharedDeviceWeights> live_device_weights(const Model& model, bool routed_experts) {
  std::lock_guard<std::mutex> lock(shared_weights_mutex);
  const auto it = shared_weights.find({&model, routed_experts});
  return it == shared_weights.end() ? nullptr : it->second.lock();
}

std::shared_ptr<SharedDeviceWeights> device_weights_for(const Model& model, bool routed_experts,
                                                       const std::shared_ptr<backend::Backend>& device) {
  std::lock_guard<std::mutex> lock(shared_weights_mutex);
  for (auto it = shared_weights.begin(); it != shared_weights.end();)  // forget models whose copy went
    it = it->second.expired() ? shared_weights.erase(it) : std::next(it);
  std::weak_ptr<SharedDeviceWeights>& slot = shared_weights[{&model, routed_experts}];
  if (auto live = slot.lock()) return live;
  auto fresh = std::make_shared<SharedDeviceWeights>(model, routed_experts, device);
  slot = fresh;
  return fresh;
}

}  // namespace

std::string gpu_unsupported(const Model& model, const SessionParams& params) {
  const SessionParams p = resolve(model, params);
  const ModelConfig& c = model.config();
  if (!backend::cuda_built()) return "this build has no CUDA backend (configure with -DSTRATA_CUDA=ON)";
  if (backend::cuda_device_count() == 0) return "no CUDA device on this machine";
  if (c.has_recurrent_layers()) return "the gated delta-rule (linear attention) layers of " + c.arch_name + " have no CUDA path yet";
  // Measured on the H100 against the CPU (tests/model/gpu_coverage_forward_test.cpp): gpt-oss, and a
  // q4_0 cache or a quantized cache with sliding-window layers, differ at the model's level; kept on
  // the CPU until fixed.
  if (c.arch == Arch::gptoss)
    return "gpt-oss on the GPU does not match the CPU yet (its logits differ on the device); it runs on the CPU";
  if (!ops::is_kv_type(p.kv_type)) return std::string("the CUDA backend has no KV cache of ") + type_name(p.kv_type);
  if (p.kv_type == DType::Q4_0 || (p.kv_type != DType::F16 && c.sliding_window > 0))
    return std::string("a ") + type_name(p.kv_type) + " KV cache" +
           (p.kv_type == DType::Q4_0 ? "" : " with sliding-window layers") +
           " does not match the CPU on the GPU yet (f16 does; q8_0 without sliding windows does)";
  const ModelWeights& w = model.weights();
  std::vector<const WeightView*> views = {&w.token_embd, &w.output};
  for (const LayerWeights& L : w.layers)
    for (const WeightView* v : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down, &L.router, &L.gate_exps,
                                &L.up_exps, &L.down_exps, &L.shexp_gate_inp, &L.w_gate_shexp, &L.w_up_shexp,
                                &L.w_down_shexp})
      views.push_back(v);
  for (const WeightView* v : views)
    if (!v->empty() && !backend::cuda_supports(v->type))
      return std::string("tensor type ") + type_name(v->type) + " has no CUDA kernels";
  size_t free_bytes = 0, total_bytes = 0;
  if (!backend::cuda_memory(0, free_bytes, total_bytes)) return "cannot read the GPU's free memory";
  // Weights another session already holds there are shared, not uploaded again.
  const size_t weights_bytes =
      live_device_weights(model, p.routed_experts_on_gpu) ? 0 : DeviceWeights::bytes_for(w, p.routed_experts_on_gpu);
  const size_t need = weights_bytes + gpu_session_bytes(model, p);
  if (need + kReserve > free_bytes)
    return "the model needs " + std::to_string(need >> 20) + " MiB of GPU memory, " + std::to_string(free_bytes >> 20) +
           " MiB are free";
  return "";
}

size_t gpu_session_vram_bytes(const Model& model, const SessionParams& params) {
  const SessionParams p = resolve(model, params);
  return DeviceWeights::bytes_for(model.weights(), p.routed_experts_on_gpu) + gpu_session_bytes(model, p);
}

std::optional<DType> gpu_kv_type(const Model& model, SessionParams params) {
  for (const DType type : {DType::F16, DType::Q8_0, DType::Q4_0}) {
    params.kv_type = type;
    if (gpu_unsupported(model, params).empty()) return type;
  }
  return std::nullopt;
}

// A session's model on the GPU: the weights (shared with the model's other sessions), activations
// of one batch, and whether a decode step already ran outside a graph (its scratch at full size,
// so later steps may be captured).
struct Session::Gpu {
  Gpu(const Model& model, int n_batch, bool routed_experts, const std::shared_ptr<backend::Backend>& device)
      : shared(device_weights_for(model, routed_experts, device)),
        weights(shared->weights),
        buffers(model.config(), n_batch, logits_rows(model.config(), n_batch), *device) {}
  std::shared_ptr<SharedDeviceWeights> shared;
  const DeviceWeights& weights;
  DeviceBuffers buffers;
  bool decode_warm = false;
  bool replay_ok = false;  // the backend's last recording is a whole replayable decode step
};

Session::Session(const Model& model, const SessionParams& params)
    : model_(model), params_(resolve(model, params)), pool_(params_.n_threads), weights_(new Weights(model)) {
  buf_.init(model.config(), params_.n_batch, params_.n_ctx, params_.n_threads);
  bool gpu = params_.device == Device::gpu;
  if (params_.device != Device::cpu) {
    const std::string why = gpu_unsupported(model, params_);
    if (gpu && !why.empty()) throw Error("--gpu: " + why);
    gpu = why.empty();
  }
  if (gpu) {
    backend_ = backend::make_cuda_backend(0);
    gpu_ = std::make_unique<Gpu>(model, params_.n_batch, params_.routed_experts_on_gpu, backend_);
    kv_.init(model.config(), params_.n_ctx, params_.kv_type, params_.n_batch, backend_.get());
  } else {
    backend_ = backend::make_cpu_backend(pool_, &buf_.mm, &buf_.attn);
    kv_.init(model.config(), params_.n_ctx, params_.kv_type, params_.n_batch);
  }
}

Session::~Session() {
  gpu_.reset();  // device memory goes back before its backend
  kv_ = KvCache{};
}

std::string Session::device_name() const { return backend_->name(); }

size_t Session::vram_reserved_bytes() const {
  if (!gpu_) return 0;
  const ModelConfig& c = model_.config();
  return gpu_session_bytes(model_, params_) -
         KvCache::bytes_for(c, params_.n_ctx, params_.kv_type, params_.n_batch) -
         DeviceBuffers::bytes_for(c, params_.n_batch, logits_rows(c, params_.n_batch));
}

size_t Session::vram_bytes() const {
  return gpu_ ? gpu_->weights.bytes() + gpu_->buffers.bytes() + kv_.device_bytes() : 0;
}

void Session::set_ffn_source(FfnSource* source) {
  if (gpu_ && source)
    for (int l = 0; l < model_.config().n_layer; ++l)
      for (int part = 0; part < kNumFfnParts; ++part)
        if (source->streams(l, FfnPart(part)))
          throw Error("layer " + std::to_string(l) +
                      " streams its FFN from the SSD, which a GPU session cannot do yet (use --cpu)");
  weights_->ffn = source;
}

void Session::set_expert_source(ExpertSource* source) {
  if (gpu_ && source)
    for (int l = 0; l < model_.config().n_layer; ++l)
      if (source->streams(l))
        throw Error("layer " + std::to_string(l) +
                    " streams its experts from the SSD, which a GPU session cannot do yet (use --cpu)");
  weights_->experts = source;
}

void Session::set_routing_observer(RoutingObserver* observer, ForwardHook* guesses) {
  routing_observer_ = observer;
  weights_->guesses = guesses;
}

void Session::forward_batch(const int32_t* tokens, int n, bool all_logits, bool hidden_only) {
  if (n_past() + n > params_.n_ctx)
    throw Error("context is full: " + std::to_string(n_past()) + " + " + std::to_string(n) + " tokens exceed n_ctx " +
                std::to_string(params_.n_ctx));
  ForwardPass pass{model_.config(), model_.weights(), buf_,       kv_, pool_, tokens, n, int64_t(n_past()), all_logits,
                   *weights_,       weights_->hook()};
  pass.hidden_only = hidden_only;
  pass.routing_observer = routing_observer_;
  pass.backend = backend_.get();
  pass.expert_compute = expert_compute_;
  if (!gpu_) {
    pass.act = buf_.activations();
    model_.forward(pass);
  } else {
    // The activations cross to the host only here: token ids in, logits (or hidden states) out.
    pass.act = gpu_->buffers.activations();
    pass.device = &gpu_->weights;
    backend_->upload(gpu_->buffers.tokens(), tokens, size_t(n) * sizeof(int32_t));
    const bool decode = n == 1 && !all_logits && !hidden_only;
    // One launch per token once its scratch is sized; an expert tier syncs with the host per layer.
    // A routing observer reads each layer's routing on the host, and a hook (guesses, a routing
    // override) reads or rewrites it there, which a graph cannot wait for.
    const bool graph =
        decode && gpu_->decode_warm && !expert_compute_ && !routing_observer_ && !weights_->hook();
    // Decode steps differ only in their position: the step recorded once is replayed (no op issued
    // again); the host's own part of a step is the KV bookkeeping. MoE layers whose experts are all
    // resident route on the device (the expert ids never leave it), so they replay too; experts
    // handed out by a source on the host record every step.
    const ModelConfig& cfg = model_.config();
    const bool replayable = graph && !weights_->ffn && !weights_->experts;
    if (replayable && gpu_->replay_ok && tokens[0] >= 0 && tokens[0] < cfg.n_vocab &&
        backend_->replay_graph(n_past())) {
      for (int layer = 0; layer < cfg.n_layer; ++layer) kv_.written(layer, n_past(), 1);
      backend_->download(buf_.logits.data(), pass.act.logits, size_t(cfg.n_vocab) * sizeof(float));
      history_.push_back(tokens[0]);
      return;
    }
    if (replayable)
      backend_->begin_position_graph(n_past());
    else if (graph)
      backend_->begin_graph();
    try {
      model_.forward(pass);
    } catch (...) {
      gpu_->replay_ok = false;  // a step cut short is no recording to replay
      if (graph) try {
          backend_->end_graph();
        } catch (...) {
        }
      throw;
    }
    if (graph) backend_->end_graph();
    if (graph) gpu_->replay_ok = replayable;  // a whole step recorded for replay (or none)
    gpu_->decode_warm |= decode;
    const ModelConfig& c = model_.config();
    if (hidden_only) {
      backend_->download(buf_.h.data(), pass.act.h, size_t(n) * size_t(c.n_embd) * sizeof(float));
    } else {
      const size_t rows = all_logits ? size_t(n) : 1;
      if (buf_.logits.size() < rows * size_t(c.n_vocab)) buf_.logits.resize(rows * size_t(c.n_vocab));  // all-logits only
      backend_->download(buf_.logits.data(), pass.act.logits, rows * size_t(c.n_vocab) * sizeof(float));
    }
  }
  history_.insert(history_.end(), tokens, tokens + n);
}

const float* Session::eval(const std::vector<int32_t>& tokens) {
  if (tokens.empty()) throw Error("eval: no tokens");
  for (size_t i = 0; i < tokens.size(); i += size_t(params_.n_batch)) {
    const int n = int(std::min(tokens.size() - i, size_t(params_.n_batch)));
    forward_batch(tokens.data() + i, n, false);
  }
  return buf_.logits.data();
}

void Session::eval_each(const std::vector<int32_t>& tokens, const std::function<void(size_t, const float*)>& on_logits) {
  const size_t n_vocab = size_t(model_.config().n_vocab);
  const size_t cap = std::max<size_t>(1, (size_t(64) << 20) / (n_vocab * sizeof(float)));
  const size_t step = std::min(cap, size_t(params_.n_batch));
  for (size_t i = 0; i < tokens.size(); i += step) {
    const int n = int(std::min(tokens.size() - i, step));
    forward_batch(tokens.data() + i, n, true);
    for (int t = 0; t < n; ++t) on_logits(i + size_t(t), buf_.logits.data() + size_t(t) * n_vocab);
  }
}

void Session::eval_hidden(const std::vector<int32_t>& tokens,
                          const std::function<void(size_t, const float*)>& on_hidden) {
  const size_t n_embd = size_t(model_.config().n_embd);
  for (size_t i = 0; i < tokens.size(); i += size_t(params_.n_batch)) {
    const int n = int(std::min(tokens.size() - i, size_t(params_.n_batch)));
    forward_batch(tokens.data() + i, n, true, /*hidden_only=*/true);  // the normalized hidden states in buf_.h
    for (int t = 0; t < n; ++t) on_hidden(i + size_t(t), buf_.h.data() + size_t(t) * n_embd);
  }
}

std::vector<float> Session::eval_all_logits(const std::vector<int32_t>& tokens) {
  const size_t n_vocab = size_t(model_.config().n_vocab);
  std::vector<float> out(tokens.size() * n_vocab);
  eval_each(tokens, [&](size_t i, const float* logits) {
    std::memcpy(out.data() + i * n_vocab, logits, n_vocab * sizeof(float));
  });
  return out;
}

void Session::truncate(int n) {
  if (n < 0 || n > n_past()) throw Error("truncate: " + std::to_string(n) + " is outside the context");
  history_.resize(kv_.rewind(n) ? size_t(n) : 0);  // cache rows past n are simply overwritten later
}

}  // namespace strata
