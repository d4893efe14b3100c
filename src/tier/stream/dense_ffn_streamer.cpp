#include "tier/stream/dense_ffn_streamer.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "tier/io/aligned_buffer.h"
#include "util/error.h"

namespace strata::tier {

using io::align_down;
using io::align_up;
using io::kDirectAlign;

std::vector<StreamedMatrix> DenseFfnStreamer::whole_layers(const std::vector<int>& layers) {
  std::vector<StreamedMatrix> out;
  for (int l : layers)
    for (FfnPart part : kFfnParts) out.push_back({l, part});
  return out;
}

std::vector<StreamedMatrix> DenseFfnStreamer::whole_layers(const ModelConfig& c, const std::vector<int>& layers) {
  std::vector<StreamedMatrix> out;
  for (int l : layers) {
    if (!c.is_moe_layer(l))
      for (FfnPart part : kFfnParts) out.push_back({l, part});
    else if (c.has_shared_expert)
      for (FfnPart part : kSharedExpertParts) out.push_back({l, part});
  }
  return out;
}

size_t DenseFfnStreamer::ring_bytes_for(size_t ring_bytes, uint64_t max_piece_span) {
  // At least one piece computing and one reading.
  return size_t(align_up(std::max<uint64_t>(ring_bytes, 2 * max_piece_span), kDirectAlign));
}

DenseFfnStreamer::DenseFfnStreamer(const Model& model, std::vector<StreamedMatrix> matrices, size_t ring_bytes,
                                   size_t piece_bytes)
    : model_(model), matrices_(std::move(matrices)) {
  const ModelConfig& c = model.config();
  const std::string& path = model.file().path();
  auto order = [](const StreamedMatrix& m) { return m.layer * kNumFfnParts + int(m.part); };
  std::sort(matrices_.begin(), matrices_.end(), [&](auto& a, auto& b) { return order(a) < order(b); });
  matrices_.erase(
      std::unique(matrices_.begin(), matrices_.end(), [&](auto& a, auto& b) { return order(a) == order(b); }),
      matrices_.end());
  matrix_of_.assign(size_t(c.n_layer) * kNumFfnParts, -1);

  // Every matrix cut into pieces of whole rows, each read as its 4096-aligned superset.
  const uint8_t* base = model.file().base();
  const uint64_t file_bytes = model.file().file_size();
  uint64_t max_span = 0;
  for (size_t m = 0; m < matrices_.size(); ++m) {
    const StreamedMatrix& sm = matrices_[m];
    if (sm.layer < 0 || sm.layer >= c.n_layer)
      throw Error("dense FFN streaming: layer " + std::to_string(sm.layer) + " does not exist");
    const WeightView& w = ffn_weight(model.weights().layers[size_t(sm.layer)], sm.part);
    if (w.n_rows <= 0 || !w.data)
      throw Error("dense FFN streaming: layer " + std::to_string(sm.layer) + " has no such FFN matrix");
    matrix_of_[size_t(order(sm))] = int(m);
    first_piece_.push_back(int(pieces_.size()));
    const uint64_t offset = uint64_t(w.data - base);
    const int64_t step = stream_piece_rows(w.row_bytes, w.n_rows, piece_bytes);
    for (int64_t r0 = 0; r0 < w.n_rows; r0 += step) {
      Piece p;
      p.matrix = int(m);
      p.row0 = r0;
      p.n_rows = std::min(step, w.n_rows - r0);
      const AlignedRange range = aligned_range(offset + uint64_t(r0) * w.row_bytes, uint64_t(p.n_rows) * w.row_bytes,
                                               file_bytes);
      p.file_offset = range.file_offset;
      p.span_bytes = range.span_bytes;
      p.read_bytes = range.read_bytes;
      p.skip = range.skip;
      if (!pieces_.empty()) {
        const Piece& prev = pieces_.back();
        p.shares_head = prev.span_bytes > kDirectAlign && p.span_bytes > kDirectAlign &&
                        p.file_offset + kDirectAlign == prev.file_offset + prev.span_bytes;
      }
      max_span = std::max(max_span, p.span_bytes);
      pieces_.push_back(p);
    }
  }
  if (pieces_.empty()) return;

  ring_bytes_ = ring_bytes_for(ring_bytes, max_span);
  uint64_t min_span = max_span;
  for (const Piece& p : pieces_) min_span = std::min(min_span, p.span_bytes);
  fifo_.resize(ring_bytes_ / std::max<uint64_t>(1, min_span) + 2);
  io::ReaderOptions options;
  options.piece_bytes = size_t(max_span);  // one disk read per piece
  options.queue_depth = int(std::min<size_t>(64, fifo_.size()));
  core_ = std::make_unique<StreamCore>(path, ring_bytes_, options, "dense FFN streaming");
  ring_ = core_->arena();
  try {
    carry_memory_ = io::AlignedBuffer(kDirectAlign);
  } catch (const std::bad_alloc&) {
    throw Error("dense FFN streaming: cannot allocate a page");
  }
  carry_ = reinterpret_cast<uint8_t*>(carry_memory_.data());
}

DenseFfnStreamer::~DenseFfnStreamer() = default;  // the core drains the reads still landing in the ring

int DenseFfnStreamer::matrix_index(int layer, FfnPart part) const {
  const size_t i = size_t(layer) * kNumFfnParts + size_t(part);
  return layer >= 0 && i < matrix_of_.size() ? matrix_of_[i] : -1;
}

bool DenseFfnStreamer::streams(int layer, FfnPart part) const { return matrix_index(layer, part) >= 0; }

bool DenseFfnStreamer::place(uint64_t bytes, uint64_t& at) const {
  if (fifo_size_ == 0) {
    at = 0;
    return bytes <= ring_bytes_;
  }
  const uint64_t front = fifo_[fifo_head_].ring_offset;
  const uint64_t back = fifo_[(fifo_head_ + fifo_size_ - 1) % fifo_.size()].ring_offset;
  if (back >= front) {  // in use: [front, ring_end_)
    if (ring_end_ + bytes <= ring_bytes_) {
      at = ring_end_;
      return true;
    }
    at = 0;
    return bytes <= front;
  }
  at = ring_end_;  // wrapped; in use: [front, ring end) and [0, ring_end_)
  return ring_end_ + bytes <= front;
}

void DenseFfnStreamer::top_up() {
  uint64_t n_reads = 0, n_bytes = 0;
  while (fifo_size_ < fifo_.size()) {
    const int k = next_read_;
    const Piece& p = pieces_[size_t(k)];
    uint64_t at = 0;
    if (!place(p.span_bytes, at)) break;
    // The first page comes with the previous piece when that was the read before this one.
    const bool head_from_previous = p.shares_head && last_read_ == k - 1;
    const uint64_t skip = head_from_previous ? kDirectAlign : 0;
    const io::ReadRequest request{p.file_offset + skip, p.read_bytes - skip, ring_ + at + skip};
    Entry& e = entry(fifo_size_);
    e = Entry{k, at, core_->submit(request), false, false};
    if (head_from_previous) {
      if (carry_for_ == k)
        std::memcpy(ring_ + at, carry_, kDirectAlign);  // the previous piece is already released
      else
        e.needs_head = true;  // copied when the previous piece is released
    }
    carry_for_ = -1;
    ++fifo_size_;
    ring_end_ = at + p.span_bytes;
    last_read_ = k;
    next_read_ = (k + 1) % int(pieces_.size());
    ++n_reads;
    n_bytes += request.length;
  }
  if (n_reads > 0) {
    stats_.pieces_read += n_reads;
    stats_.bytes_read += n_bytes;
    published_.publish(stats_);
  }
}

void DenseFfnStreamer::drop_front() {
  fifo_head_ = (fifo_head_ + 1) % fifo_.size();
  if (--fifo_size_ == 0) ring_end_ = 0;
  handed_ = false;
}

// The oldest entry has arrived and is done with. The piece after it may start in its last page:
// hand that page on, to the next entry or, when that is not placed yet, to carry_.
void DenseFfnStreamer::pop_front() {
  const Entry& e = entry(0);
  const Piece& p = pieces_[size_t(e.piece)];
  const int k = e.piece + 1;
  if (k < int(pieces_.size()) && pieces_[size_t(k)].shares_head) {
    const uint8_t* tail = ring_ + e.ring_offset + p.span_bytes - kDirectAlign;
    if (fifo_size_ > 1 && entry(1).piece == k) {
      if (entry(1).needs_head) std::memcpy(ring_ + entry(1).ring_offset, tail, kDirectAlign);
      entry(1).needs_head = false;
    } else if (next_read_ == k && last_read_ == e.piece) {
      std::memcpy(carry_, tail, kDirectAlign);
      carry_for_ = k;
    }
  }
  drop_front();
}

// After a jump (the first token, a forward pass cut short by an error): what was read ahead is
// not what is needed next. Let it land, drop it, and read on from `piece`.
void DenseFfnStreamer::restart_at(int piece) {
  while (fifo_size_ > 0) {
    Entry& e = entry(0);
    if (!e.waited) core_->wait_quietly(e.ticket);  // its bytes are dropped anyway
    drop_front();
  }
  next_read_ = piece;
  last_read_ = -1;  // the next read takes its first page from the file
  carry_for_ = -1;
}

void DenseFfnStreamer::begin(int layer, FfnPart part) {
  const int m = matrix_index(layer, part);
  if (m < 0) throw Error("dense FFN streaming: layer " + std::to_string(layer) + " matrix is not streamed");
  if (handed_) pop_front();  // a piece an interrupted pass never finished with
  const int want = first_piece_[size_t(m)];
  if (fifo_size_ == 0 ? next_read_ != want : entry(0).piece != want) restart_at(want);
  handing_ = m;
  expect_ = want;
  top_up();
  ++stats_.matrices_used;
  published_.publish(stats_);
}

bool DenseFfnStreamer::next(WeightView& piece, int64_t& row0) {
  if (handed_) {
    pop_front();
    top_up();
  }
  if (handing_ < 0 || expect_ < 0) {
    handing_ = -1;
    return false;
  }
  if (fifo_size_ == 0) top_up();
  Entry& e = entry(0);
  if (e.piece != expect_) throw Error("dense FFN streaming: read order lost (internal error)");
  const bool arrived = core_->ready(e.ticket);
  e.waited = true;
  double waited = 0;
  try {
    waited = core_->wait(e.ticket);  // throws on a read error or a file changed underneath
  } catch (const std::exception&) {
    handing_ = -1;
    restart_at(e.piece);
    throw;
  }
  ++stats_.pieces_used;
  stats_.ready_hits += arrived ? 1 : 0;
  stats_.wait_seconds += waited;
  published_.publish(stats_);
  const Piece& p = pieces_[size_t(e.piece)];
  const StreamedMatrix& sm = matrices_[size_t(p.matrix)];
  piece = ffn_weight(model_.weights().layers[size_t(sm.layer)], sm.part);
  piece.data = ring_ + e.ring_offset + p.skip;
  piece.n_rows = p.n_rows;
  row0 = p.row0;
  handed_ = true;
  const size_t following = size_t(e.piece) + 1;
  expect_ = following < pieces_.size() && pieces_[following].matrix == handing_ ? int(following) : -1;
  return true;
}

StreamStats DenseFfnStreamer::stats() const {
  StreamStats s = published_.get();
  s.idle_seconds = core_ ? core_->idle_seconds() : 0.0;
  return s;
}

}  // namespace strata::tier
