#pragma once
// Resident weights in anonymous memory. A model's tensors are mapped from its file, so the weights
// the plan keeps resident would otherwise live in the page cache, where readahead around them
// brings in neighbouring streamed bytes and the kernel may evict and re-read them under the
// budget's pressure. ResidentCopy reads the resident ranges once with O_DIRECT into anonymous
// memory and moves that memory over the same addresses of the mapping (mremap), so every
// WeightView stays valid and the bytes are the same: the resident set is exactly what the plan
// counted, and only streamed reads touch the disk afterwards. On destruction the file mapping
// comes back over those addresses (again the same bytes) and the memory is freed.
#include <cstdint>
#include <vector>

#include "gguf/gguf.h"
#include "tier/plan/plan.h"

namespace strata::tier {

class ResidentCopy {
 public:
  // Moves every resident tensor of the plan (at least min_tensor_bytes; smaller ones are copied
  // into vectors at load; expert tensors are the expert streamer's) out of the page cache. Throws strata::Error naming the file on a read
  // error or when memory cannot be mapped.
  ResidentCopy(const gguf::File& file, const Plan& plan, uint64_t min_tensor_bytes = 64 << 10);
  ~ResidentCopy();
  ResidentCopy(const ResidentCopy&) = delete;
  ResidentCopy& operator=(const ResidentCopy&) = delete;

  uint64_t bytes() const { return bytes_; }  // anonymous memory holding the copies
  size_t n_ranges() const { return ranges_.size(); }

 private:
  struct Range {
    uint64_t offset = 0, length = 0;  // page-aligned, within the mapping
  };
  const gguf::File& file_;
  std::vector<Range> ranges_;
  uint64_t bytes_ = 0;
  int fd_ = -1;  // the model file, to map it back
};

}  // namespace strata::tier
