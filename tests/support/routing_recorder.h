#pragma once
// Records every MoE layer's routing of a session (a RoutingObserver), so that two runs of one model
// (CPU and GPU, or resident and tiered) can be compared up to the first token any layer routed
// differently: random forged weights route near-uniformly, and rounding that differs between two
// kernel sets flips a near-tied expert choice, after which the runs legitimately diverge.
#include <algorithm>
#include <cstdint>
#include <map>
#include <vector>

#include "model/blocks.h"

namespace strata::test {

class RoutingRecorder : public RoutingObserver {
 public:
  explicit RoutingRecorder(int k) : k_(k) {}
  void routed(int layer, int64_t pos0, const int32_t* chosen, int n_tokens) override {
    for (int t = 0; t < n_tokens; ++t) {
      std::vector<int32_t> set(chosen + size_t(t) * k_, chosen + size_t(t + 1) * k_);
      std::sort(set.begin(), set.end());
      auto& layers = by_pos_[pos0 + t];
      if (int(layers.size()) <= layer) layers.resize(size_t(layer) + 1);
      layers[size_t(layer)] = std::move(set);
    }
  }
  void guessed(int, const int32_t*, int, bool) override {}
  // The first position both saw whose experts differ in some layer; `none` when they never do.
  static int64_t first_difference(const RoutingRecorder& a, const RoutingRecorder& b, int64_t none) {
    for (const auto& [pos, layers] : a.by_pos_) {
      const auto it = b.by_pos_.find(pos);
      if (it != b.by_pos_.end() && it->second != layers) return pos;
    }
    return none;
  }

 private:
  int k_;
  std::map<int64_t, std::vector<std::vector<int32_t>>> by_pos_;
};

}  // namespace strata::test
