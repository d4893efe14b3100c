#pragma once
// Dense FFN streaming: the FFN blocks (gate, up, down) of chosen layers are not held in memory;
// they are read from the model file with O_DIRECT into a small pool of slots, the next layers
// being read while the current one computes. The bytes are the file's own, so results are
// bit-identical to a resident run.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "model/blocks.h"
#include "model/model.h"
#include "tier/io/reader.h"

namespace strata::tier {

struct StreamStats {
  uint64_t bytes_read = 0;   // from the SSD, including alignment padding
  uint64_t layer_loads = 0;  // FFN blocks read
  uint64_t acquires = 0;     // FFN blocks needed by compute
  uint64_t ready_hits = 0;   // ... already in memory when needed (prefetch arrived in time)
  double wait_seconds = 0;   // compute waiting for reads
  double read_seconds = 0;   // time the reader spent reading
};

class DenseFfnStreamer : public FfnSource {
 public:
  // streamed_layers: layers whose FFN is read from the file; prefetch_depth: how many streamed
  // layers ahead are read while one computes (the pool holds depth + 1 slots).
  DenseFfnStreamer(const Model& model, std::vector<int> streamed_layers, int prefetch_depth);
  ~DenseFfnStreamer() override;

  bool streams(int layer) const override;
  void acquire(int layer, WeightView& gate, WeightView& up, WeightView& down) override;
  void release(int layer) override;

  StreamStats stats() const;
  size_t pool_bytes() const { return slot_bytes_ * slots_.size(); }
  bool direct_io() const { return direct_io_; }
  // Bytes of one layer's FFN block (the unit that streams).
  static size_t layer_ffn_bytes(const LayerWeights& L);

 private:
  struct Range {
    uint64_t aligned_offset = 0;  // 4096-aligned start in the file
    uint64_t aligned_bytes = 0;   // aligned length covering the tensor
    uint64_t skip = 0;            // tensor start within the aligned range
    uint64_t slot_offset = 0;     // where the aligned range lands in a slot
  };
  struct LayerPlan {
    Range gate, up, down;
  };
  enum class SlotState { empty, loading, ready, failed };
  struct Slot {
    uint8_t* data = nullptr;
    int layer = -1;
    SlotState state = SlotState::empty;
    bool in_use = false;
    std::string error;
  };

  int position_of(int layer) const;  // index in streamed_, or -1
  Slot* find_slot(int layer);
  Slot* claim_slot(int upcoming_from);  // a slot free to overwrite, or null
  void schedule(Slot* slot, int layer);
  void io_loop();
  void read_layer(const Slot& slot, int layer);
  WeightView view_in(const Slot& slot, const Range& r, const WeightView& like) const;

  const Model& model_;
  std::vector<int> streamed_;            // in forward order
  std::vector<LayerPlan> plans_;         // per model layer (only streamed ones filled)
  int depth_;
  size_t slot_bytes_ = 0;
  std::vector<Slot> slots_;
  std::vector<uint8_t*> buffers_;
  std::unique_ptr<io::RangeReader> reader_;  // io_uring (or pread threads), O_DIRECT where possible
  bool direct_io_ = false;

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Slot*> queue_;
  bool stop_ = false;
  StreamStats stats_;
  std::thread io_thread_;
};

}  // namespace strata::tier
