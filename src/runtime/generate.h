#pragma once
// The generation loop: evaluate the prompt (reusing the session's matching prefix), then sample
// token by token, streaming text that never splits a UTF-8 character or shows part of a stop
// string.
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "runtime/sampler.h"
#include "runtime/session.h"
#include "tokenizer/tokenizer.h"

namespace strata {

// Restricts which tokens may come next (structured output, runtime/grammar.h). While one is
// set, end-of-generation tokens are never sampled: generation ends when complete() is true.
class TokenConstraint {
 public:
  virtual ~TokenConstraint() = default;
  virtual bool allows(Token token) = 0;  // the token's text keeps the output valid
  virtual void accept(Token token) = 0;  // the token was chosen
  virtual bool complete() const = 0;     // the output is whole: generation must end
};

// A generated token's log-probability: the log-softmax of the model's raw logits (before
// penalties, temperature or a constraint), as `strata logits` prints them; top: the
// n_top_logprobs most likely tokens, most likely first.
struct TokenLogprob {
  Token token = 0;
  float logprob = 0;
  std::vector<std::pair<Token, float>> top;
};

struct GenerateParams {
  // OpenAI's and Ollama's limit on top_logprobs.
  static constexpr int kMaxTopLogprobs = 20;

  int n_predict = 128;  // < 0: until end of generation or a full context
  SamplerParams sampling;
  std::vector<std::string> stop;          // stop strings (not included in the output)
  TokenConstraint* constraint = nullptr;  // not owned; nullptr: any token
  // < 0: no log-probabilities; 0: each generated token's; k: and the k most likely alternatives
  // (at most kMaxTopLogprobs).
  int n_top_logprobs = -1;
  // With n_top_logprobs >= 0: each generated token's, before its text reaches on_text.
  std::function<void(const TokenLogprob&)> on_logprob;
  // The text of control tokens is part of the output (a chat format whose markers are control
  // tokens, such as harmony's <|channel|>, parses it); false: left out.
  bool special_text = false;
  // A full context: false ends generation ("length"); true shifts it, as llama.cpp's and
  // Ollama's context shift: the first n_keep tokens stay (at most half the context), half of
  // the rest are dropped, and the tokens left after them are evaluated again at their new
  // positions (see shift_context in generate.cpp for why they are recomputed).
  bool context_shift = false;
  int n_keep = 4;
};

struct GenerateResult {
  std::string text;
  std::vector<Token> tokens;
  int n_prompt = 0;        // prompt tokens evaluated (after prefix reuse)
  int n_prompt_total = 0;  // prompt tokens in all
  int n_generated = 0;
  double prompt_seconds = 0;
  double generate_seconds = 0;
  int n_shifts = 0;                    // context shifts (GenerateParams::context_shift)
  std::string done_reason;             // "stop" (end token or stop string), "length" (n_predict or context)
  std::string stop_string;             // the stop string that ended generation, if one did
  std::vector<TokenLogprob> logprobs;  // with n_top_logprobs >= 0: one per generated token
};

// on_text receives each piece of text as it becomes final; returning false cancels generation.
GenerateResult generate(Session& session, const Tokenizer& tokenizer, const std::vector<Token>& prompt,
                        const GenerateParams& params, const std::function<bool(const std::string&)>& on_text);

}  // namespace strata
