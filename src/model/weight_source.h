#pragma once
// Where compute gets its weights. The forward pass asks one WeightSource for every matrix that
// may live elsewhere than in memory: a dense FFN matrix (its own FFN or a shared expert) in row
// pieces, and the routed experts of a MoE layer one at a time, each view ready to compute. It
// never asks where the bytes came from: ResidentWeights serves the mapped or copied file,
// streamers (src/tier/stream) serve reads from the SSD, a device tier will serve its own.
// Streamers offer their side through FfnSource and ExpertSource; the session puts them and the
// resident weights behind one WeightSource. Policies that watch the forward pass (guessing the
// experts of later layers) are ForwardHooks, called at fixed points.
#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "model/weights.h"

namespace strata {

struct ForwardPass;  // model/blocks.h

// The one interface compute asks. Used on the forward thread only.
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  // Dense FFN matrix `part` of `layer`, in pieces of whole rows (one piece when it is resident):
  // begin_matrix, then next_piece until it returns false. A piece is rows [row0, row0 +
  // piece.n_rows) and stays valid until the next call.
  virtual void begin_matrix(int layer, FfnPart part) = 0;
  virtual bool next_piece(WeightView& piece, int64_t& row0) = 0;
  // The routed experts of MoE layer `layer`: begin_experts with the distinct experts the batch
  // routed to (ascending) and the routing [n_tokens x k]; next_expert hands them out one at a
  // time, in any order (those in memory first), until it returns -1; expert_done after each
  // expert's compute.
  virtual void begin_experts(int layer, const int32_t* experts, int n_experts, const int32_t* chosen, int n_tokens) = 0;
  virtual int next_expert(WeightView& gate, WeightView& up, WeightView& down) = 0;
  virtual void expert_done(int expert) = 0;
  // Whether every expert of MoE layer `layer` is in memory as bound (the stacked tensors of
  // ModelWeights), so that compute reads them all at once without asking for each: the routing
  // then never has to reach the host.
  virtual bool experts_resident(int layer) const {
    (void)layer;
    return false;
  }
  // Whether dense FFN matrix `part` of `layer` is in memory as bound (begin_matrix would hand it
  // out as one piece), so that compute may take it with others in one op.
  virtual bool ffn_resident(int layer, FfnPart part) const {
    (void)layer, (void)part;
    return false;
  }
};

// Every weight in memory, as bound (ModelWeights).
class ResidentWeights : public WeightSource {
 public:
  explicit ResidentWeights(const ModelConfig& config, const ModelWeights& weights);
  void begin_matrix(int layer, FfnPart part) override;
  bool next_piece(WeightView& piece, int64_t& row0) override;
  void begin_experts(int layer, const int32_t* experts, int n_experts, const int32_t* chosen, int n_tokens) override;
  int next_expert(WeightView& gate, WeightView& up, WeightView& down) override;
  void expert_done(int) override {}
  bool experts_resident(int) const override { return true; }
  bool ffn_resident(int, FfnPart) const override { return true; }

 private:
  const ModelConfig& config_;
  const ModelWeights& weights_;
  const WeightView* matrix_ = nullptr;  // the matrix begun and not handed out yet
  int layer_ = -1;
  const int32_t* experts_ = nullptr;  // the caller's list, valid for the layer
  int n_experts_ = 0, next_ = 0;
};

// Calls at fixed points of the forward pass, for policies outside compute (src/tier's expert
// guesses). A hook may read the pass's buffers and weights; it must not change what compute
// reads, except at after_router.
class ForwardHook {
 public:
  virtual ~ForwardHook() = default;
  // MoE layer `layer`'s router has chosen (pass.buf.chosen [n_tokens x k], best first, and
  // chosen_weight); nothing is asked for yet. The one point where a hook may change what compute
  // reads, and only the choice: a bench's routing override (tier/trace/routing_override.h) puts a
  // trace's experts there, and compute runs them as if its router had chosen them.
  virtual void after_router(ForwardPass&, int) {}
  // MoE layer `layer` has routed its batch and asked for its experts; none has run yet.
  virtual void after_routing(ForwardPass& pass, int layer) = 0;
  // Layer `layer`'s FFN output has been added to the residual stream (pass.buf.x).
  virtual void after_ffn(ForwardPass& pass, int layer) = 0;
};

// Computes the routed experts of some MoE layers itself, splitting them between processors and
// memories (src/tier/gpu: a VRAM expert cache computed on the GPU, the rest by the CPU from host
// RAM or copied over PCIe). The forward pass hands such a layer's routed batch to it (in the
// pass's backend memory) instead of computing the experts; it writes the batch's slots.
class ExpertCompute {
 public:
  virtual ~ExpertCompute() = default;
  virtual bool computes(int layer) const = 0;
  virtual void compute(ForwardPass& pass, int layer, const backend::ExpertBatch& batch) = 0;
};

// A streamer's side of dense FFN matrices (src/tier/stream/dense_ffn_streamer.h): the matrices
// it serves, piece by piece, so that little memory holds the matrix being computed.
class FfnSource {
 public:
  virtual ~FfnSource() = default;
  virtual bool streams(int layer, FfnPart part) const = 0;
  // Starts handing out the row pieces of one matrix, first row first.
  virtual void begin(int layer, FfnPart part) = 0;
  // The next piece, waiting for its read; false once every piece was handed out.
  virtual bool next(WeightView& piece, int64_t& row0) = 0;
};

// A streamer's side of MoE experts (src/tier/stream/expert_streamer.h), with the protocol of
// WeightSource's experts. prefetch may be called at any time with a guess of a later layer's
// experts (distinct, most likely first); reads start if room allows, in that order, so that the
// least likely are the ones still unread (and dropped) when routing proves them wrong. replace:
// a later, better guess for the same layer; earlier guesses not in it are dropped where the disk
// has not read them yet.
class ExpertSource {
 public:
  virtual ~ExpertSource() = default;
  virtual bool streams(int layer) const = 0;
  virtual void begin_layer(int layer, const int32_t* experts, int n_experts, const int32_t* chosen, int n_tokens) = 0;
  virtual int next_ready(WeightView& gate, WeightView& up, WeightView& down) = 0;
  virtual void done(int expert) = 0;
  virtual void prefetch(int layer, const int32_t* experts, int n_experts, bool replace) = 0;
  // The policy that feeds prefetch from the forward pass, or null.
  virtual ForwardHook* hook() { return nullptr; }
};

}  // namespace strata
