#include "tier/stream/stream_core.h"

#include <algorithm>
#include <chrono>
#include <new>

#include "util/error.h"

namespace strata::tier {

AlignedRange aligned_range(uint64_t offset, uint64_t bytes, uint64_t file_bytes) {
  AlignedRange r;
  r.file_offset = io::align_down(offset, io::kDirectAlign);
  r.span_bytes = io::align_up(offset + bytes, io::kDirectAlign) - r.file_offset;
  // The aligned range of the file's last tensor may run past the end of the file.
  r.read_bytes = std::min(r.span_bytes, file_bytes > r.file_offset ? file_bytes - r.file_offset : 0);
  r.skip = offset - r.file_offset;
  return r;
}

StreamCore::StreamCore(const std::string& path, uint64_t arena_bytes, const io::ReaderOptions& reader,
                       const std::string& what) {
  try {
    arena_ = io::AlignedBuffer(size_t(arena_bytes), io::kDirectAlign);  // huge pages where possible, faulted in now
  } catch (const std::bad_alloc&) {
    throw Error(what + ": cannot allocate " + std::to_string(arena_bytes) + " bytes of stream memory");
  }
  reader_ = io::open_range_reader(path, reader);
}

StreamCore::~StreamCore() {
  drain();  // no read may land in freed memory
  reader_.reset();
}

double StreamCore::wait(io::Ticket ticket) {
  const auto t0 = std::chrono::steady_clock::now();
  reader_->wait(ticket);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void StreamCore::wait_quietly(io::Ticket ticket) {
  try {
    reader_->wait(ticket);
  } catch (const std::exception&) {
  }
}

void StreamCore::drain() {
  try {
    if (reader_) reader_->wait_all();
  } catch (const std::exception&) {
  }
}

}  // namespace strata::tier
