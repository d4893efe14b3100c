#include "runtime/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <utility>

#include "util/error.h"

namespace strata {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Holds back text that might be the start of a stop string until it is known not to be.
class StopFilter {
 public:
  explicit StopFilter(const std::vector<std::string>& stops) : stops_(stops) {}
  // Returns text safe to emit; sets stopped when a stop string completed.
  std::string push(const std::string& text, bool& stopped) {
    pending_ += text;
    for (const auto& s : stops_) {
      if (s.empty()) continue;
      const size_t at = pending_.find(s);
      if (at != std::string::npos) {
        stopped = true;
        matched_ = s;
        std::string out = pending_.substr(0, at);
        pending_.clear();
        return out;
      }
    }
    size_t keep = 0;  // longest suffix of pending_ that is a proper prefix of a stop string
    for (const auto& s : stops_)
      for (size_t n = std::min(s.size() - (s.empty() ? 0 : 1), pending_.size()); n > keep; --n)
        if (pending_.compare(pending_.size() - n, n, s, 0, n) == 0) {
          keep = n;
          break;
        }
    std::string out = pending_.substr(0, pending_.size() - keep);
    pending_.erase(0, pending_.size() - keep);
    return out;
  }
  std::string flush() { return std::exchange(pending_, {}); }
  const std::string& matched() const { return matched_; }  // the stop string that completed

