#include "tier/stream/expert_cache.h"

#include <string>

#include "util/error.h"

namespace strata::tier {

ExpertCache::ExpertCache(int n_layer, int n_expert, std::vector<uint64_t> capacity, ExpertCacheOptions options)
    : n_expert_(n_expert), options_(options) {
  if (n_layer <= 0 || n_expert <= 0)
    throw Error("expert cache: " + std::to_string(n_layer) + " layers of " + std::to_string(n_expert) + " experts");
  if (!(options.lfu_decay > 0 && options.lfu_decay <= 1))
    throw Error("expert cache: lfu_decay " + std::to_string(options.lfu_decay) + " outside (0, 1]");
  slots_.resize(capacity.size());
  for (size_t i = 0; i < capacity.size(); ++i) slots_[i].capacity = capacity[i];
  const size_t n = size_t(n_layer) * size_t(n_expert);
  index_.assign(n, -1);
  named_.assign(n, false);
  use_score_.assign(n, 0.0);
  noted_.assign(size_t(n_expert), false);
  guessed_.assign(size_t(n_expert), false);
  if (!(options.guessed_use_weight >= 0 && options.guessed_use_weight <= 1))
    throw Error("expert cache: guessed_use_weight " + std::to_string(options.guessed_use_weight) + " outside [0, 1]");
}

void ExpertCache::set_named(std::vector<bool> named) {
  if (named.size() != named_.size())
    throw Error("expert cache: " + std::to_string(named.size()) + " plan flags for " + std::to_string(named_.size()) +
                " experts");
  named_.swap(named);
}

bool ExpertCache::holds_named(int i) const {
  const Slot& s = slots_[size_t(i)];
  return s.layer >= 0 && named_[key(s.layer, s.expert)];
}

bool ExpertCache::holds_pinned(const Slot& s) const {
  return options_.policy == ExpertCachePolicy::pinned_lru && s.layer >= 0 && named_[key(s.layer, s.expert)];
}

bool ExpertCache::holds_pinned(int i) const { return holds_pinned(slots_[size_t(i)]); }

void ExpertCache::begin_layer(int layer) {
  for (Slot& s : slots_) s.wanted = s.in_use = s.guarded = false;  // wanted, in_use: a layer abandoned by an exception
  layer_ = layer;
  if (noted_layer_ == layer) {
    guessed_.swap(noted_);
  } else {
    guessed_.assign(guessed_.size(), false);
  }
  noted_.assign(noted_.size(), false);
  noted_layer_ = -1;
}

void ExpertCache::record_use(int layer, int expert) {
  const bool guessed = layer == layer_ && guessed_[size_t(expert)];
  use_score_[key(layer, expert)] += guessed ? use_weight_ * options_.guessed_use_weight : use_weight_;
}

void ExpertCache::note_guess(int layer, int expert) {
  if (layer != noted_layer_) {
    noted_.assign(noted_.size(), false);
    noted_layer_ = layer;
  }
  noted_[size_t(expert)] = true;
}

void ExpertCache::guard(int i) {
  if (options_.protect_guesses) slots_[size_t(i)].guarded = true;
}

// Scores only compare, so the weight grows instead of every score shrinking; before it could
// overflow, everything is rescaled (as the replayer does, so that the two stay equal).
void ExpertCache::age() {
  use_weight_ /= options_.lfu_decay;
  if (use_weight_ > 1e100) {
    for (double& s : use_score_) s /= use_weight_;
    use_weight_ = 1;
  }
}

// Pinned experts only for a miss that no other slot could ever hold: after a revised plan,
// pinned experts may sit in every slot large enough. The smallest slot that fits among equals,
// so that large slots stay for large experts.
int ExpertCache::victim(uint64_t need, bool for_guess) const {
  const bool lfu = options_.policy == ExpertCachePolicy::lfu;
  auto rank = [&](const Slot& s) {  // lower goes first
    if (s.layer < 0) return 0;
    if (holds_pinned(s)) return 4;
    if (!s.guess) return 1;
    if (s.layer <= layer_) return lfu ? 1 : 2;  // a guess for a layer already past
    return 3;                                   // a live guess
  };
  auto better = [&](const Slot& a, const Slot& b) {
    const int ra = rank(a), rb = rank(b);
    if (ra != rb) return ra < rb;
    if (lfu && ra != 0) {
      const size_t ka = key(a.layer, a.expert), kb = key(b.layer, b.expert);
      if (use_score_[ka] != use_score_[kb]) return use_score_[ka] < use_score_[kb];
      if (a.capacity != b.capacity) return a.capacity < b.capacity;
      return ka < kb;
    }
    if (a.capacity != b.capacity) return a.capacity < b.capacity;
    return a.last_use < b.last_use;
  };
  int best = -1;
  bool unpinned_fits = false;
  for (int i = 0; i < int(slots_.size()); ++i) {
    const Slot& s = slots_[size_t(i)];
    if (s.capacity < need) continue;
    unpinned_fits |= !holds_pinned(s);
    if (s.in_use || s.wanted || s.guarded) continue;
    if (for_guess && (holds_pinned(s) || (s.guess && s.layer > layer_)))
      continue;  // a guess never displaces a pinned expert or another live guess
    if (best < 0 || better(s, slots_[size_t(best)])) best = i;
  }
  if (best >= 0 && holds_pinned(slots_[size_t(best)]) && unpinned_fits) return -1;  // wait for that slot instead
  return best;
}

void ExpertCache::put(int i, int layer, int expert, Put why) {
  Slot& s = slots_[size_t(i)];
  if (s.layer >= 0) index_[key(s.layer, s.expert)] = -1;
  s = Slot{.capacity = s.capacity, .layer = layer, .expert = expert, .last_use = ++clock_};
  s.guess = why == Put::guess;
  s.wanted = why == Put::routed;
  index_[key(layer, expert)] = i;
}

void ExpertCache::clear(int i) {
  Slot& s = slots_[size_t(i)];
  if (s.layer >= 0) index_[key(s.layer, s.expert)] = -1;
  s = Slot{.capacity = s.capacity};
}

void ExpertCache::drop(int i) {
  Slot& s = slots_[size_t(i)];
  if (s.layer >= 0) index_[key(s.layer, s.expert)] = -1;
  s.layer = s.expert = -1;
  s.guess = s.guarded = false;
}

bool ExpertCache::confirm(int i) {
  Slot& s = slots_[size_t(i)];
  s.wanted = true;
  const bool was_guess = s.guess;
  s.guess = false;
  return was_guess;
}

void ExpertCache::hand_out(int i) {
  Slot& s = slots_[size_t(i)];
  s.wanted = false;
  s.in_use = true;
  s.last_use = ++clock_;
}

void ExpertCache::release(int i) { slots_[size_t(i)].in_use = false; }

}  // namespace strata::tier
