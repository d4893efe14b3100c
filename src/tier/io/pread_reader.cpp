// The portable back end: `queue_depth` threads, each doing one blocking pread at a time into its
// own staging slot. Used where io_uring is unavailable (containers that forbid it) or by option.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <thread>

#include "tier/io/pread_reader.h"

namespace strata::tier::io::detail {

PreadReader::PreadReader(std::string path, OpenFile file, const ReaderOptions& options)
    : QueuedReader(std::move(path), file, options, std::max(1, options.queue_depth)) {
  workers_.reserve(n_slots_);
  for (int i = 0; i < n_slots_; ++i) workers_.emplace_back([this, i] { work(i); });
}

PreadReader::~PreadReader() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void PreadReader::work(int slot_index) {
  Piece piece;
  for (;;) {
    {
      std::unique_lock lk(mu_);
      work_cv_.wait(lk, [&] { return stopping_ || has_pending(); });
      if (stopping_) return;
      take_piece(piece, slot_index);
    }
    ssize_t r;
    do {
      r = ::pread(file_.fd, piece.read_dst, piece.read_bytes, static_cast<off_t>(piece.file_offset));
    } while (r < 0 && errno == EINTR);
    complete_piece(piece, r < 0 ? -int64_t{errno} : int64_t{r});
  }
}

}  // namespace strata::tier::io::detail
