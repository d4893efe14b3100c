#include "tier/stream/dense_ffn_streamer.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "util/error.h"

namespace strata::tier {

namespace {

constexpr uint64_t kAlign = 4096;             // O_DIRECT offset, length and buffer alignment

uint64_t align_down(uint64_t v) { return v / kAlign * kAlign; }
uint64_t align_up(uint64_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

double seconds(std::chrono::steady_clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

size_t DenseFfnStreamer::layer_ffn_bytes(const LayerWeights& L) {
  auto bytes = [](const WeightView& w) { return w.row_bytes * size_t(w.n_rows); };
  return bytes(L.w_gate) + bytes(L.w_up) + bytes(L.w_down);
}

DenseFfnStreamer::DenseFfnStreamer(const Model& model, std::vector<int> streamed_layers, int prefetch_depth)
    : model_(model), streamed_(std::move(streamed_layers)), depth_(std::max(1, prefetch_depth)) {
  const ModelConfig& c = model.config();
  if (c.n_expert > 0) throw Error("dense FFN streaming: " + model.file().path() + " is a mixture-of-experts model");
  std::sort(streamed_.begin(), streamed_.end());
  streamed_.erase(std::unique(streamed_.begin(), streamed_.end()), streamed_.end());
  for (int l : streamed_)
    if (l < 0 || l >= c.n_layer) throw Error("dense FFN streaming: layer " + std::to_string(l) + " does not exist");
  depth_ = std::min<int>(depth_, std::max<int>(1, int(streamed_.size()) - 1));

  // Where each streamed tensor lies in the file, and in a slot.
  const uint8_t* base = model.file().base();
  plans_.resize(size_t(c.n_layer));
  for (int l : streamed_) {
    const LayerWeights& L = model.weights().layers[size_t(l)];
    LayerPlan& plan = plans_[size_t(l)];
    uint64_t at = 0;
    for (auto [range, view] : {std::pair{&plan.gate, &L.w_gate}, {&plan.up, &L.w_up}, {&plan.down, &L.w_down}}) {
      const uint64_t offset = uint64_t(view->data - base);
      const uint64_t bytes = view->row_bytes * uint64_t(view->n_rows);
      range->aligned_offset = align_down(offset);
      range->aligned_bytes = align_up(offset + bytes) - range->aligned_offset;
      range->skip = offset - range->aligned_offset;
      range->slot_offset = at;
      at += range->aligned_bytes;
    }
    slot_bytes_ = std::max<size_t>(slot_bytes_, at);
  }

  if (!streamed_.empty()) {
    io::ReaderOptions options;
    options.piece_bytes = size_t(4) << 20;  // bulk reads: 4 MiB pieces, 16 in flight
    options.queue_depth = 16;
    reader_ = io::open_range_reader(model.file().path(), options);
    direct_io_ = reader_->direct();
  }

  if (!streamed_.empty()) {
    slots_.resize(size_t(depth_) + 1);
    for (Slot& s : slots_) {
      s.data = static_cast<uint8_t*>(std::aligned_alloc(kAlign, slot_bytes_));
      if (!s.data) throw Error("dense FFN streaming: cannot allocate a pool slot of " + std::to_string(slot_bytes_) + " bytes");
      buffers_.push_back(s.data);
    }
    io_thread_ = std::thread([this] { io_loop(); });
  }
}

DenseFfnStreamer::~DenseFfnStreamer() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  changed_.notify_all();
  if (io_thread_.joinable()) io_thread_.join();
  for (uint8_t* b : buffers_) std::free(b);
}

bool DenseFfnStreamer::streams(int layer) const { return position_of(layer) >= 0; }

int DenseFfnStreamer::position_of(int layer) const {
  auto it = std::lower_bound(streamed_.begin(), streamed_.end(), layer);
  return it != streamed_.end() && *it == layer ? int(it - streamed_.begin()) : -1;
}

DenseFfnStreamer::Slot* DenseFfnStreamer::find_slot(int layer) {
  for (Slot& s : slots_)
    if (s.layer == layer && s.state != SlotState::empty) return &s;
  return nullptr;
}

// A slot that may be overwritten: not in use, not being read, and not holding one of the
// layers about to be needed (positions upcoming_from .. upcoming_from + depth, cyclically).
DenseFfnStreamer::Slot* DenseFfnStreamer::claim_slot(int upcoming_from) {
  auto upcoming = [&](int layer) {
    const int pos = position_of(layer);
    if (pos < 0) return false;
    const int n = int(streamed_.size());
    const int ahead = ((pos - upcoming_from) % n + n) % n;
    return ahead <= depth_;
  };
  Slot* best = nullptr;
  for (Slot& s : slots_) {
    if (s.in_use || s.state == SlotState::loading) continue;
    if (s.state == SlotState::empty || s.state == SlotState::failed) return &s;
    if (!upcoming(s.layer)) best = &s;
  }
  return best;
}

void DenseFfnStreamer::schedule(Slot* slot, int layer) {
  slot->layer = layer;
  slot->state = SlotState::loading;
  slot->error.clear();
  queue_.push_back(slot);
  changed_.notify_all();
}

void DenseFfnStreamer::acquire(int layer, WeightView& gate, WeightView& up, WeightView& down) {
  const int pos = position_of(layer);
  if (pos < 0) throw Error("dense FFN streaming: layer " + std::to_string(layer) + " is not streamed");
  std::unique_lock<std::mutex> lock(mutex_);
  ++stats_.acquires;
  const auto t0 = std::chrono::steady_clock::now();
  Slot* slot = find_slot(layer);
  if (slot && slot->state == SlotState::ready) ++stats_.ready_hits;
  while (!slot) {
    // Not read ahead (first token, or after a jump): read it now, in the first free slot.
    Slot* free_slot = claim_slot(pos);
    if (free_slot) {
      schedule(free_slot, layer);
      slot = free_slot;
    } else {
      changed_.wait(lock);
      slot = find_slot(layer);
    }
  }
  // Read the next streamed layers while this one computes.
  const int n = int(streamed_.size());
  for (int ahead = 1; ahead <= depth_; ++ahead) {
    const int next = streamed_[size_t((pos + ahead) % n)];
    if (next == layer || find_slot(next)) continue;
    Slot* free_slot = claim_slot(pos);
    if (!free_slot || free_slot == slot) break;
    schedule(free_slot, next);
  }
  changed_.wait(lock, [&] { return slot->state != SlotState::loading; });
  stats_.wait_seconds += seconds(std::chrono::steady_clock::now() - t0);
  if (slot->state == SlotState::failed) {
    const std::string error = slot->error;
    slot->state = SlotState::empty;
    throw Error(error);
  }
  slot->in_use = true;
  const LayerWeights& L = model_.weights().layers[size_t(layer)];
  const LayerPlan& plan = plans_[size_t(layer)];
  gate = view_in(*slot, plan.gate, L.w_gate);
  up = view_in(*slot, plan.up, L.w_up);
  down = view_in(*slot, plan.down, L.w_down);
}

void DenseFfnStreamer::release(int layer) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (Slot& s : slots_)
      if (s.layer == layer) s.in_use = false;
  }
  changed_.notify_all();
}

WeightView DenseFfnStreamer::view_in(const Slot& slot, const Range& r, const WeightView& like) const {
  WeightView v = like;
  v.data = slot.data + r.slot_offset + r.skip;
  return v;
}

void DenseFfnStreamer::io_loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    changed_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    Slot* slot = queue_.front();
    queue_.pop_front();
    const int layer = slot->layer;
    lock.unlock();
    std::string error;
    const auto t0 = std::chrono::steady_clock::now();
    try {
      read_layer(*slot, layer);
    } catch (const std::exception& e) {
      error = e.what();
    }
    const double dt = seconds(std::chrono::steady_clock::now() - t0);
    lock.lock();
    stats_.read_seconds += dt;
    ++stats_.layer_loads;
    if (error.empty()) {
      slot->state = SlotState::ready;
      const LayerPlan& p = plans_[size_t(layer)];
      stats_.bytes_read += p.gate.aligned_bytes + p.up.aligned_bytes + p.down.aligned_bytes;
    } else {
      slot->state = SlotState::failed;
      slot->error = error;
    }
    changed_.notify_all();
  }
}

void DenseFfnStreamer::read_layer(const Slot& slot, int layer) {
  // Whole aligned ranges land at aligned places in the slot: the reader reads them directly.
  // The reader also refuses a file that changed or shrank since it was opened.
  const LayerPlan& plan = plans_[size_t(layer)];
  const uint64_t file_bytes = reader_->file_bytes();
  io::ReadRequest requests[3];
  int n = 0;
  for (const Range* r : {&plan.gate, &plan.up, &plan.down}) {
    // The aligned range of the file's last tensor may run past the end of the file.
    const uint64_t length = std::min(r->aligned_bytes, file_bytes - r->aligned_offset);
    requests[n++] = {r->aligned_offset, length, slot.data + r->slot_offset};
  }
  reader_->read(std::span<const io::ReadRequest>(requests, size_t(n)));
}

StreamStats DenseFfnStreamer::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

}  // namespace strata::tier
