#pragma once
// Sentence embeddings from a generative model: the mean over the input's tokens of the final
// hidden state (after the output norm), as llama.cpp pools (LLAMA_POOLING_TYPE_MEAN) and Ollama
// serves models whose GGUF names no pooling type. Each input is evaluated from an empty context.
#include <vector>

#include "runtime/session.h"

namespace strata {

// Mean-pooled hidden state of tokens, evaluated from position 0 (the session is truncated to
// empty first, so earlier contents never leak in). [n_embd] floats.
std::vector<float> embed_mean(Session& session, const std::vector<int32_t>& tokens);
// Scales v to unit Euclidean length (a zero vector stays zero).
void l2_normalize(std::vector<float>& v);

}  // namespace strata
