#pragma once
// MoE expert streaming: an expert cache of fixed slots, each holding one expert's slices of
// ffn_{gate,up,down}_exps of one layer, read from the model file with O_DIRECT (exactly the
// slices' aligned byte ranges; the file is never rewritten). The plan names experts to keep
// resident: each gets a slot sized for its own layer's experts and is read at start; the pool
// slots beyond them are sized for the largest expert. Which expert leaves a slot is the policy's
// (ExpertCache, tier/stream/expert_cache.h: lfu by default, or pinned_lru); this class holds
// the slots' bytes and the reads into them.
// After routing every missing expert of the layer is requested at once; the experts already in
// memory compute while the others arrive. The next layer's experts are prefetched from a guess
// (its router on the current hidden state, tier/expert_guess.h, plus co-activation statistics).
// Everything runs on the forward thread; only the reader works in the background, so nothing
// here locks. Bytes are the file's own: results are bit-identical to a resident run.
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "model/model.h"
#include "model/weight_source.h"
#include "tier/expert_guess.h"
#include "tier/io/aligned_buffer.h"
#include "tier/io/reader.h"
#include "tier/stream/expert_cache.h"
#include "tier/stream/routing_stats.h"
#include "tier/stream/stream_core.h"

namespace strata::tier {

struct ExpertStreamerOptions {
  // Per layer, the experts the plan keeps resident (read at construction). Empty: none. Under
  // lfu they are the cache's first content and may leave like any other.
  std::vector<std::vector<int>> pinned;
  ExpertCachePolicy policy = ExpertCachePolicy::lfu;
  // lfu's ageing: the weight of a use grows by 1/lfu_decay per layer routed (one begin_layer).
  // 0.995 (about 0.96 a token on an 8-layer model) was the best of 0.9..1 on the traces.
  double lfu_decay = 0.995;
  // Look-ahead aware lfu (ExpertCacheOptions): a use the router's look-ahead guessed counts at
  // this fraction, and cached experts guessed for the next layer are kept until it runs.
  double guessed_use_weight = ExpertCacheOptions{}.guessed_use_weight;
  bool protect_guesses = ExpertCacheOptions{}.protect_guesses;
  int n_pool_slots = 2;  // slots beyond the pinned ones (at least 1)
  // The two guessers of the next layer's experts, each read ahead when on. On the trained model
  // (bench/routing_guess_bench.py) the look-ahead turns most blocking misses into reads
  // overlapped with compute; co-activation adds little beside it.
  bool look_ahead = true;  // the next layer's router applied to the current hidden state (ExpertGuesser)
  bool co_predict = true;  // experts that followed this layer's in earlier tokens (RoutingStats)
  std::string stats_path;  // routing statistics loaded at start and saved by save_stats(); "": none
  int queue_depth = 0;     // reads in flight; 0: about 16 MiB of them (see expert_streamer.cpp)
};

struct ExpertStats {
  uint64_t needed = 0;            // expert slices routing asked for (distinct per layer and batch)
  uint64_t cache_hits = 0;        // ... already in memory (pinned, or kept from an earlier read)
  uint64_t prefetch_hits = 0;     // ... in memory or in flight because a prefetch asked for them
  uint64_t misses = 0;            // ... read after routing
  uint64_t prefetch_issued = 0;   // slices read on a guess
  uint64_t prefetch_wasted = 0;   // ... evicted without being used
  uint64_t prefetch_dropped = 0;  // ... of which stopped before the disk had read them whole
  uint64_t loads = 0;             // slices read (start-up, misses and prefetches)
  uint64_t bytes_read = 0;        // from the SSD, alignment padding included
  uint64_t preload_bytes = 0;     // of which read at start for the pinned experts
  uint64_t needed_bytes = 0;      // ... for slices routing asked for that were not in the cache (misses and
                                  // confirmed guesses): what had to be read at the cache's hit rate
  double wait_seconds = 0;        // compute blocked on reads
  double idle_seconds = 0;        // the disk with nothing to read from this streamer
  int slots = 0, pinned_slots = 0, occupied_slots = 0;
  uint64_t slot_bytes = 0;
};

class ExpertStreamer : public ExpertSource {
 public:
  ExpertStreamer(const Model& model, ExpertStreamerOptions options);
  ~ExpertStreamer() override;

