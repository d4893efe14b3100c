#include "runtime/perplexity.h"

#include <chrono>
#include <cmath>

#include "util/error.h"

namespace strata {

namespace {
// -log p(token) from raw logits, in double like llama.cpp's log_softmax.
double negative_log_prob(const float* logits, int n_vocab, int32_t token) {
  float max = logits[0];
  for (int i = 1; i < n_vocab; ++i) max = std::max(max, logits[i]);
  double sum = 0.0;
  for (int i = 0; i < n_vocab; ++i) sum += std::exp(double(logits[i] - max));
  return -(double(logits[token] - max) - std::log(sum));
}
}  // namespace

PerplexityResult perplexity(const Model& model, const std::vector<int32_t>& tokens, int32_t bos, int n_ctx,
                            int max_chunks, const SessionParams& session_params,
                            const std::function<void(const PerplexityChunk&)>& on_chunk,
                            const std::function<void(Session&)>& on_session) {
  if (n_ctx < 8) throw Error("perplexity: context of " + std::to_string(n_ctx) + " tokens is too small");
  if (int64_t(tokens.size()) < 2 * int64_t(n_ctx))
    throw Error("perplexity: the text has " + std::to_string(tokens.size()) +
                " tokens; at least 2 * ctx = " + std::to_string(2 * n_ctx) + " are needed");
  PerplexityResult r;
  r.n_ctx = n_ctx;
  r.n_chunks = int(tokens.size() / size_t(n_ctx));
  if (max_chunks > 0) r.n_chunks = std::min(r.n_chunks, max_chunks);
  SessionParams sp = session_params;
  sp.n_ctx = n_ctx;
  sp.n_batch = n_ctx;
  Session session(model, sp);
  if (on_session) on_session(session);
  const int n_vocab = model.config().n_vocab;
  const int first = n_ctx / 2;
  double nll = 0, nll2 = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (int c = 0; c < r.n_chunks; ++c) {
    std::vector<int32_t> chunk(tokens.begin() + long(c) * n_ctx, tokens.begin() + long(c + 1) * n_ctx);
    if (bos >= 0) chunk[0] = bos;
    session.truncate(0);
    session.eval_each(chunk, [&](size_t i, const float* logits) {
      if (int(i) < first || int(i) >= n_ctx - 1) return;
      const double v = negative_log_prob(logits, n_vocab, chunk[i + 1]);
      nll += v;
      nll2 += v * v;
      ++r.n_scored;
    });
    r.n_tokens_evaluated += n_ctx;
    if (on_chunk) on_chunk({c, std::exp(nll / r.n_scored)});
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double mean = nll / r.n_scored;
  r.ppl = std::exp(mean);
  const double var = nll2 / r.n_scored - mean * mean;
  r.ppl_error = r.n_scored > 1 && var > 0 ? std::sqrt(var / (r.n_scored - 1)) * r.ppl : 0.0;
  return r;
}

}  // namespace strata
