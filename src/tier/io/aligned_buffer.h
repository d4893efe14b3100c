#pragma once
// Memory aligned for O_DIRECT (4096: the logical block size of every disk we target, and a page).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <utility>

namespace strata::tier::io {

inline constexpr size_t kDirectAlign = 4096;

constexpr uint64_t align_down(uint64_t x, uint64_t a) { return x / a * a; }
constexpr uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

// An owned, zero-initialised-on-request block of `size_bytes` (rounded up to the alignment).
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t size_bytes, size_t align = kDirectAlign)
      : size_bytes_(size_bytes ? (size_bytes + align - 1) / align * align : 0) {
    if (size_bytes_ == 0) return;
    data_ = static_cast<std::byte*>(std::aligned_alloc(align, size_bytes_));
    if (!data_) throw std::bad_alloc();
  }
  AlignedBuffer(AlignedBuffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_bytes_(std::exchange(o.size_bytes_, 0)) {}
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
    if (this != &o) {
      std::free(data_);
      data_ = std::exchange(o.data_, nullptr);
      size_bytes_ = std::exchange(o.size_bytes_, 0);
    }
    return *this;
  }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer() { std::free(data_); }

  std::byte* data() const { return data_; }
  size_t size_bytes() const { return size_bytes_; }

 private:
  std::byte* data_ = nullptr;
  size_t size_bytes_ = 0;
};

}  // namespace strata::tier::io
