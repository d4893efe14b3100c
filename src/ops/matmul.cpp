// Weight x activations. Activations are first converted to the weight type's vec_dot type
// (Q8_0, Q8_1, Q8_K, F16...) exactly as ggml does, so results match llama.cpp's closely.
#include <algorithm>

#include "ops/ops.h"
#include "tensor/kernels.h"
#include "util/error.h"

namespace strata::ops {
namespace {

// Rows of weights handled together in prompt processing: they stay in L1/L2 while every
// token's activations stream past them.
constexpr int kRowBlock = 16;
constexpr int kTokenBlock = 64;

void dot_rows(const kernels::TypeKernels& k, const WeightView& w, int64_t r0, int64_t r1, const uint8_t* act,
              size_t act_row_bytes, int n_tokens, float* y, int64_t y_stride) {
  if (n_tokens == 1) {
    for (int64_t r = r0; r < r1; ++r) y[r] = k.vec_dot(w.n_cols, w.row(r), act);
    return;
  }
  if (k.tile_dot) {
    // All rows of the chunk and all tokens at once: the kernel blocks them for the cache itself
    // (a panel of tokens' activations stays in L2 while every row of the chunk passes it).
    // y is [token][row]: a tile's row stride is 1 and its column stride y_stride.
    k.tile_dot(w.n_cols, w.row(r0), w.row_bytes, int(r1 - r0), act, act_row_bytes, n_tokens, y + r0, 1, size_t(y_stride));
    return;
  }
  for (int64_t rb = r0; rb < r1; rb += kRowBlock) {
    const int n_rows = int(std::min<int64_t>(kRowBlock, r1 - rb));
    for (int tb = 0; tb < n_tokens; tb += kTokenBlock) {
      const int n_cols = std::min(kTokenBlock, n_tokens - tb);
      for (int t = tb; t < tb + n_cols; ++t) {
        const uint8_t* a = act + size_t(t) * act_row_bytes;
        float* yt = y + size_t(t) * y_stride;
        for (int r = 0; r < n_rows; ++r) yt[rb + r] = k.vec_dot(w.n_cols, w.row(rb + r), a);
      }
    }
  }
}

}  // namespace

PreparedInput prepare_input(DType type, int64_t n_cols, const float* x, int64_t x_stride, int n_tokens,
                            ThreadPool& pool, MatmulScratch& scratch) {
  PreparedInput in;
  in.n_tokens = n_tokens;
  in.n_cols = n_cols;
  in.vec_dot_type = kernels::kernels_for(type).vec_dot_type;
  if (in.vec_dot_type == DType::F32) {
    in.data = reinterpret_cast<const uint8_t*>(x);
    in.row_bytes = size_t(x_stride) * sizeof(float);
    return in;
  }
  in.row_bytes = row_bytes(in.vec_dot_type, n_cols);
  const size_t need = in.row_bytes * size_t(std::max(0, n_tokens));
  if (scratch.quantized.size() < need) scratch.quantized.resize(need);  // grows to the largest batch once
  const kernels::TypeKernels& ak = kernels::kernels_for(in.vec_dot_type);
  uint8_t* dst = scratch.quantized.data();
  if (n_tokens == 1) {
    ak.quantize_activation(x, dst, n_cols);
  } else if (n_tokens > 1) {
    pool.parallel_for(n_tokens, [&](int64_t t0, int64_t t1, int) {
      for (int64_t t = t0; t < t1; ++t)
        ak.quantize_activation(x + t * x_stride, dst + size_t(t) * in.row_bytes, n_cols);
    });
  }
  in.data = dst;
  return in;
}

void matmul_prepared(const WeightView& w, const PreparedInput& in, float* y, int64_t y_stride, ThreadPool& pool) {
  if (in.n_tokens <= 0 || w.n_rows <= 0) return;
  const kernels::TypeKernels& k = kernels::kernels_for(w.type);
  if (k.vec_dot_type != in.vec_dot_type || w.n_cols != in.n_cols)
    throw Error("matmul: activations prepared for other weights");
  // Rows in whole row blocks, so tiles stay whole; chunks are claimed dynamically.
  const int64_t n_units = (w.n_rows + kRowBlock - 1) / kRowBlock;
  pool.parallel_for(n_units, [&](int64_t u0, int64_t u1, int) {
    const int64_t r0 = u0 * kRowBlock;
    const int64_t r1 = std::min(w.n_rows, u1 * kRowBlock);
    dot_rows(k, w, r0, r1, in.data, in.row_bytes, in.n_tokens, y, y_stride);
  });
}

void matmul(const WeightView& w, const float* x, int64_t x_stride, int n_tokens, float* y, int64_t y_stride,
            ThreadPool& pool, MatmulScratch& scratch) {
  if (n_tokens <= 0) return;
  matmul_prepared(w, prepare_input(w.type, w.n_cols, x, x_stride, n_tokens, pool, scratch), y, y_stride, pool);
}

}  // namespace strata::ops
