#pragma once
// The part of a RangeReader both back ends share: splitting requests into pieces, the queue of
// pending pieces, staging slots, tickets, completion (copy-out, error, counters). A back end only
// decides how a piece reaches the disk: io_uring (uring_reader.cpp) or blocking pread (pread_reader.cpp).
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "tier/io/aligned_buffer.h"
#include "tier/io/reader.h"

namespace strata::tier::io::detail {

// A FIFO that keeps its storage: push/pop allocate only when it outgrows its largest size so far.
template <typename T>
class Ring {
 public:
  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  T& operator[](size_t i) { return buf_[(head_ + i) & (buf_.size() - 1)]; }
  T& front() { return (*this)[0]; }
  void pop_front() {
    head_ = (head_ + 1) & (buf_.size() - 1);
    --n_;
  }
  // Removes the elements `drop` says so, keeping the order of the others.
  template <typename F>
  void remove_if(F drop) {
    size_t kept = 0;
    for (size_t i = 0; i < n_; ++i)
      if (!drop((*this)[i])) (*this)[kept++] = (*this)[i];
    n_ = kept;
  }
  void push_back(const T& v) {
    if (n_ == buf_.size()) grow();
    buf_[(head_ + n_) & (buf_.size() - 1)] = v;
    ++n_;
  }

 private:
  void grow() {
    std::vector<T> next(buf_.empty() ? 64 : buf_.size() * 2);
    for (size_t i = 0; i < n_; ++i) next[i] = (*this)[i];
    buf_.swap(next);
    head_ = 0;
  }
  std::vector<T> buf_;  // capacity a power of two
  size_t head_ = 0, n_ = 0;
};

// One disk read: [file_offset, file_offset + read_bytes) into read_dst, serving part of one request.
struct Piece {
  uint64_t file_offset = 0;
  uint32_t read_bytes = 0;
  uint32_t need_bytes = 0;  // bytes from file_offset the request needs; the rest is alignment padding
  std::byte* read_dst = nullptr;
  bool staged = false;  // read_dst is a staging slot: copy the interior out on completion
  uint64_t req_offset = 0;
  std::byte* req_dst = nullptr;
  Ticket ticket = 0;
};

struct OpenFile {
  int fd = -1;
  bool direct = false;
  uint64_t size_bytes = 0;
  int64_t mtime_ns = 0;
};

class QueuedReader : public RangeReader {
 public:
  QueuedReader(std::string path, OpenFile file, const ReaderOptions& options, int n_slots);
  ~QueuedReader() override;

  Ticket submit(std::span<const ReadRequest> requests) override;
  void wait(Ticket ticket) override;
  bool ready(Ticket ticket) override;
  void wait_all() override;
  uint64_t cancel(Ticket ticket) override;
  IoCounters counters() const override;
  bool direct() const override { return file_.direct; }
  uint64_t file_bytes() const override { return file_.size_bytes; }
  const std::string& path() const override { return path_; }

 protected:
  // With mu_ held: whether a piece is pending, and taking the next one (staging into slot
  // `slot_index`, allocated on first use, if needed).
  bool has_pending() const { return !jobs_.empty(); }
  void take_piece(Piece& piece, int slot_index);
  // Without mu_: finishes a piece whose read returned `result` (bytes, or -errno). Retries a short
  // read synchronously, copies the interior out, and retires the piece from its ticket.
  void complete_piece(const Piece& piece, int64_t result);

  std::string path_;
  OpenFile file_;
  uint64_t piece_bytes_;
  int n_slots_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;  // back-end threads: pieces pending or stopping
  bool stopping_ = false;

 private:
  struct Job {
    ReadRequest req;
    Ticket ticket = 0;
    uint64_t next_offset = 0;  // file offset of the next piece
    uint64_t end_offset = 0;   // end of the (aligned) range to read
    bool to_dst = false;       // read straight into req.dst (but for a last piece past its end)
  };
  struct TicketState {
    uint64_t pieces_left = 0;
    bool waited = false;
    std::string error;  // first error among its pieces; empty: none
  };
  TicketState& ticket_state(Ticket t) { return tickets_[t - first_ticket_]; }
  void retire_waited();
  void check_unchanged() const;
  uint64_t alignment() const { return file_.direct ? kDirectAlign : 1; }
  // A range is cut into pieces of piece_bytes_, except that a last piece of up to piece_bytes_ +
  // kPieceSlack is not split: an unaligned 1 MiB tensor (1 MiB + 4 KiB aligned) stays one read.
  uint64_t count_pieces(uint64_t n_bytes) const {
    return n_bytes <= piece_bytes_ + kPieceSlack ? 1 : (n_bytes - kPieceSlack + piece_bytes_ - 1) / piece_bytes_;
  }
  static constexpr uint64_t kPieceSlack = kDirectAlign;

  std::vector<AlignedBuffer> slots_;
  std::condition_variable done_cv_;  // waiters: a ticket finished
  Ring<Job> jobs_;
  Ring<TicketState> tickets_;  // tickets_[i] is ticket first_ticket_ + i
  Ticket first_ticket_ = 1;

  std::atomic<uint64_t> n_requests_{0}, n_pieces_{0}, bytes_requested_{0}, bytes_read_{0}, wait_ns_{0}, idle_ns_{0};
  int at_disk_ = 0;  // pieces taken and not completed (mu_)
  std::chrono::steady_clock::time_point idle_since_ = std::chrono::steady_clock::now();  // (mu_)
};

// Opens with O_DIRECT when `want_direct` and the filesystem accepts it (probed with one read).
OpenFile open_file(const std::string& path, bool want_direct);

}  // namespace strata::tier::io::detail
