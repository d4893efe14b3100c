#include "runtime/embedding.h"

#include <cmath>

#include "util/error.h"

namespace strata {

std::vector<float> embed_mean(Session& session, const std::vector<int32_t>& tokens) {
  if (tokens.empty()) throw Error("embed: no tokens");
  const size_t n_embd = size_t(session.model().config().n_embd);
  std::vector<double> sum(n_embd, 0.0);
  session.truncate(0);
  session.eval_hidden(tokens, [&](size_t, const float* hidden) {
    for (size_t i = 0; i < n_embd; ++i) sum[i] += hidden[i];
  });
  session.truncate(0);
  std::vector<float> out(n_embd);
  for (size_t i = 0; i < n_embd; ++i) out[i] = float(sum[i] / double(tokens.size()));
  return out;
}

void l2_normalize(std::vector<float>& v) {
  double sq = 0.0;
  for (float x : v) sq += double(x) * x;
  if (sq <= 0.0) return;
  const float inv = float(1.0 / std::sqrt(sq));
  for (float& x : v) x *= inv;
}

}  // namespace strata
