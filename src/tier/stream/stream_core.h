#pragma once
// The mechanics every streamer shares, written once: one arena of aligned memory that reads land
// in, page-aligned file ranges around the bytes wanted (O_DIRECT), reads submitted for a ticket
// and waited on with the time blocked measured, cancel (a guess proven wrong), drain (every read
// in flight lands before the arena is freed) and statistics snapshots other threads may read.
// The policies are the streamers: DenseFfnStreamer (sequential read-ahead through a ring of row
// pieces) and ExpertStreamer (a cache of expert slots: pinning, eviction, guesses).
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>

#include "tier/io/aligned_buffer.h"
#include "tier/io/reader.h"

namespace strata::tier {

// The page-aligned range of the file that holds [offset, offset + bytes).
struct AlignedRange {
  uint64_t file_offset = 0;  // 4096-aligned start
  uint64_t read_bytes = 0;   // bytes to read: the aligned length, clipped at the end of the file
  uint64_t span_bytes = 0;   // the aligned length: room the read takes in memory
  uint64_t skip = 0;         // where `offset` falls in the range
};
AlignedRange aligned_range(uint64_t offset, uint64_t bytes, uint64_t file_bytes);

class StreamCore {
 public:
  // what: the streamer's name, for errors. Throws strata::Error when the arena cannot be allocated
  // or the file cannot be opened.
  StreamCore(const std::string& path, uint64_t arena_bytes, const io::ReaderOptions& reader, const std::string& what);
  ~StreamCore();  // drains
  StreamCore(const StreamCore&) = delete;
  StreamCore& operator=(const StreamCore&) = delete;

  uint8_t* arena() const { return reinterpret_cast<uint8_t*>(arena_.data()); }
  uint64_t arena_bytes() const { return arena_.size_bytes(); }

  io::Ticket submit(std::span<const io::ReadRequest> requests) { return reader_->submit(requests); }
  io::Ticket submit(const io::ReadRequest& request) { return submit(std::span<const io::ReadRequest>(&request, 1)); }
  bool ready(io::Ticket ticket) { return reader_->ready(ticket); }
  // Blocks until the ticket's reads are in; returns the seconds it blocked. Throws the reader's
  // strata::Error (read error, file changed underneath).
  double wait(io::Ticket ticket);
  // For reads whose bytes are dropped anyway: waits, ignoring errors.
  void wait_quietly(io::Ticket ticket);
  // Drops the ticket's reads not yet issued; returns their bytes. It must still be waited.
  uint64_t cancel(io::Ticket ticket) { return reader_->cancel(ticket); }
  // Waits every ticket not yet waited, ignoring errors.
  void drain();

  bool direct_io() const { return reader_->direct(); }
  uint64_t file_bytes() const { return reader_->file_bytes(); }
  double idle_seconds() const { return double(reader_->counters().idle_ns) * 1e-9; }

 private:
  io::AlignedBuffer arena_;
  std::unique_ptr<io::RangeReader> reader_;
};

// Statistics the forward thread keeps and other threads (the server's /metrics) read: a copy
// published under a lock between steps.
template <class Stats>
class StatsSnapshot {
 public:
  void publish(const Stats& s) {
    std::lock_guard<std::mutex> lock(mutex_);
    published_ = s;
  }
  Stats get() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return published_;
  }

 private:
  mutable std::mutex mutex_;
  Stats published_{};
};

}  // namespace strata::tier
