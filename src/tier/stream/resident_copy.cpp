#include "tier/stream/resident_copy.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "tier/io/aligned_buffer.h"
#include "tier/io/reader.h"
#include "util/error.h"

namespace strata::tier {

namespace {

using io::align_down;
using io::align_up;
using io::kDirectAlign;

// Puts the file's bytes back under [offset, offset + length) of the mapping at `base`.
bool map_file_back(uint8_t* base, int fd, uint64_t offset, uint64_t length) {
  return ::mmap(base + offset, length, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, off_t(offset)) != MAP_FAILED;
}

}  // namespace

ResidentCopy::ResidentCopy(const gguf::File& file, const Plan& plan, uint64_t min_tensor_bytes) : file_(file) {
  const uint64_t file_bytes = file.file_size();
  for (const TensorPlacement& t : plan.tensors) {
    if (t.placement != Placement::resident || t.n_bytes < min_tensor_bytes || t.resident_bytes != t.n_bytes) continue;
    // Expert slices the plan keeps are pinned in the expert streamer's own slots, which serve
    // every MoE layer: a copy here would hold them twice.
    if (t.role == TensorRole::experts) continue;
    const uint64_t start = align_down(t.file_offset, kDirectAlign);
    const uint64_t end =
        std::min(align_up(t.file_offset + t.n_bytes, kDirectAlign), align_up(file_bytes, kDirectAlign));
    ranges_.push_back({start, end - start});
  }
  if (ranges_.empty()) return;
  std::sort(ranges_.begin(), ranges_.end(), [](const Range& a, const Range& b) { return a.offset < b.offset; });
  std::vector<Range> merged;
  for (const Range& r : ranges_) {
    if (!merged.empty() && r.offset <= merged.back().offset + merged.back().length)
      merged.back().length = std::max(merged.back().length, r.offset + r.length - merged.back().offset);
    else
      merged.push_back(r);
  }
  ranges_.swap(merged);

  const std::string& path = file.path();
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw Error("resident weights: cannot open " + path + ": " + std::strerror(errno));

  // Read every range into fresh anonymous memory first: the mapping keeps serving the same bytes
  // from the file until each copy is complete and moved over it.
  std::vector<void*> copies(ranges_.size(), nullptr);
  auto release_copies = [&] {
    for (size_t i = 0; i < copies.size(); ++i)
      if (copies[i]) ::munmap(copies[i], ranges_[i].length);
  };
  auto* base = const_cast<uint8_t*>(file.base());  // the mapping is the model's own, private
  try {
    std::vector<io::ReadRequest> requests;
    for (size_t i = 0; i < ranges_.size(); ++i) {
      // At the target's phase in a huge page: the copy stays in huge pages once moved over it.
      void* p = io::map_huge(ranges_[i].length, reinterpret_cast<uintptr_t>(base + ranges_[i].offset));
      if (!p)
        throw Error("resident weights of " + path + ": cannot map " + std::to_string(ranges_[i].length) +
                    " bytes of memory: " + std::strerror(errno));
      copies[i] = p;
      // The last page may run past the end of the file.
      requests.push_back({ranges_[i].offset, std::min(ranges_[i].length, file_bytes - ranges_[i].offset), p});
    }
    io::ReaderOptions options;
    options.piece_bytes = size_t(4) << 20;
    options.queue_depth = 32;
    io::open_range_reader(path, options)->read(requests);
  } catch (...) {
    release_copies();
    ::close(fd_);
    throw;
  }

  for (size_t i = 0; i < ranges_.size(); ++i) {
    void* at = base + ranges_[i].offset;
    if (::mremap(copies[i], ranges_[i].length, ranges_[i].length, MREMAP_MAYMOVE | MREMAP_FIXED, at) == MAP_FAILED) {
      const int e = errno;
      for (size_t j = 0; j < i; ++j) map_file_back(base, fd_, ranges_[j].offset, ranges_[j].length);
      release_copies();  // the copies not yet moved
      ::close(fd_);
      throw Error("resident weights of " + path + ": cannot move memory over the mapping: " + std::strerror(e));
    }
    copies[i] = nullptr;
    ::mprotect(at, ranges_[i].length, PROT_READ);
    bytes_ += ranges_[i].length;
  }
}

ResidentCopy::~ResidentCopy() {
  auto* base = const_cast<uint8_t*>(file_.base());
  for (const Range& r : ranges_) map_file_back(base, fd_, r.offset, r.length);  // on failure the copy stays: same bytes
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace strata::tier
