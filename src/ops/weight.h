#pragma once
// A read-only view of a 2-D weight matrix in any tensor type: n_rows rows of n_cols elements
// (GGUF's ne[0] = n_cols is contiguous). Compute code does not care where the bytes live.
#include <cstddef>
#include <cstdint>

#include "tensor/type.h"

namespace strata {

struct WeightView {
  DType type = DType::F32;
  const uint8_t* data = nullptr;
  int64_t n_cols = 0;  // ne[0]
  int64_t n_rows = 0;  // ne[1] (times ne[2] for a stack of matrices)
  size_t row_bytes = 0;

  bool empty() const { return data == nullptr; }
  const uint8_t* row(int64_t r) const { return data + size_t(r) * row_bytes; }
  // Rows [first, first + count) as a matrix of their own (an expert's slice of a 3-D tensor).
  WeightView rows(int64_t first, int64_t count) const {
    WeightView v = *this;
    v.data = row(first);
    v.n_rows = count;
    return v;
  }
};

}  // namespace strata
