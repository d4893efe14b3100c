#pragma once
// Token sampling: penalties, then greedy or temperature with top-k, top-p and min-p.
// The same seed and inputs always give the same tokens.
#include <cstdint>
#include <deque>
#include <functional>
#include <random>
#include <vector>

namespace strata {

struct SamplerParams {
  float temperature = 0.8f;     // <= 0: greedy
  int32_t top_k = 40;           // <= 0: all
  float top_p = 0.95f;          // >= 1: off
  float min_p = 0.05f;          // <= 0: off
  float repeat_penalty = 1.0f;  // 1: off
  int32_t repeat_last_n = 64;   // window the penalties look at; -1: whole context
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  uint64_t seed = 0xFFFFFFFFu;  // 0xFFFFFFFF: random seed
};

class Sampler {
 public:
  explicit Sampler(const SamplerParams& params);
  // Picks the next token from raw logits (not modified). Deterministic for a given seed.
  int32_t sample(const float* logits, int32_t n_vocab);
  // Like sample, but only among tokens for which allowed(id) is true; -1 when there is none.
  // allowed is asked in order of decreasing logit and only as far as needed: greedy stops at the
  // first allowed token; sampling keeps the first top_k allowed ones (all with top_k <= 0).
  int32_t sample(const float* logits, int32_t n_vocab, const std::function<bool(int32_t)>& allowed);
  // Records a token of the context (prompt or generated) for the penalties.
  void accept(int32_t token);
  void reset();
  const SamplerParams& params() const { return params_; }
  // The seed in use: params.seed, or the one drawn from std::random_device for 0xFFFFFFFF.
  uint64_t seed() const { return seed_; }

 private:
  void apply_penalties(int32_t n_vocab);
  int32_t draw(size_t n);  // top-p, min-p, temperature and a draw over candidates_[0, n), sorted
  struct Candidate {
    int32_t id;
    float logit;
    float p;
  };
  SamplerParams params_;
  std::mt19937 rng_;
  uint64_t seed_ = 0;
  std::deque<int32_t> history_;
  std::vector<Candidate> candidates_;  // reused: nothing allocated per token after the first
};

}  // namespace strata
