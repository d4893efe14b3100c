#pragma once
// What a MoE model's router actually does: how often each expert is chosen per layer, and which
// experts of layer l+1 follow each expert of layer l in the same token (co-activation). The
// frequencies revise the plan's prior; the co-activations are a second predictor of the next
// layer's experts. Saved per model file so that a restart starts warm.
#include <cstdint>
#include <string>
#include <vector>

namespace strata::tier {

class RoutingStats {
 public:
  RoutingStats(int n_layer, int n_expert, int n_expert_used);

  // The routing of one batch at `layer`: chosen is [n_tokens x k]. Consecutive layers of the
  // same batch also count co-activations.
  void record(int layer, const int32_t* chosen, int n_tokens);
  // Up to `count` experts of layer + 1 most often seen after the experts `now` of `layer`, among
  // those that followed them in at least half of the tokens (averaged over `now`); ascending ids
  // into out. Returns how many (0 until enough has been seen).
  int predict_next(int layer, const int32_t* now, int n_now, int count, int32_t* out) const;

  // Selections per [layer][expert] (for tier::revise).
  std::vector<std::vector<double>> frequencies() const;
  uint64_t tokens_seen() const { return tokens_; }  // batch rows recorded at layer 0

  // Binary file; load() returns false (and changes nothing) when the file is missing or is for
  // another shape, and throws nothing: stale statistics are only a worse guess.
  bool load(const std::string& path);
  void save(const std::string& path) const;  // atomically (temporary file + rename); throws on I/O errors
  // ~/.cache/strata/routing/<file name>-<size>.bin
  static std::string default_path(const std::string& model_path, uint64_t model_bytes);

 private:
  uint32_t& co(int layer, int from, int to) {
    return co_[(size_t(layer) * n_expert_ + size_t(from)) * n_expert_ + size_t(to)];
  }
  uint32_t co(int layer, int from, int to) const {
    return co_[(size_t(layer) * n_expert_ + size_t(from)) * n_expert_ + size_t(to)];
  }

  int n_layer_, n_expert_, k_;
  uint64_t tokens_ = 0;
  std::vector<uint64_t> freq_;  // [n_layer x n_expert]
  std::vector<uint32_t> co_;    // [(n_layer - 1) x n_expert x n_expert]
  std::vector<uint64_t> seen_;  // co-activations recorded from each layer
  // The previous record(), to pair with the next layer's.
  int prev_layer_ = -1;
  int prev_tokens_ = 0;
  std::vector<int32_t> prev_;
  mutable std::vector<uint64_t> score_;  // scratch of predict_next
};

}  // namespace strata::tier
