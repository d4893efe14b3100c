#include "tier/stream/expert_streamer.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <thread>

#include "util/error.h"

namespace strata::tier {

namespace {

constexpr uint64_t kAlign = io::kDirectAlign;  // O_DIRECT offset, length and buffer alignment
constexpr uint64_t kPieceBytes = uint64_t{4} << 20;
// Reads in flight: enough to keep the disk busy (16 MiB is ~6 ms at 2.5 GB/s; 1 MiB reads at
// depth 16 and 4 MiB reads at depth 4 measure as fast here as deeper queues) and no more, since
// what the kernel has been given can no longer be cancelled when a guess proves wrong.
constexpr uint64_t kInFlightBytes = uint64_t{16} << 20;

// Expert e's rows of a stacked expert tensor.
WeightView slice_of(const WeightView& stacked, int n_expert, int e) {
  const int64_t rows = stacked.n_rows / n_expert;
  return stacked.rows(int64_t(e) * rows, rows);
}

}  // namespace

ExpertStreamer::ExpertStreamer(const Model& model, ExpertStreamerOptions options)
    : model_(model),
      options_(std::move(options)),
      n_layer_(model.config().n_layer),
      n_expert_(model.config().n_expert),
      routing_(model.config().n_layer, std::max(1, model.config().n_expert), std::max(1, model.config().n_expert_used)),
      guesser_(model.config(), this, options_.look_ahead) {
  if (n_expert_ <= 0) throw Error("expert streaming: " + model.file().path() + " is not a mixture-of-experts model");
  layer_streams_.assign(size_t(n_layer_), false);
  for (int l = 0; l < n_layer_; ++l) layer_streams_[size_t(l)] = !model.weights().layers[size_t(l)].gate_exps.empty();
  for (int l = n_layer_ - 1; l >= 0; --l)
    if (layer_streams_[size_t(l)]) first_layer_ = l;
  if (!(options_.lfu_decay > 0 && options_.lfu_decay <= 1))
    throw Error("expert streaming: lfu_decay " + std::to_string(options_.lfu_decay) + " outside (0, 1]");
  std::vector<bool> pinned(size_t(n_layer_) * n_expert_, false);  // [layer x expert]
  if (!options_.pinned.empty() && options_.pinned.size() != size_t(n_layer_))
    throw Error("expert streaming: pinned experts for " + std::to_string(options_.pinned.size()) +
                " layers, the model has " + std::to_string(n_layer_));
  int n_pinned = 0;
  for (size_t l = 0; l < options_.pinned.size(); ++l)
    for (int e : options_.pinned[l]) {
      if (e < 0 || e >= n_expert_ || !layer_streams_[l])
        throw Error("expert streaming: no expert " + std::to_string(e) + " in layer " + std::to_string(l));
      if (!pinned[key(int(l), e)]) ++n_pinned;
      pinned[key(int(l), e)] = true;
    }

  // Slot sizes: a layer's experts all need the same (up to a page of alignment), but layers
  // differ in type (Q4_K_M makes some layers' ffn_down_exps Q6_K). A pinned expert's slot fits
  // its own layer; pool slots fit the largest.
  layer_slot_bytes_.assign(size_t(n_layer_), 0);
  const uint8_t* base = model.file().base();
  for (int l = 0; l < n_layer_; ++l) {
    if (!layer_streams_[size_t(l)]) continue;
    const LayerWeights& L = model.weights().layers[size_t(l)];
    const WeightView* stacked[3] = {&L.gate_exps, &L.up_exps, &L.down_exps};
    uint64_t offset[3], slice[3];
    for (int i = 0; i < 3; ++i) {
      offset[i] = uint64_t(stacked[i]->data - base);
      slice[i] = stacked[i]->row_bytes * uint64_t(stacked[i]->n_rows / n_expert_);
    }
    layer_slot_bytes_[size_t(l)] = layer_slot_bytes(offset, slice, n_expert_, model.file().file_size());
    slot_bytes_ = std::max(slot_bytes_, layer_slot_bytes_[size_t(l)]);
  }
  std::vector<uint64_t> capacity;
  for (int l = 0; l < n_layer_; ++l)
    for (int e = 0; e < n_expert_; ++e)
      if (pinned[key(l, e)]) capacity.push_back(layer_slot_bytes_[size_t(l)]);
  capacity.insert(capacity.end(), size_t(std::max(1, options_.n_pool_slots)), slot_bytes_);
  const uint64_t total = memory_bytes_for(layer_slot_bytes_, options_.pinned, options_.n_pool_slots);
  io::ReaderOptions ro;
  ro.piece_bytes = kPieceBytes;
  const uint64_t piece = std::min(kPieceBytes, std::max<uint64_t>(kAlign, slot_bytes_ / 3));  // a slot holds 3 ranges
  ro.queue_depth =
      options_.queue_depth > 0 ? options_.queue_depth : int(std::clamp<uint64_t>(kInFlightBytes / piece, 4, 32));
  core_ = std::make_unique<StreamCore>(model.file().path(), total, ro, "expert streaming");
  const int n_slots = int(capacity.size());
  slots_.resize(size_t(n_slots));
  uint64_t at = 0;
  for (int i = 0; i < n_slots; ++i) {
    slots_[size_t(i)].data = core_->arena() + at;
    at += capacity[size_t(i)];
  }
  cache_ = std::make_unique<ExpertCache>(n_layer_, n_expert_, std::move(capacity),
                                         ExpertCacheOptions{.policy = options_.policy,
                                                            .lfu_decay = options_.lfu_decay,
                                                            .guessed_use_weight = options_.guessed_use_weight,
                                                            .protect_guesses = options_.protect_guesses});
  cache_->set_named(pinned);
  stats_.slot_bytes = slot_bytes_;
  if (!options_.stats_path.empty()) routing_.load(options_.stats_path);

  // Start warm: the pinned experts are read now, all at once, each into the slot sized for it.
  int next = 0;
  for (int l = 0; l < n_layer_; ++l)
    for (int e = 0; e < n_expert_; ++e)
      if (pinned[key(l, e)]) load(next++, l, e, ExpertCache::Put::start);
  for (int i = 0; i < n_slots; ++i)
    if (slots_[size_t(i)].state == State::loading) finish(i);
  stats_.preload_bytes = stats_.bytes_read;
  publish(true);
}

ExpertStreamer::~ExpertStreamer() = default;  // the core drains: no read lands in freed memory

bool ExpertStreamer::streams(int layer) const {
  return layer >= 0 && layer < n_layer_ && layer_streams_[size_t(layer)];
}

namespace {

// The aligned read of expert e's slice of a stacked tensor at `offset` with slices of `slice`.
AlignedRange expert_range(uint64_t offset, uint64_t slice, int e, uint64_t file_bytes) {
  return aligned_range(offset + uint64_t(e) * slice, slice, file_bytes);
}

}  // namespace

uint64_t ExpertStreamer::layer_slot_bytes(const uint64_t offset[3], const uint64_t slice_bytes[3], int n_expert,
                                          uint64_t file_bytes) {
  uint64_t most = 0;
  for (int e = 0; e < n_expert; ++e) {
    uint64_t at = 0;
    for (int i = 0; i < 3; ++i) at += expert_range(offset[i], slice_bytes[i], e, file_bytes).span_bytes;
    most = std::max(most, at);
  }
  return most;
}

uint64_t ExpertStreamer::memory_bytes_for(const std::vector<uint64_t>& layer_slot_bytes,
                                          const std::vector<std::vector<int>>& pinned, int n_pool_slots) {
  uint64_t largest = 0, total = 0;
  for (uint64_t b : layer_slot_bytes) largest = std::max(largest, b);
  for (size_t l = 0; l < pinned.size() && l < layer_slot_bytes.size(); ++l) {
    std::vector<int> distinct = pinned[l];
    std::sort(distinct.begin(), distinct.end());
    distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
    total += layer_slot_bytes[l] * distinct.size();
  }
  return total + largest * uint64_t(std::max(1, n_pool_slots));
}

void ExpertStreamer::layout(int layer, int expert, Range out[3]) const {
  const LayerWeights& L = model_.weights().layers[size_t(layer)];
  const uint8_t* base = model_.file().base();
  const uint64_t file_bytes = model_.file().file_size();
  uint64_t at = 0;
  const WeightView* stacked[3] = {&L.gate_exps, &L.up_exps, &L.down_exps};
  for (int i = 0; i < 3; ++i) {
    const uint64_t slice = stacked[i]->row_bytes * uint64_t(stacked[i]->n_rows / n_expert_);
    const AlignedRange a = expert_range(uint64_t(stacked[i]->data - base), slice, expert, file_bytes);
    Range& r = out[i];
    r.file_offset = a.file_offset;
    r.length = a.read_bytes;
    r.skip = a.skip;
    r.slot_offset = at;
    at += a.span_bytes;
  }
}

uint64_t ExpertStreamer::read_bytes(const Range r[3]) { return r[0].length + r[1].length + r[2].length; }

uint64_t ExpertStreamer::read_bytes(int layer, int expert) const {
  Range r[3];
  layout(layer, expert, r);
  return read_bytes(r);
}

// A slot large enough for `layer`'s experts to read into, emptied: the cache's victim (-1: none
// now, wait for one).
int ExpertStreamer::claim_slot(int layer, bool for_prefetch) {
  const int best = cache_->victim(layer_slot_bytes_[size_t(layer)], for_prefetch);
  if (best >= 0) evict(best);
  return best;
}

void ExpertStreamer::evict(int i) {
  Slot& s = slots_[size_t(i)];
  if (s.state == State::empty) return;
  // Its bytes must land before the slot is reused; a failed read is dropped with the slot.
  if (s.state == State::loading) core_->wait_quietly(s.ticket);
  if (cache_->slot(i).guess) ++stats_.prefetch_wasted;
  cache_->clear(i);
  s = Slot{.data = s.data};
}

// Guesses for `layer` that routing (or a better guess) did not confirm are worth nothing more
// than a cached expert, and the part the disk has not read yet is worth less than the reads
// queued behind it. Their remaining reads are dropped; the slot is reused once the reads in
// flight land. A guess read whole stays as a cached expert.
void ExpertStreamer::drop_guesses_but(int layer, const int32_t* keep, int n_keep) {
  for (int i = 0; i < int(slots_.size()); ++i) {
    Slot& s = slots_[size_t(i)];
    const ExpertCache::Slot& c = cache_->slot(i);
    if (c.layer != layer || !c.guess || c.wanted || s.state != State::loading) continue;
    if (std::find(keep, keep + n_keep, c.expert) != keep + n_keep) continue;
    const uint64_t dropped = core_->cancel(s.ticket);
    if (dropped == 0) continue;
    stats_.bytes_read -= dropped;
    ++stats_.prefetch_wasted;
    ++stats_.prefetch_dropped;
    cache_->drop(i);
  }
}

void ExpertStreamer::load(int i, int layer, int expert, ExpertCache::Put why) {
  if (i < 0) throw Error("expert streaming: no free slot for expert " + std::to_string(expert));
  Slot& s = slots_[size_t(i)];
  Range r[3];
  layout(layer, expert, r);
  io::ReadRequest req[3];
  for (int j = 0; j < 3; ++j) req[j] = {r[j].file_offset, r[j].length, s.data + r[j].slot_offset};
  stats_.bytes_read += read_bytes(r);
  s.ticket = core_->submit(std::span<const io::ReadRequest>(req, 3));
  s.state = State::loading;
  cache_->put(i, layer, expert, why);
  ++stats_.loads;
}

void ExpertStreamer::finish(int i) {
  Slot& s = slots_[size_t(i)];
  if (s.state != State::loading) return;
  try {
    core_->wait(s.ticket);
  } catch (const Error& e) {
    cache_->clear(i);
    s = Slot{.data = s.data};
    throw Error(std::string("expert streaming: ") + e.what());
  }
  s.state = State::ready;
}

void ExpertStreamer::begin_layer(int layer, const int32_t* experts, int n_experts, const int32_t* chosen,
                                 int n_tokens) {
  if (!streams(layer)) throw Error("expert streaming: layer " + std::to_string(layer) + " has no experts");
  routing_.record(layer, chosen, n_tokens);
  cache_->begin_layer(layer);  // clears the marks of a layer abandoned by an exception
  layer_ = layer;
  want_.clear();
  for (int i = 0; i < n_experts; ++i) {
    const int e = experts[i];
    ++stats_.needed;
    const int slot = cache_->find(layer, e);
    if (slot >= 0) {
      if (cache_->confirm(slot)) {
        ++stats_.prefetch_hits;
        stats_.needed_bytes += read_bytes(layer, e);
      } else {
        ++stats_.cache_hits;
      }
    } else {
      ++stats_.misses;
      stats_.needed_bytes += read_bytes(layer, e);
    }
    want_.push_back(e);
    cache_->record_use(layer, e);
  }
  drop_guesses_but(layer, experts, n_experts);
  schedule_wanted();
  cache_->age();
  publish(layer == first_layer_);  // slot counts once per token
}

// Reads every wanted expert that has no slot yet, as far as slots allow.
void ExpertStreamer::schedule_wanted() {
  for (int e : want_) {
    if (cache_->find(layer_, e) >= 0) continue;
    const int slot = claim_slot(layer_, false);
    if (slot < 0) return;
    load(slot, layer_, e, ExpertCache::Put::routed);
  }
}

int ExpertStreamer::next_ready(WeightView& gate, WeightView& up, WeightView& down) {
  while (!want_.empty()) {
    schedule_wanted();
    // Prefer an expert in memory; otherwise wait for the one requested first.
    int pick = -1, oldest = -1;
    for (size_t i = 0; i < want_.size() && pick < 0; ++i) {
      const int slot = cache_->find(layer_, want_[i]);
      if (slot < 0) continue;
      const Slot& s = slots_[size_t(slot)];
      if (s.state == State::ready || core_->ready(s.ticket))
        pick = int(i);
      else if (oldest < 0 || s.ticket < slots_[size_t(cache_->find(layer_, want_[size_t(oldest)]))].ticket)
        oldest = int(i);
    }
    if (pick < 0 && oldest < 0) throw Error("expert streaming: every expert slot is busy");  // n_slots >= 1 prevents it
    const auto t0 = std::chrono::steady_clock::now();
    if (pick < 0) pick = oldest;
    const int e = want_[size_t(pick)];
    const int slot = cache_->find(layer_, e);
    finish(slot);
    stats_.wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    want_.erase(want_.begin() + pick);
    const Slot& s = slots_[size_t(slot)];
    cache_->hand_out(slot);
    Range r[3];
    layout(layer_, e, r);
    const LayerWeights& L = model_.weights().layers[size_t(layer_)];
    WeightView* outs[3] = {&gate, &up, &down};
    const WeightView* stacked[3] = {&L.gate_exps, &L.up_exps, &L.down_exps};
    for (int j = 0; j < 3; ++j) {
      *outs[j] = slice_of(*stacked[j], n_expert_, e);
      outs[j]->data = s.data + r[j].slot_offset + r[j].skip;
    }
    return e;
  }
  publish(false);  // the layer's waits
  return -1;
}

void ExpertStreamer::done(int expert) {
  if (layer_ < 0) return;
  const int slot = cache_->find(layer_, expert);
  if (slot >= 0) cache_->release(slot);
}

void ExpertStreamer::prefetch(int layer, const int32_t* experts, int n_experts, bool replace) {
  if (!streams(layer)) return;
  for (int i = 0; i < n_experts; ++i)  // the look-ahead's guesses, for lfu's count of their uses
    if (experts[i] >= 0 && experts[i] < n_expert_) cache_->note_guess(layer, experts[i]);
  if (replace) drop_guesses_but(layer, experts, n_experts);
  // While the current layer still waits for slots, its misses come first.
  for (int e : want_)
    if (cache_->find(layer_, e) < 0) return;
  guess_.assign(experts, experts + n_experts);
  if (options_.co_predict && layer == layer_ + 1) {
    // Second predictor: experts that followed this layer's in earlier tokens.
    // want_ may already be partly handed out: rebuild the current experts from the index.
    std::vector<int32_t>& now = now_;
    now.clear();
    for (int e = 0; e < n_expert_; ++e) {
      const int slot = cache_->find(layer_, e);
      if (slot >= 0 && (cache_->slot(slot).wanted || cache_->slot(slot).in_use)) now.push_back(e);
    }
    const int k = model_.config().n_expert_used;
    const size_t before = guess_.size();
    guess_.resize(before + size_t(k));
    const int n = routing_.predict_next(layer_, now.data(), int(now.size()), (k + 1) / 2, guess_.data() + before);
    guess_.resize(before + size_t(n));
  }
  for (int32_t e : guess_) {
    if (e < 0 || e >= n_expert_) continue;
    if (const int cached = cache_->find(layer, e); cached >= 0) {
      cache_->guard(cached);  // kept for the layer it was guessed for
      continue;
    }
    const int slot = claim_slot(layer, true);
    if (slot < 0) return;
    load(slot, layer, e, ExpertCache::Put::guess);
    ++stats_.prefetch_issued;
  }
}

void ExpertStreamer::settle() {
  for (const Slot& s : slots_)
    while (s.state == State::loading && !core_->ready(s.ticket)) std::this_thread::yield();
}

void ExpertStreamer::repin(const std::vector<std::vector<int>>& pinned) {
  if (options_.policy == ExpertCachePolicy::lfu) return;
  std::vector<bool> next(size_t(n_layer_) * n_expert_, false);
  size_t count = 0, before = 0;
  for (int l = 0; l < n_layer_; ++l)
    for (int e = 0; e < n_expert_; ++e) before += cache_->named(l, e);
  for (size_t l = 0; l < pinned.size() && l < size_t(n_layer_); ++l)
    for (int e : pinned[l])
      if (e >= 0 && e < n_expert_ && layer_streams_[l] && !next[key(int(l), e)]) {
        next[key(int(l), e)] = true;
        ++count;
      }
  if (count > before) throw Error("expert streaming: a revised plan may not pin more experts than the slots hold");
  // Newly pinned experts are read when next needed and then stay.
  cache_->set_named(std::move(next));
}

void ExpertStreamer::publish(bool count_slots) {
  ExpertStats s = stats_;
  s.slots = int(slots_.size());
  if (count_slots) {
    s.pinned_slots = s.occupied_slots = 0;
    for (int i = 0; i < int(slots_.size()); ++i) {
      if (slots_[size_t(i)].state == State::empty) continue;
      ++s.occupied_slots;
      if (cache_->holds_named(i)) ++s.pinned_slots;
    }
    stats_.pinned_slots = s.pinned_slots;
    stats_.occupied_slots = s.occupied_slots;
  }
  published_.publish(s);
}

ExpertStats ExpertStreamer::stats() const {
  ExpertStats s = published_.get();
  s.idle_seconds = core_->idle_seconds();
  return s;
}

void ExpertStreamer::save_stats() const {
  if (!options_.stats_path.empty()) routing_.save(options_.stats_path);
}

}  // namespace strata::tier
