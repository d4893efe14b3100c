#include "tier/io/aligned_buffer.h"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <new>

namespace strata::tier::io {

AlignedBuffer::AlignedBuffer(size_t size_bytes, size_t align) {
  if (size_bytes == 0) return;
  if (align > kHugePageBytes || size_bytes < kHugePageBytes) {
    size_bytes_ = size_t(align_up(size_bytes, align));
    data_ = static_cast<std::byte*>(std::aligned_alloc(align, size_bytes_));
    if (!data_) throw std::bad_alloc();
    std::memset(data_, 0, size_bytes_);
    return;
  }
  size_bytes_ = size_t(align_up(size_bytes, kHugePageBytes));
  // Map one huge page more than needed, then cut the mapping to a 2 MiB boundary.
  const size_t mapped = size_bytes_ + kHugePageBytes;
  void* p = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  auto* base = static_cast<std::byte*>(p);
  const size_t lead = size_t(align_up(reinterpret_cast<uintptr_t>(base), kHugePageBytes) - reinterpret_cast<uintptr_t>(base));
  if (lead) ::munmap(base, lead);
  if (kHugePageBytes - lead) ::munmap(base + lead + size_bytes_, kHugePageBytes - lead);
  data_ = base + lead;
  mapped_ = true;
  ::madvise(data_, size_bytes_, MADV_HUGEPAGE);  // a hint: without THP these are plain pages
  std::memset(data_, 0, size_bytes_);             // fault it in now, not in the token loop
}

void AlignedBuffer::release() noexcept {
  if (!data_) return;
  if (mapped_)
    ::munmap(data_, size_bytes_);
  else
    std::free(data_);
  data_ = nullptr;
  size_bytes_ = 0;
  mapped_ = false;
}

}  // namespace strata::tier::io
