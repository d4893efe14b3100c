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

Session::Session(const Model& model, const SessionParams& params)
    : model_(model), params_(resolve(model, params)), pool_(params_.n_threads) {
  kv_.init(model.config(), params_.n_ctx, params_.kv_type, params_.n_batch);
  buf_.init(model.config(), params_.n_batch, params_.n_ctx, params_.n_threads);
}

void Session::forward_batch(const int32_t* tokens, int n, bool all_logits) {
  if (n_past() + n > params_.n_ctx)
    throw Error("context is full: " + std::to_string(n_past()) + " + " + std::to_string(n) + " tokens exceed n_ctx " +
                std::to_string(params_.n_ctx));
  ForwardPass pass{model_.config(), model_.weights(), buf_, kv_, pool_, tokens, n, int64_t(n_past()), all_logits,
                   ffn_source_, expert_source_};
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
                     ffn_source_, expert_source_};
    pass.hidden_only = true;  // output_head leaves every token's normalized hidden state in buf_.h
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
