#pragma once
// A bench's routing override (`strata bench --routing-override TRACE`): the MoE layers run the
// experts a routing trace names instead of the ones their router chose. A forged model's random
// router picks experts almost uniformly, the worst case for an expert cache; driven by a trace
// with real routing's skew and locality (bench/routing_synth.py carries the trained model's onto
// any shape), the same engine streams and computes what a real model would ask of it.
//
// It is a ForwardHook: at after_router it overwrites the batch's choice (pass.buf.chosen; the
// router's weights stay, rank by rank) and compute runs those experts without knowing; its other
// calls go to the hook it wraps (the expert guesses). Those guesses still come from the model's
// own router, so on a forged model they are no better than chance: the look-ahead's gain on real
// routing is not reproduced (co-activation statistics, learned from the routing seen, are).
//
// The token at position p routes as the trace's position p mod n_positions(). Only r lines are
// read (src/tier/trace/routing_trace.h); every MoE layer of positions 0..n-1 must be present.
#include <cstdint>
#include <string>
#include <vector>

#include "model/blocks.h"

namespace strata::tier {

class RoutingOverride : public ForwardHook {
 public:
  static constexpr int kMaxPositions = 1 << 16;          // a trace longer than any context here
  static constexpr uint64_t kMaxLines = uint64_t(1) << 24;  // lines read at most

  // Reads the trace; throws strata::Error naming the file and line when it is not a trace of
  // this model's shape (layers, experts, k) or lacks a position's layer.
  RoutingOverride(const std::string& path, const ModelConfig& config);

  // The hook whose after_routing and after_ffn this one passes on (may be null).
  void wrap(ForwardHook* inner) { inner_ = inner; }
  void after_router(ForwardPass& pass, int layer) override;
  void after_routing(ForwardPass& pass, int layer) override {
    if (inner_) inner_->after_routing(pass, layer);
  }
  void after_ffn(ForwardPass& pass, int layer) override {
    if (inner_) inner_->after_ffn(pass, layer);
  }

  int n_positions() const { return n_positions_; }
  // The k experts the token at position `pos` routes to in MoE layer `layer`, best first.
  const int32_t* experts(int64_t pos, int layer) const {
    return table_.data() + (size_t(pos % n_positions_) * size_t(n_layer_) + size_t(layer)) * size_t(k_);
  }

 private:
  int n_layer_ = 0, k_ = 0, n_positions_ = 0;
  std::vector<int32_t> table_;  // [n_positions x n_layer x k]; -1 for a dense layer
  ForwardHook* inner_ = nullptr;
};

}  // namespace strata::tier