 private:
  std::string matched_;
  const std::vector<std::string>& stops_;
  std::string pending_;
};

// Log-softmax of the raw logits for the chosen token and the n_top most likely ones. top_heap is
// scratch sized once by the caller (n_top entries), so nothing is allocated per token beyond
// the result itself.
TokenLogprob token_logprob(const float* logits, int n_vocab, Token chosen, int n_top,
                           std::vector<std::pair<float, Token>>& top_heap) {
  float max = logits[0];
  for (int i = 1; i < n_vocab; ++i) max = std::max(max, logits[i]);
  double sum = 0;
  for (int i = 0; i < n_vocab; ++i) sum += std::exp(double(logits[i] - max));
  const float log_z = max + float(std::log(sum));
  TokenLogprob out;
  out.token = chosen;
  out.logprob = logits[chosen] - log_z;
  if (n_top <= 0) return out;
  // A min-heap of the n_top largest logits (ties: the lower id first, as a stable sort would).
  const auto greater = [](const std::pair<float, Token>& a, const std::pair<float, Token>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  top_heap.clear();
  for (int i = 0; i < n_vocab; ++i) {
    if (int(top_heap.size()) < n_top) {
      top_heap.emplace_back(logits[i], Token(i));
      std::push_heap(top_heap.begin(), top_heap.end(), greater);
    } else if (greater({logits[i], Token(i)}, top_heap.front())) {
      std::pop_heap(top_heap.begin(), top_heap.end(), greater);
      top_heap.back() = {logits[i], Token(i)};
      std::push_heap(top_heap.begin(), top_heap.end(), greater);
    }
  }
  std::sort_heap(top_heap.begin(), top_heap.end(), greater);
  for (const auto& [logit, id] : top_heap) out.top.emplace_back(id, logit - log_z);
  return out;
}

// Makes room in a full context for `next` (sampled, not yet evaluated), as llama.cpp's and
// Ollama's context shift: the first n_keep tokens stay, half of the tokens after them go, and
// the rest move down to follow the kept ones. The moved tokens are evaluated again rather than
// their cached keys re-rotated by the position change: re-rotation would keep keys and values
// that every layer past the first computed while attending to the dropped tokens (a state no
// run over the shifted tokens reaches), and it would need a RoPE pass per architecture (rope
// scaling, NeoX order, per-layer bases), per KV type (quantized rows dequantized and quantized
// again) and per device. Evaluation again is exact for every cache, device and sliding-window
// ring, and costs one batched evaluation of at most half the context per half a context of
// generated tokens. Returns the logits after `next`.
const float* shift_context(Session& session, Token next, int n_keep) {
  std::vector<Token> tokens = session.history();
  tokens.push_back(next);
  const size_t keep = size_t(std::clamp(n_keep, 0, session.n_ctx() / 2));
  const size_t discard = (tokens.size() - keep) / 2;
  tokens.erase(tokens.begin() + long(keep), tokens.begin() + long(keep + discard));
  session.truncate(int(keep));
  const size_t kept = size_t(session.n_past());  // a sliding-window cache may have to start over
  return session.eval(std::vector<Token>(tokens.begin() + long(kept), tokens.end()));
}

}  // namespace

GenerateResult generate(Session& session, const Tokenizer& tokenizer, const std::vector<Token>& prompt,
                        const GenerateParams& params, const std::function<bool(const std::string&)>& on_text) {
  GenerateResult r;
  if (prompt.empty()) throw Error("generate: the prompt has no tokens");
  if (int(prompt.size()) >= session.n_ctx())
    throw Error("the prompt has " + std::to_string(prompt.size()) + " tokens, more than the context of " +
                std::to_string(session.n_ctx()) + " allows");
  // Reuse the longest common prefix with what the session already evaluated (chat turns);
  // at least one token is evaluated so there are fresh logits.
  const auto& hist = session.history();
  size_t common = 0;
  while (common < hist.size() && common < prompt.size() && hist[common] == prompt[common]) ++common;
  if (common == prompt.size()) --common;
  session.truncate(int(common));
  common = size_t(session.n_past());  // a sliding-window cache may have to start over
  const std::vector<Token> todo(prompt.begin() + long(common), prompt.end());

  Sampler sampler(params.sampling);
  for (Token t : prompt) sampler.accept(t);

  auto t0 = Clock::now();
  const float* logits = session.eval(todo);
  r.prompt_seconds = seconds_since(t0);
  r.n_prompt = int(todo.size());
  r.n_prompt_total = int(prompt.size());

  StreamDecoder decoder(tokenizer, /*special=*/params.special_text);
  StopFilter stop(params.stop);
  const int n_vocab = session.model().config().n_vocab;
  if (params.n_top_logprobs > GenerateParams::kMaxTopLogprobs)
    throw Error("top_logprobs is " + std::to_string(params.n_top_logprobs) + ", more than the limit of " +
                std::to_string(GenerateParams::kMaxTopLogprobs));
  std::vector<std::pair<float, Token>> top_heap;
  top_heap.reserve(size_t(std::max(0, params.n_top_logprobs)));
  r.done_reason = "length";
  t0 = Clock::now();
  bool stopped = false;
  while (params.n_predict < 0 || r.n_generated < params.n_predict) {
    if (params.constraint && params.constraint->complete()) {
      r.done_reason = "stop";
      break;
    }
    const Token tok = params.constraint
                          ? sampler.sample(logits, n_vocab,
                                           [&](int32_t id) {
                                             return !tokenizer.is_eog(id) && params.constraint->allows(id);
                                           })
                          : sampler.sample(logits, n_vocab);
    if (tok < 0) {  // the constraint allows no token at all
      r.done_reason = "stop";
      break;
    }
    if (params.constraint) params.constraint->accept(tok);
    if (tokenizer.is_eog(tok)) {
      r.done_reason = "stop";
      break;
    }
    sampler.accept(tok);
    if (params.n_top_logprobs >= 0) {
      r.logprobs.push_back(token_logprob(logits, n_vocab, tok, params.n_top_logprobs, top_heap));
      if (params.on_logprob) params.on_logprob(r.logprobs.back());
    }
    r.tokens.push_back(tok);
    ++r.n_generated;
    const std::string text = stop.push(decoder.push(tok), stopped);
    r.text += text;
    if (!text.empty() && !on_text(text)) break;
    if (stopped) {
      r.done_reason = "stop";
      break;
    }
    if (params.n_predict >= 0 && r.n_generated >= params.n_predict) break;
    if (session.n_past() + 1 < session.n_ctx()) {
      logits = session.eval({tok});
    } else if (params.context_shift) {
      logits = shift_context(session, tok, params.n_keep);
      ++r.n_shifts;
    } else {
      break;  // context full: "length"
    }
  }
  r.generate_seconds = seconds_since(t0);
  if (!stopped) {
    const std::string rest = stop.push(decoder.flush(), stopped) + (stopped ? "" : stop.flush());
    if (stopped) r.done_reason = "stop";
    r.text += rest;
    if (!rest.empty()) on_text(rest);
  }
  r.stop_string = stop.matched();
  return r;
}

}  // namespace strata
