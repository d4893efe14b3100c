#pragma once
// Dense FFN streaming: FFN matrices (gate, up, down of chosen layers) that are not held in memory
// are read from the model file with O_DIRECT, in pieces of whole rows, into one ring of memory.
// Reads run ahead through the streamed matrices in forward order (wrapping to the first for the
// next token) as far as the ring has room, so the disk always has pieces in flight, and a matrix
// is computed piece by piece as its pieces arrive. The ring needs only a few pieces, not whole
// FFN blocks, which leaves the memory for resident weights. The bytes are the file's own, so
// results are bit-identical to a resident run.
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "model/model.h"
#include "model/weight_source.h"
#include "tier/io/aligned_buffer.h"
#include "tier/io/reader.h"
#include "tier/stream/stream_core.h"
#include "tier/plan/plan.h"

namespace strata::tier {

struct StreamStats {
  uint64_t bytes_read = 0;     // from the SSD, including alignment padding
  uint64_t pieces_read = 0;    // row pieces read
  uint64_t pieces_used = 0;    // row pieces needed by compute
  uint64_t ready_hits = 0;     // ... already in memory when needed (read ahead in time)
  uint64_t matrices_used = 0;  // streamed matrices computed
  double wait_seconds = 0;     // compute waiting for reads
  double idle_seconds = 0;     // the disk with nothing to read from this streamer
};

struct StreamedMatrix {
  int layer = 0;
  FfnPart part = FfnPart::gate;
};

class DenseFfnStreamer : public FfnSource {
 public:
  // 16 MiB reads (the block layer issues each as four 4 MiB requests at once): on this machine's
  // virtual disk they stream markedly faster than single 4 MiB reads.
  static constexpr size_t kDefaultPieceBytes = kStreamPieceBytes;
  static constexpr size_t kDefaultRingBytes = size_t(96) << 20;  // one piece computing, five reading

  // The ring holds at least two pieces (one computing, one reading), so it may exceed ring_bytes
  // for a model with huge rows; pool_bytes() says how much it is.
  DenseFfnStreamer(const Model& model, std::vector<StreamedMatrix> matrices, size_t ring_bytes = kDefaultRingBytes,
                   size_t piece_bytes = kDefaultPieceBytes);
  ~DenseFfnStreamer() override;

  bool streams(int layer, FfnPart part) const override;
  void begin(int layer, FfnPart part) override;
  bool next(WeightView& piece, int64_t& row0) override;

  StreamStats stats() const;
  size_t pool_bytes() const { return ring_bytes_; }
  // The ring the constructor allocates for ring_bytes asked and pieces of at most max_piece_span
  // bytes (aligned reads): at least two pieces, page-aligned. The planner's dense pool figure.
  static size_t ring_bytes_for(size_t ring_bytes, uint64_t max_piece_span);
  bool direct_io() const { return core_ && core_->direct_io(); }

  // Every matrix of the given layers (what `--stream-ffn N` asks for): a dense layer's FFN, a
  // MoE layer's shared expert (none where it has none). Without a config: dense layers.
  static std::vector<StreamedMatrix> whole_layers(const std::vector<int>& layers);
  static std::vector<StreamedMatrix> whole_layers(const ModelConfig& config, const std::vector<int>& layers);

 private:
  struct Piece {
    int matrix = 0;                // index into matrices_
    int64_t row0 = 0, n_rows = 0;  // rows of the matrix
    uint64_t file_offset = 0;      // 4096-aligned start of the read
    uint64_t read_bytes = 0;       // bytes read (the aligned length, clipped at the end of the file)
    uint64_t span_bytes = 0;       // aligned length: room taken in the ring
    uint64_t skip = 0;             // first row's offset within the read
    // Its first page is the previous piece's last (they meet inside a page). Two reads in flight
    // over one page are serialised by this machine's virtual disk, so the page is read once, with
    // the previous piece, and copied over.
    bool shares_head = false;
  };
  struct Entry {  // a piece read into the ring, oldest first
    int piece = 0;
    uint64_t ring_offset = 0;
    io::Ticket ticket = 0;
    bool waited = false;
    bool needs_head = false;  // its first page comes from the previous entry when that is released
  };

  int matrix_index(int layer, FfnPart part) const;  // -1: not streamed
  void top_up();                                    // start reads while the ring has room
  bool place(uint64_t bytes, uint64_t& at) const;   // where the next read fits in the ring
  void restart_at(int piece);                       // drop what is in flight, read from `piece` on
  void pop_front();                                 // releases the oldest entry (handing its last page on)
  void drop_front();
  Entry& entry(size_t i) { return fifo_[(fifo_head_ + i) % fifo_.size()]; }

  const Model& model_;
  std::vector<StreamedMatrix> matrices_;  // forward order
  std::vector<int> first_piece_;          // per matrix
  std::vector<int> matrix_of_;            // [layer * kNumFfnParts + part] -> matrix, or -1
  std::vector<Piece> pieces_;             // every piece, forward order; the read order cycles
  size_t ring_bytes_ = 0;
  std::unique_ptr<StreamCore> core_;  // the ring is its arena; null when nothing streams
  uint8_t* ring_ = nullptr;

  // Reads in flight or arrived, oldest first (a fixed circular buffer: nothing allocates per token).
  std::vector<Entry> fifo_;
  size_t fifo_head_ = 0, fifo_size_ = 0;
  uint64_t ring_end_ = 0;     // end of the newest entry in the ring
  int next_read_ = 0;         // the piece to read next
  int last_read_ = -1;        // the piece read last (-1 after a restart)
  io::AlignedBuffer carry_memory_;
  uint8_t* carry_ = nullptr;  // a released piece's last page, for the next piece not yet placed
  int carry_for_ = -1;        // the piece carry_ is the first page of, or -1
  int handing_ = -1;          // the matrix being handed out, or -1
  int expect_ = -1;           // its piece to hand out next, or -1 when all were
  bool handed_ = false;       // the front entry was handed out and is still in use

  StreamStats stats_;                     // the forward thread's
  StatsSnapshot<StreamStats> published_;  // what other threads (the server) read
};

}  // namespace strata::tier
