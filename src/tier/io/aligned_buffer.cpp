#include "tier/io/aligned_buffer.h"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <new>

namespace strata::tier::io {

void* map_huge(size_t length, uintptr_t phase) {
  // Map one huge page more than needed, then cut the mapping to the phase.
  void* p = ::mmap(nullptr, length + kHugePageBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  const auto base = reinterpret_cast<uintptr_t>(p);
  const uintptr_t lead = (phase - base) % kHugePageBytes;  // base + lead ≡ phase (mod 2 MiB)
  if (lead) ::munmap(p, lead);
  if (kHugePageBytes - lead) ::munmap(reinterpret_cast<void*>(base + lead + length), kHugePageBytes - lead);
  void* at = reinterpret_cast<void*>(base + lead);
  ::madvise(at, length, MADV_HUGEPAGE);  // a hint: without THP these are plain pages
  return at;
}

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
  data_ = static_cast<std::byte*>(map_huge(size_bytes_));
  if (!data_) throw std::bad_alloc();
  mapped_ = true;
  // Fault it in now, not in the token loop; the kernel's fresh pages are zero already.
#ifdef MADV_POPULATE_WRITE
  if (::madvise(data_, size_bytes_, MADV_POPULATE_WRITE) == 0) return;
#endif
  std::memset(data_, 0, size_bytes_);  // a kernel without MADV_POPULATE_WRITE (before 5.14)
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
