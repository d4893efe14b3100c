#include "runtime/session.h"

#include <algorithm>
#include <cstring>

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

 private:
  ResidentWeights resident_;
  bool ffn_streams_ = false, experts_stream_ = false;
};

Session::Session(const Model& model, const SessionParams& params)
    : model_(model), params_(resolve(model, params)), pool_(params_.n_threads), weights_(new Weights(model)) {
  kv_.init(model.config(), params_.n_ctx, params_.kv_type, params_.n_batch);
  buf_.init(model.config(), params_.n_batch, params_.n_ctx, params_.n_threads);
}

Session::~Session() = default;

void Session::set_ffn_source(FfnSource* source) { weights_->ffn = source; }
void Session::set_expert_source(ExpertSource* source) { weights_->experts = source; }

void Session::set_routing_observer(RoutingObserver* observer, ForwardHook* guesses) {
  routing_observer_ = observer;
  weights_->guesses = guesses;
}

void Session::forward_batch(const int32_t* tokens, int n, bool all_logits) {
  if (n_past() + n > params_.n_ctx)
    throw Error("context is full: " + std::to_string(n_past()) + " + " + std::to_string(n) + " tokens exceed n_ctx " +
                std::to_string(params_.n_ctx));
  ForwardPass pass{model_.config(), model_.weights(), buf_,       kv_, pool_, tokens, n, int64_t(n_past()), all_logits,
                   *weights_,       weights_->hook()};
  pass.routing_observer = routing_observer_;
  model_.forward(pass);
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
    if (n_past() + n > params_.n_ctx)
      throw Error("context is full: " + std::to_string(n_past()) + " + " + std::to_string(n) +
                  " tokens exceed n_ctx " + std::to_string(params_.n_ctx));
    ForwardPass pass{model_.config(), model_.weights(), buf_, kv_, pool_, tokens.data() + i, n, int64_t(n_past()), true,
                     *weights_,       weights_->hook()};
    pass.hidden_only = true;  // output_head leaves every token's normalized hidden state in buf_.h
    pass.routing_observer = routing_observer_;
    model_.forward(pass);
    history_.insert(history_.end(), tokens.data() + i, tokens.data() + i + n);
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
  history_.resize(kv_.can_keep(n) ? size_t(n) : 0);  // cache rows past n are simply overwritten later
}

}  // namespace strata