  bool streams(int layer) const override;
  void begin_layer(int layer, const int32_t* experts, int n_experts, const int32_t* chosen, int n_tokens) override;
  int next_ready(WeightView& gate, WeightView& up, WeightView& down) override;
  void done(int expert) override;
  void prefetch(int layer, const int32_t* experts, int n_experts, bool replace) override;
  // The guesses of the next layer (tier/expert_guess.h) feed prefetch: the router's with
  // look_ahead, and the call that adds co-activation's with co_predict; null with neither.
  ForwardHook* hook() override { return options_.look_ahead || options_.co_predict ? &guesser_ : nullptr; }

  // pinned_lru: keeps these experts resident from now on (a revised plan); same count as before
  // at most. Under lfu nothing: the plan's experts were only the first content, and the cache
  // follows routing by itself.
  void repin(const std::vector<std::vector<int>>& pinned);
  ExpertCachePolicy policy() const { return options_.policy; }

  // Blocks until every read in flight has landed (slots and statistics stay as they are), so
  // that what follows does not depend on the disk's timing: a guess is only dropped before its
  // read began (tests replaying a trace against bench/routing_replay.py).
  void settle();

  // A snapshot taken between layers; safe to call from any thread (the server's /metrics).
  ExpertStats stats() const;
  const RoutingStats& routing() const { return routing_; }
  void save_stats() const;  // to options.stats_path, if any
  bool direct_io() const { return core_->direct_io(); }
  uint64_t memory_bytes() const { return core_->arena_bytes(); }

  // --- What the streamer allocates, for the planner (the constructor uses the same functions).
  // One expert's slot in a layer whose stacked expert tensors (gate, up, down) start at the file
  // offsets `offset` with per-expert slices of `slice_bytes`: the largest, over its experts, of
  // the three page-aligned read ranges (clipped at the end of a file of file_bytes).
  static uint64_t layer_slot_bytes(const uint64_t offset[3], const uint64_t slice_bytes[3], int n_expert,
                                   uint64_t file_bytes);
  // The slot memory for these per-layer slot sizes: a slot of its layer's size per pinned
  // expert, and n_pool_slots (at least 1) of the largest.
  static uint64_t memory_bytes_for(const std::vector<uint64_t>& layer_slot_bytes,
                                   const std::vector<std::vector<int>>& pinned, int n_pool_slots);

 private:
  struct Range {
    uint64_t file_offset = 0;  // 4096-aligned
    uint64_t length = 0;       // 4096-aligned (clamped at the end of the file)
    uint64_t skip = 0;         // slice start within the range
    uint64_t slot_offset = 0;  // where the range lands in a slot
  };
  enum class State { empty, loading, ready };
  // Slot i's bytes; what it holds, and the policy's marks, are cache_.slot(i).
  struct Slot {
    uint8_t* data = nullptr;
    State state = State::empty;
    io::Ticket ticket = 0;
    // A slot holding no expert (cache_: layer -1) in state loading holds a dropped guess: its
    // remaining reads were cancelled, the ones in flight must land before the slot is reused,
    // its data is partial.
  };

  size_t key(int layer, int expert) const { return size_t(layer) * size_t(n_expert_) + size_t(expert); }
  void layout(int layer, int expert, Range out[3]) const;
  uint64_t read_bytes(int layer, int expert) const;  // one load's bytes from the SSD
  static uint64_t read_bytes(const Range r[3]);
  int claim_slot(int layer, bool for_prefetch);
  void load(int slot, int layer, int expert, ExpertCache::Put why);
  void finish(int slot);  // waits for the slot's read; frees the slot and rethrows on error
  void evict(int slot);
  void drop_guesses_but(int layer, const int32_t* keep, int n_keep);
  void schedule_wanted();
  void publish(bool count_slots);  // copies stats_ into the snapshot stats() returns

  const Model& model_;
  ExpertStreamerOptions options_;
  int n_layer_, n_expert_;
  std::vector<bool> layer_streams_;
  int first_layer_ = 0;  // the first layer with experts
  std::vector<Slot> slots_;
  std::unique_ptr<ExpertCache> cache_;      // which expert each slot holds; the victims
  uint64_t slot_bytes_ = 0;                 // a pool slot: the largest expert of any layer
  std::vector<uint64_t> layer_slot_bytes_;  // per layer: its experts' slot size
  std::unique_ptr<StreamCore> core_;        // its arena holds every slot, one after another
  RoutingStats routing_;

  int layer_ = -1;                    // the layer between begin_layer and the last next_ready
  std::vector<int> want_;             // its experts not handed out yet
  std::vector<int32_t> guess_, now_;  // scratch for prefetch (kept, so nothing allocates per token)
  ExpertGuesser guesser_;
  ExpertStats stats_;
  StatsSnapshot<ExpertStats> published_;
};

}  // namespace strata::tier
