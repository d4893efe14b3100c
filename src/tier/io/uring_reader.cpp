// The io_uring back end: one I/O thread owns the ring. It moves pending pieces into free slots
// (up to queue_depth in flight), submits them in one syscall, and completes them as they land,
// copying interiors out itself; callers only queue work and wait on tickets.
#include <liburing.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "tier/io/pread_reader.h"
#include "util/error.h"

namespace strata::tier::io::detail {

namespace {

class UringReader final : public QueuedReader {
 public:
  UringReader(std::string path, OpenFile file, const ReaderOptions& options, io_uring ring)
      : QueuedReader(std::move(path), file, options, std::max(1, options.queue_depth)),
        ring_(ring),
        inflight_(n_slots_) {
    free_slots_.reserve(n_slots_);
    for (int i = n_slots_ - 1; i >= 0; --i) free_slots_.push_back(i);
    thread_ = std::thread([this] { run(); });
  }
  ~UringReader() override {
    {
      std::lock_guard lk(mu_);
      stopping_ = true;
    }
    work_cv_.notify_all();
    thread_.join();
    io_uring_queue_exit(&ring_);
  }
  const char* backend_name() const override { return "io_uring"; }

 private:
  void run() {
    int n_inflight = 0;
    for (;;) {
      int n_queued = 0;
      {
        std::unique_lock lk(mu_);
        work_cv_.wait(lk, [&] { return stopping_ || n_inflight > 0 || has_pending(); });
        if (stopping_ && n_inflight == 0) return;
        while (!stopping_ && !free_slots_.empty() && has_pending()) {
          io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
          if (!sqe) break;
          int s = free_slots_.back();
          free_slots_.pop_back();
          Piece& p = inflight_[s];
          take_piece(p, s);
          io_uring_prep_read(sqe, file_.fd, p.read_dst, p.read_bytes, p.file_offset);
          io_uring_sqe_set_data64(sqe, static_cast<uint64_t>(s));
          ++n_queued;
        }
      }
      if (n_queued > 0) {
        int r;
        do {
          r = io_uring_submit(&ring_);
        } while (r == -EINTR || r == -EAGAIN || r == -EBUSY);
        if (r < 0) throw_fatal(r);  // the ring itself is broken; nothing sane to continue with
        n_inflight += n_queued;
      }
      if (n_inflight == 0) continue;
      io_uring_cqe* cqe = nullptr;
      int r = io_uring_wait_cqe(&ring_, &cqe);
      if (r == -EINTR) continue;
      if (r < 0) throw_fatal(r);
      do {
        auto s = static_cast<int>(io_uring_cqe_get_data64(cqe));
        int64_t res = cqe->res;
        io_uring_cqe_seen(&ring_, cqe);
        complete_piece(inflight_[s], res);
        free_slots_.push_back(s);
        --n_inflight;
      } while (io_uring_peek_cqe(&ring_, &cqe) == 0);
    }
  }

  [[noreturn]] void throw_fatal(int err) {
    // An exception cannot cross the thread boundary usefully; waiters would hang. Fail loudly.
    std::fprintf(stderr, "fatal: io_uring on %s: %s\n", path_.c_str(), std::strerror(-err));
    std::abort();
  }

  io_uring ring_;
  std::vector<Piece> inflight_;  // by slot
  std::vector<int> free_slots_;  // owned by the I/O thread
  std::thread thread_;
};

}  // namespace

std::unique_ptr<RangeReader> make_uring_reader(const std::string& path, OpenFile file, const ReaderOptions& options,
                                               std::string* why_not) {
  io_uring ring;
  unsigned entries = static_cast<unsigned>(std::max(1, options.queue_depth));
  int r = io_uring_queue_init(entries, &ring, 0);
  if (r < 0) {
    if (why_not) *why_not = std::strerror(-r);
    return nullptr;
  }
  return std::make_unique<UringReader>(path, file, options, ring);
}

}  // namespace strata::tier::io::detail
