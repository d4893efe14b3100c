#pragma once
// The expert cache's policy: which expert (of which layer) each slot holds, and which slot gives
// its expert up when another must come in. Bookkeeping only: no I/O and no buffers. Its owner
// keeps slot i's bytes wherever it keeps them (ExpertStreamer: RAM read from the SSD; a VRAM
// tier: device memory), says what it put in a slot and what routing used, and asks for a victim.
//
// Policies (ExpertCachePolicy):
//   lfu        (default) every slot is the cache's: the plan's experts are only its first
//              content, and the expert least used goes first, each use weighing 1/decay times the
//              one made a layer before (ageing). Look-ahead aware (ExpertCacheOptions): a use the
//              router's look-ahead guessed counts a quarter, so the cache keeps the experts the
//              look-ahead misses, and a cached expert guessed for the next layer stays until it
//              runs. On the trained model's traces at 25 % of the experts this has 92.5 / 94.5 /
//              94.2 % of the experts in memory when routed to (code / prose / chat), 96 / 97 /
//              96 % of the bound of any policy reading the same guesses (belady+guess); the
//              plain lfu reading them 87.4 / 91.4 / 90.8 %; without guesses it is plain lfu,
//              the best of the simple cache-only policies (bench/routing_replay.py).
//              tests/tier/expert_policy_test.cpp and expert_cache_test.cpp hold it equal to the
//              replayer's `lfu` and `lfu+lookahead` on committed traces.
//   pinned_lru the plan's experts (named) never leave; the other slots are least recently used
//              first out.
// Never evicted: an expert the current layer routed to and has not handed out, or one handed out
// and not released, or a guarded one. A guess for a layer still to come is not evicted for
// another guess.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace strata::tier {

enum class ExpertCachePolicy { lfu, pinned_lru };

struct ExpertCacheOptions {
  ExpertCachePolicy policy = ExpertCachePolicy::lfu;
  // lfu's ageing, in (0, 1]: each layer's uses weigh 1/lfu_decay times the previous layer's.
  // 0.995 (about 0.96 a token on an 8-layer model) was the best of 0.9..1 on the traces.
  double lfu_decay = 0.995;
  // Look-ahead aware (both only act on the guesses the owner notes, note_guess / guard): lfu
  // counts a use the look-ahead guessed at guessed_use_weight of an unguessed one, so that the
  // cache keeps the experts the look-ahead misses (a guessed one is read ahead anyway), and a
  // cached expert guessed for the next layer is not evicted before that layer runs. 0.25 and on
  // were the best of 0 / 0.25 / 0.5 / 1 (bench/routing_replay.py: lfu+lookahead).
  double guessed_use_weight = 0.25;
  bool protect_guesses = true;
};

class ExpertCache {
 public:
  struct Slot {
    uint64_t capacity = 0;        // bytes: an expert fits if its size is no more
    int layer = -1, expert = -1;  // the expert it holds; -1: none (free, or a dropped read landing)
    uint64_t last_use = 0;        // the clock at its last put or hand-out
    bool guess = false;           // put there on a guess, not routed to yet
    bool wanted = false;          // routed to by the current layer, not handed out yet
    bool in_use = false;          // handed out, not released yet
    bool guarded = false;         // guessed for the next layer while cached (protect_guesses)
  };
  enum class Put { start, routed, guess };  // why an expert is put in a slot

  // capacity: one entry per slot. Throws strata::Error on a bad argument.
  ExpertCache(int n_layer, int n_expert, std::vector<uint64_t> capacity, ExpertCacheOptions options = {});

  ExpertCachePolicy policy() const { return options_.policy; }
  int n_slots() const { return int(slots_.size()); }
  const Slot& slot(int i) const { return slots_[size_t(i)]; }
  int find(int layer, int expert) const { return index_[key(layer, expert)]; }  // its slot, or -1

  // The plan's experts ([layer x expert] flags). pinned_lru keeps them; lfu only counts them.
  void set_named(std::vector<bool> named);
  bool named(int layer, int expert) const { return named_[key(layer, expert)]; }
  bool holds_named(int i) const;   // slot i holds one of the plan's experts
  bool holds_pinned(int i) const;  // ... and the policy keeps it (pinned_lru)

  // A layer begins: its routing replaces the previous layer's wanted, handed-out and guarded
  // marks, and the guesses noted for it are the ones its uses are checked against.
  void begin_layer(int layer);
  int layer() const { return layer_; }
  void record_use(int layer, int expert);  // routing chose it (lfu's count)
  void age();                              // after a layer's uses: the next layer's weigh more
  // The look-ahead guessed `expert` for `layer` (the next to begin): its use there counts at
  // guessed_use_weight. Notes for another layer than the last noted are dropped.
  void note_guess(int layer, int expert);
  // Slot i's expert was guessed for the next layer: kept until that layer begins
  // (protect_guesses; nothing otherwise).
  void guard(int i);

  // The slot to give up for an expert of `need` bytes, not yet evicted; -1: none now (all busy,
  // or only pinned experts where another slot could hold it once free). Order: a slot holding
  // nothing, then the policy's choice (lfu: the lowest aged score, ties to the smaller slot, then
  // the lower layer and expert; pinned_lru: the smaller slot, then the least recently used, a
  // guess for a layer already past after the cached experts), then (not for a guess) a live
  // guess, then a pinned expert.
  // Guarded slots are never victims.
  int victim(uint64_t need, bool for_guess) const;

  // Content changes: the owner moves the bytes and tells the cache.
  void put(int i, int layer, int expert, Put why);  // slot i (emptied) now holds the expert
  void clear(int i);                                // slot i holds nothing
  void drop(int i);      // slot i's expert is forgotten; the slot keeps its age (a dropped read lands)
  bool confirm(int i);   // routing asks for slot i's expert; true: it was a guess
  void hand_out(int i);  // given to compute
  void release(int i);   // compute is done with it

 private:
  size_t key(int layer, int expert) const { return size_t(layer) * size_t(n_expert_) + size_t(expert); }
  bool holds_pinned(const Slot& s) const;

  int n_expert_;
  ExpertCacheOptions options_;
  std::vector<Slot> slots_;
  std::vector<int> index_;         // [layer x expert] -> slot, or -1
  std::vector<bool> named_;        // [layer x expert]
  std::vector<double> use_score_;  // [layer x expert]: lfu's aged count of uses
  double use_weight_ = 1;          // what the next use adds
  uint64_t clock_ = 0;
  int layer_ = -1;                     // the layer routed last
  int noted_layer_ = -1;               // the layer the noted guesses are for
  std::vector<bool> noted_, guessed_;  // [expert]: guessed for noted_layer_; for layer_
};

}  // namespace strata::tier
