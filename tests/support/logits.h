#pragma once
// The logits a streamed run is compared with bit for bit: a fixed prompt evaluated at once (every
// position's logits), then a few single tokens one at a time, all concatenated, over the given
// FFN and expert sources (null: resident).
#include <cstdint>
#include <vector>

#include "runtime/session.h"

namespace strata::test {

// Token ids first + step * i: spread over the vocabulary, the same in every run.
struct LogitsRun {
  int n_prompt = 12, prompt_first = 100, prompt_step = 37;
  int n_single = 4, single_first = 500, single_step = 91;
};

inline std::vector<float> run_logits(const Model& model, FfnSource* ffn, ExpertSource* experts,
                                     const LogitsRun& r = {}) {
  SessionParams sp;
  sp.n_ctx = 64;
  sp.n_threads = 2;
  Session s(model, sp);
  s.set_ffn_source(ffn);
  s.set_expert_source(experts);
  std::vector<int32_t> prompt;
  for (int i = 0; i < r.n_prompt; ++i) prompt.push_back(int32_t(r.prompt_first + r.prompt_step * i));
  std::vector<float> out = s.eval_all_logits(prompt);
  const int n_vocab = model.config().n_vocab;
  for (int i = 0; i < r.n_single; ++i) {
    const float* l = s.eval({int32_t(r.single_first + r.single_step * i)});
    out.insert(out.end(), l, l + n_vocab);
  }
  return out;
}

}  // namespace strata::test
