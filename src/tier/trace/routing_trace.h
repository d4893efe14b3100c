#pragma once
// A routing trace: per token and MoE layer the experts the router chose, and the guesses the
// forward pass made of them before the layer ran (`strata run|bench --trace-routing FILE`).
// bench/routing_replay.py replays a trace under expert-cache policies.
//
// The file is text, one record a line, fields separated by single spaces:
//   strata-routing-trace 1
//   model <file name>
//   n_layer <L> n_expert <E> n_expert_used <K>
//   expert_bytes <bytes of one expert's gate+up+down slices in layer 0> ... <layer L-1>
//   r <layer> <pos> <e_1> ... <e_K>     token at position pos routed to e_1..e_K (best first)
//   g <layer> <0|1> <e> ...             a guess of layer's experts (1: the refined one, made
//                                       after the previous layer's FFN), likeliest first
// Records come in the order the forward pass makes them: a batch's r lines for a layer (one per
// token), then the g lines of the next layer. A forward pass begins where a layer's r lines follow
// those of the same or a later layer.
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "model/blocks.h"
#include "model/model.h"
#include "tier/expert_guess.h"

namespace strata::tier {

class RoutingTraceWriter : public RoutingObserver {
 public:
  // Creates (truncates) `path` and writes the header; throws strata::Error naming the file.
  RoutingTraceWriter(const std::string& path, const Model& model);
  ~RoutingTraceWriter() override;
  RoutingTraceWriter(const RoutingTraceWriter&) = delete;
  RoutingTraceWriter& operator=(const RoutingTraceWriter&) = delete;

  void routed(int layer, int64_t pos0, const int32_t* chosen, int n_tokens) override;
  void guessed(int layer, const int32_t* experts, int n_experts, bool refined) override;
  // Writes what is buffered; throws on an I/O error (the destructor only tries).
  void flush();

  uint64_t n_records() const { return n_records_; }
  // Makes the guesses of a run whose experts are resident (no streamer makes any), so that its
  // trace holds the same guesses a streamed run's does; nothing is read ahead.
  ForwardHook* guesser() { return &guesser_; }

 private:
  void check(int layer, const char* what) const;

  std::string path_;
  FILE* file_ = nullptr;
  int n_layer_ = 0, n_expert_ = 0, k_ = 0;
  uint64_t n_records_ = 0;
  ExpertGuesser guesser_;
};

// Bytes of one expert's slices (gate, up and down) in each layer; 0 for a layer without experts.
std::vector<uint64_t> expert_bytes_per_layer(const Model& model);

}  // namespace strata::tier
