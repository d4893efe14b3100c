#pragma once
// Expert guessing: a ForwardHook that, while MoE layer l computes, guesses the experts layer l+1
// will route to and asks the expert source to read them ahead. A policy of the expert cache,
// kept out of compute: the forward pass only calls the hook after routing and after the FFN.
#include <cstdint>
#include <vector>

#include "model/blocks.h"
#include "model/weight_source.h"

namespace strata::tier {

class ExpertGuesser : public ForwardHook {
 public:
  // Guesses are only made for batches of at most kMaxTokens: a prompt batch routes to nearly
  // every expert anyway.
  static constexpr int kMaxTokens = 4;

  // target: the source that reads the guesses ahead; null for a guesser whose guesses only a
  // RoutingObserver sees (a traced run whose experts are resident). router false: no look-ahead;
  // the target is only told, once per layer after routing, that it may add guesses of its own
  // (an empty guess: ExpertStreamer's co-activation predictor).
  ExpertGuesser(const ModelConfig& config, ExpertSource* target, bool router = true);
  // The early guess, from the residual before this layer's FFN: each token's top ceil(k/2).
  void after_routing(ForwardPass& pass, int layer) override;
  // The refined guess once the FFN's output is in: every token's top k, replacing the early one.
  void after_ffn(ForwardPass& pass, int layer) override;

  // Scratch the guesser allocates (for the planner's memory model).
  static size_t bytes_for(const ModelConfig& config);

 private:
  void guess(ForwardPass& pass, int next, bool refined);

  ExpertSource* target_;
  bool router_;
  std::vector<float> normed_, logits_;  // [kMaxTokens x n_embd], [kMaxTokens x n_expert]
  std::vector<int32_t> top_, ordered_;  // [kMaxTokens x k], [n_expert]
  ops::MatmulScratch mm_;
};

}  // namespace strata::tier
