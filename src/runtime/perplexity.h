#pragma once
// Perplexity by llama.cpp's method (llama-perplexity, tools/perplexity/perplexity.cpp): the text
// is tokenized once (BOS only where the model's metadata adds one), cut into chunks of n_ctx
// tokens, each chunk's first token replaced by BOS (again only where the model adds one: SmolLM2
// has add_bos_token=false and sees no BOS at all), and the second half of each chunk scored
// (positions n_ctx/2 .. n_ctx-2 predicting the next token of the original text).
#include <functional>
#include <vector>

#include "runtime/session.h"

namespace strata {

struct PerplexityChunk {
  int index;
  double running_ppl;  // estimate over all chunks so far
};

struct PerplexityResult {
  int n_chunks = 0;
  int n_ctx = 0;
  int n_scored = 0;      // tokens scored
  double ppl = 0;        // final estimate
  double ppl_error = 0;  // its standard error
  double seconds = 0;
  int n_tokens_evaluated = 0;
};

// tokens: the whole text tokenized with BOS (if the model adds one). bos < 0: no BOS replacement.
// Throws strata::Error when the text has fewer than 2 * n_ctx tokens.
// on_session: called once with the session before any evaluation (to connect streamers, a trace).
// session: threads, KV type and device of the session (its context and batch are n_ctx).
PerplexityResult perplexity(const Model& model, const std::vector<int32_t>& tokens, int32_t bos, int n_ctx,
                            int max_chunks, const SessionParams& session,
                            const std::function<void(const PerplexityChunk&)>& on_chunk,
                            const std::function<void(Session&)>& on_session = {});

}  // namespace strata
