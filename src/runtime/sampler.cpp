#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "util/error.h"

namespace strata {

namespace {

constexpr uint64_t kRandomSeed = 0xFFFFFFFFu;

// Higher logit first; the lower id wins a tie, so the order never depends on the sort algorithm.
template <typename C>
bool by_logit_desc(const C& a, const C& b) {
  return a.logit != b.logit ? a.logit > b.logit : a.id < b.id;
}

// p = softmax(logit) over [begin, end); the range is sorted by logit, so begin holds the max.
template <typename It>
void softmax_sorted(It begin, It end) {
  const float max_logit = begin->logit;
  double sum = 0.0;
  for (It c = begin; c != end; ++c) {
    c->p = std::exp(c->logit - max_logit);
    sum += c->p;
  }
  const float inv = float(1.0 / sum);
  for (It c = begin; c != end; ++c) c->p *= inv;
}

}  // namespace

Sampler::Sampler(const SamplerParams& params) : params_(params) {
  if (params_.repeat_last_n < -1) {
    throw Error("sampler: repeat_last_n must be -1 (whole context), 0 (off) or a window size, got " +
                std::to_string(params_.repeat_last_n));
  }
  if (!(params_.repeat_penalty > 0.0f)) {
    throw Error("sampler: repeat_penalty must be > 0, got " + std::to_string(params_.repeat_penalty));
  }
  seed_ = params_.seed;
  if (seed_ == kRandomSeed) {
    std::random_device rd;
    seed_ = (uint64_t(rd()) << 32) | rd();
  }
  reset();
}

void Sampler::reset() {
  history_.clear();
  // Both halves of a 64-bit seed matter.
  std::seed_seq seq{uint32_t(seed_), uint32_t(seed_ >> 32)};
  rng_.seed(seq);
}

void Sampler::accept(int32_t token) {
  const int32_t window = params_.repeat_last_n;
  if (window == 0) return;
  history_.push_back(token);
  if (window > 0) {
    while (history_.size() > size_t(window)) history_.pop_front();
  }
}

int32_t Sampler::sample(const float* logits, int32_t n_vocab) {
  if (n_vocab <= 0) throw Error("sampler: n_vocab must be positive, got " + std::to_string(n_vocab));

  // candidates_[id] holds token id; p counts its occurrences in the window while penalties apply.
  candidates_.resize(size_t(n_vocab));  // grows once; later calls reuse the capacity
  for (int32_t i = 0; i < n_vocab; ++i) candidates_[size_t(i)] = {i, logits[i], 0.0f};

  apply_penalties(n_vocab);

  // --- greedy: the highest logit, the lowest id among equals
  if (params_.temperature <= 0.0f) {
    int32_t best = 0;
    for (int32_t i = 1; i < n_vocab; ++i) {
      if (candidates_[size_t(i)].logit > candidates_[size_t(best)].logit) best = i;
    }
    return best;
  }

  // --- top-k, then sort what is kept (top-p and min-p walk it from the most likely)
  auto begin = candidates_.begin();
  size_t n = candidates_.size();
  const auto cmp = [](const Candidate& a, const Candidate& b) { return by_logit_desc(a, b); };
  if (params_.top_k > 0 && size_t(params_.top_k) < n) {
    std::partial_sort(begin, begin + params_.top_k, candidates_.end(), cmp);
    n = size_t(params_.top_k);
  } else {
    std::sort(begin, candidates_.end(), cmp);
  }

  return draw(n);
}

// --- penalties (llama.cpp's llama_sampler_penalties: each distinct token once); candidates_[id]
// holds token id and p counts its occurrences in the window meanwhile.
void Sampler::apply_penalties(int32_t n_vocab) {
  const bool penalize =
      params_.repeat_penalty != 1.0f || params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f;
  if (!penalize || history_.empty()) return;
  for (int32_t t : history_)
    if (t >= 0 && t < n_vocab) candidates_[size_t(t)].p += 1.0f;
  for (int32_t t : history_) {
    if (t < 0 || t >= n_vocab) continue;
    Candidate& c = candidates_[size_t(t)];
    if (c.p == 0.0f) continue;
    const float count = c.p;
    c.logit = c.logit > 0.0f ? c.logit / params_.repeat_penalty : c.logit * params_.repeat_penalty;
    c.logit -= count * params_.frequency_penalty + params_.presence_penalty;
    c.p = 0.0f;
  }
}

// --- the n best candidates, sorted: top-p (the smallest prefix whose mass reaches top_p), min-p
// (drop tokens less likely than min_p times the best), temperature, then one draw.
int32_t Sampler::draw(size_t n) {
  auto begin = candidates_.begin();
  softmax_sorted(begin, begin + ptrdiff_t(n));
  if (params_.top_p < 1.0f) {
    double cum = 0.0;
    for (size_t i = 0; i < n; ++i) {
      cum += begin[ptrdiff_t(i)].p;
      if (cum >= params_.top_p) {
        n = i + 1;
        break;
      }
    }
  }
  if (params_.min_p > 0.0f) {
    const float threshold = params_.min_p * begin->p;
    size_t keep = 1;
    while (keep < n && begin[ptrdiff_t(keep)].p >= threshold) ++keep;
    n = keep;
  }
  const float inv_temp = 1.0f / params_.temperature;
  for (size_t i = 0; i < n; ++i) begin[ptrdiff_t(i)].logit *= inv_temp;
  softmax_sorted(begin, begin + ptrdiff_t(n));
  // A uniform in [0, 1) from the raw 32-bit output: the same on every standard library.
  const double u = double(rng_()) * (1.0 / 4294967296.0);
  double cum = 0.0;
  for (size_t i = 0; i < n; ++i) {
    cum += begin[ptrdiff_t(i)].p;
    if (u < cum) return begin[ptrdiff_t(i)].id;
  }
  return begin[ptrdiff_t(n - 1)].id;  // rounding left u above the last partial sum
}

// --- constrained sampling (structured output): the same steps over the allowed tokens only
int32_t Sampler::sample(const float* logits, int32_t n_vocab, const std::function<bool(int32_t)>& allowed) {
  if (n_vocab <= 0) throw Error("sampler: n_vocab must be positive, got " + std::to_string(n_vocab));
  candidates_.resize(size_t(n_vocab));
  for (int32_t i = 0; i < n_vocab; ++i) candidates_[size_t(i)] = {i, logits[i], 0.0f};
  apply_penalties(n_vocab);
  const auto cmp = [](const Candidate& a, const Candidate& b) { return by_logit_desc(a, b); };
  // Sort a head first: the allowed tokens are usually among the most likely.
  const size_t head = std::min<size_t>(candidates_.size(), 512);
  std::partial_sort(candidates_.begin(), candidates_.begin() + ptrdiff_t(head), candidates_.end(), cmp);
  bool sorted_all = head == candidates_.size();
  const size_t want = params_.temperature <= 0.0f ? 1
                      : params_.top_k > 0         ? size_t(params_.top_k)
                                                  : candidates_.size();
  size_t n_kept = 0;  // allowed candidates, moved to the front in order
  for (size_t i = 0; i < candidates_.size() && n_kept < want; ++i) {
    if (i == head && !sorted_all) {
      std::sort(candidates_.begin() + ptrdiff_t(head), candidates_.end(), cmp);
      sorted_all = true;
    }
    if (allowed(candidates_[i].id)) candidates_[n_kept++] = candidates_[i];
  }
  if (n_kept == 0) return -1;
  if (params_.temperature <= 0.0f) return candidates_[0].id;
  return draw(n_kept);
}

}  // namespace strata
