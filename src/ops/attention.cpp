// Tiled attention driver (see attention.h), the scalar tile kernels and the KV cache types.
#include "ops/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "ops/attention_kernels.h"
#include "tensor/kernels.h"
#include "util/error.h"

namespace strata::ops {

namespace attn {
namespace scalar {
namespace {

void scores(const float* q, int n_rows, const float* k, int n_keys, int d, float scale, float* s) {
  for (int r = 0; r < n_rows; ++r)
    for (int j = 0; j < n_keys; ++j) {
      const float* qr = q + size_t(r) * d;
      const float* kj = k + size_t(j) * d;
      float sum = 0.0f;
      for (int i = 0; i < d; ++i) sum += qr[i] * kj[i];
      s[size_t(r) * n_keys + j] = sum * scale;
    }
}

void scores_t(const float* q, int n_rows, const float* kt, int ld, int n_keys, int d, float scale, float* s) {
  for (int r = 0; r < n_rows; ++r)
    for (int j = 0; j < n_keys; ++j) {
      float sum = 0.0f;
      for (int i = 0; i < d; ++i) sum += q[size_t(r) * d + i] * kt[size_t(i) * ld + j];
      s[size_t(r) * n_keys + j] = sum * scale;
    }
}

void update(float* s, int n_rows, int n_keys, const float* v, int dv, float* o, float* m, float* l) {
  for (int r = 0; r < n_rows; ++r) {
    float* sr = s + size_t(r) * n_keys;
    float m_new = m[r];
    for (int j = 0; j < n_keys; ++j) m_new = std::max(m_new, sr[j]);
    const float c = m[r] == -std::numeric_limits<float>::infinity() ? 0.0f : std::exp(m[r] - m_new);
    float sum = 0.0f;
    for (int j = 0; j < n_keys; ++j) {
      sr[j] = std::exp(sr[j] - m_new);
      sum += sr[j];
    }
    l[r] = l[r] * c + sum;
    m[r] = m_new;
    float* orow = o + size_t(r) * dv;
    for (int i = 0; i < dv; ++i) orow[i] *= c;
    for (int j = 0; j < n_keys; ++j)
      for (int i = 0; i < dv; ++i) orow[i] += sr[j] * v[size_t(j) * dv + i];
  }
}

}  // namespace
const Kernels kKernels{scores, scores_t, update};
}  // namespace scalar

const Kernels& kernels_for(kernels::Isa isa) {
#if !defined(STRATA_SCALAR_ONLY)
  if (isa == kernels::Isa::avx512) return avx512::kKernels;
  if (isa == kernels::Isa::avx2) return avx2::kKernels;
#endif
  return scalar::kKernels;
}
}  // namespace attn

bool is_kv_type(DType type) { return type == DType::F16 || type == DType::Q8_0 || type == DType::Q4_0; }

DType parse_kv_type(const std::string& name) {
  DType t;
  try {
    t = parse_type(name);
  } catch (const Error&) {
    t = DType::F32;
  }
  if (!is_kv_type(t)) throw Error("KV cache type '" + name + "' is not supported (f16, q8_0, q4_0)");
  return t;
}

size_t kv_row_bytes(DType type, int n_heads, int head_dim) {
  if (!is_kv_type(type)) throw Error(std::string("KV cache type ") + type_name(type) + " is not supported");
  if (head_dim % type_info(type).block_elems != 0)
    throw Error(std::string("KV cache type ") + type_name(type) + " needs a head size that is a multiple of " +
                std::to_string(type_info(type).block_elems) + ", not " + std::to_string(head_dim));
  return size_t(n_heads) * row_bytes(type, head_dim);
}

namespace {

constexpr int kBlockQ = 32;          // query tokens per tile
constexpr int kBlockK = 64;          // cached positions per converted K/V block
constexpr int kMaxSplits = 32;       // split-K: most ranges one query block's keys are split into
constexpr int kMinSplitKeys = 256;   // split-K: fewest positions worth a range of their own
constexpr int kMaxHeadDim = 1024;
constexpr int kTransposeRows = 16;   // query rows from which a tile transposes its key blocks    // bound on head sizes (scratch on the stack for q rounding)

// q rounded as llama.cpp rounds it before its dots with keys of `key_type`: to f16 for f16 keys,
// through q8_0 for quantized keys (the vec_dot type of q8_0 / q4_0).
void round_query(DType key_type, const float* q, float* out, int d) {
  const DType dot_type = kernels::kernels_for(key_type).vec_dot_type;
  const kernels::TypeKernels& k = kernels::kernels_for(dot_type);
  alignas(64) uint8_t buf[kMaxHeadDim * 2];
  k.quantize_activation(q, buf, d);
  k.dequantize(buf, out, d);
}

}  // namespace

void AttentionScratch::init(const AttentionShape& s, int batch, int n_threads) {
  if (s.n_head_kv <= 0 || s.n_head % s.n_head_kv != 0)
    throw Error("attention: " + std::to_string(s.n_head) + " query heads do not group over " +
                std::to_string(s.n_head_kv) + " KV heads");
  if (s.head_dim_k <= 0 || s.head_dim_k > kMaxHeadDim || s.head_dim_v <= 0 || s.head_dim_v > kMaxHeadDim)
    throw Error("attention: head size " + std::to_string(s.head_dim_k) + "/" + std::to_string(s.head_dim_v) +
                " outside 1.." + std::to_string(kMaxHeadDim));
  const size_t group = size_t(s.n_head / s.n_head_kv);
  const size_t rows = size_t(kBlockQ) * group;
  n_batch = batch;
  tiles.resize(size_t(n_threads));
  for (Tile& t : tiles) {
    t.q.assign(rows * size_t(s.head_dim_k), 0.0f);
    t.k.assign(size_t(kBlockK) * size_t(s.head_dim_k), 0.0f);
    t.v.assign(size_t(kBlockK) * size_t(s.head_dim_v), 0.0f);
    t.kt.assign(size_t(kBlockK) * size_t(s.head_dim_k), 0.0f);
    t.s.assign(group * kBlockK, 0.0f);
    t.o.assign(rows * size_t(s.head_dim_v), 0.0f);
    t.m.assign(rows, 0.0f);
    t.l.assign(rows, 0.0f);
  }
  partial.assign(size_t(kMaxSplits) * size_t(kBlockQ) * size_t(s.n_head) * size_t(s.head_dim_v + 2), 0.0f);
}

size_t AttentionScratch::bytes_for(const AttentionShape& s, int /*n_batch*/, int n_threads) {
  // As init: per thread q, k, v, kt, s, o, m and l of one tile; the split-K partials once.
  const size_t group = size_t(s.n_head / std::max(1, s.n_head_kv));
  const size_t rows = size_t(kBlockQ) * group, dk = size_t(s.head_dim_k), dv = size_t(s.head_dim_v);
  const size_t tile = rows * dk + kBlockK * dk + kBlockK * dv + kBlockK * dk + group * kBlockK + rows * dv + 2 * rows;
  const size_t partial = size_t(kMaxSplits) * size_t(kBlockQ) * size_t(s.n_head) * (dv + 2);
  return (size_t(n_threads) * tile + partial) * sizeof(float);
}

size_t AttentionScratch::bytes() const {
  size_t n = partial.capacity();
  for (const Tile& t : tiles)
    n += t.q.capacity() + t.k.capacity() + t.kt.capacity() + t.v.capacity() + t.s.capacity() + t.o.capacity() + t.m.capacity() +
         t.l.capacity();
  return n * sizeof(float);
}

void kv_store(const KvLayerView& view, int64_t pos, const float* src, int n_heads, int head_dim) {
  // llama.cpp copies into the cache with the type's from_float: F16 conversion, q8_0 as its
  // activations (round half to even), q4_0 by the reference rounding; quantize_activation is each.
  const kernels::TypeKernels& k = kernels::kernels_for(view.type);
  for (int h = 0; h < n_heads; ++h) k.quantize_activation(src + size_t(h) * head_dim, view.head(pos, h), head_dim);
}

void attention(const AttentionShape& shape, const float* q, int n_tokens, int64_t pos0, const KvLayerView& kv_k,
               const KvLayerView& kv_v, float* out, ThreadPool& pool, AttentionScratch& scratch) {
  const int group = shape.n_head / shape.n_head_kv;
  const int dk = shape.head_dim_k, dv = shape.head_dim_v;
  const int64_t q_stride = int64_t(shape.n_head) * dk, o_stride = int64_t(shape.n_head) * dv;
  if (n_tokens > scratch.n_batch) throw Error("attention: batch larger than the scratch was sized for");
  if (size_t(kBlockQ) * group * dk > scratch.tiles[0].q.size() || size_t(kBlockK) * dv > scratch.tiles[0].v.size())
    throw Error("attention: shape larger than the scratch was sized for");
  const attn::Kernels& kern = attn::kernels_for(kernels::active_isa());
  const kernels::TypeKernels& k_conv = kernels::kernels_for(kv_k.type);
  const kernels::TypeKernels& v_conv = kernels::kernels_for(kv_v.type);

  // Visible positions of query token t: [first(t), last(t)].
  auto first = [&](int64_t t) {
    return shape.window > 0 ? std::max<int64_t>(0, pos0 + t - shape.window + 1) : int64_t(0);
  };
  auto last = [&](int64_t t) { return pos0 + t; };

  const int n_qblocks = (n_tokens + kBlockQ - 1) / kBlockQ;
  // Split-K when the query blocks and KV heads alone leave threads idle.
  int n_splits = 1;
  if (n_qblocks == 1) {
    const int64_t span = last(n_tokens - 1) - first(0) + 1;
    const int64_t want = (4 * int64_t(pool.n_threads()) + shape.n_head_kv - 1) / shape.n_head_kv;
    n_splits = int(std::clamp<int64_t>(std::min(want, span / kMinSplitKeys), 1, kMaxSplits));
  }
  const int64_t n_items = int64_t(shape.n_head_kv) * n_qblocks * n_splits;
  const size_t part_stride = size_t(dv + 2);

  pool.parallel_for(
      n_items,
      [&](int64_t i0, int64_t i1, int thread) {
        AttentionScratch::Tile& tile = scratch.tiles[size_t(thread)];
        for (int64_t item = i0; item < i1; ++item) {
          // Later query blocks see more keys: hand them out first.
          const int qb = n_qblocks - 1 - int(item / (int64_t(shape.n_head_kv) * n_splits));
          const int kvh = int(item / n_splits % shape.n_head_kv);
          const int split = int(item % n_splits);
          const int t0 = qb * kBlockQ, t1 = std::min(n_tokens, t0 + kBlockQ);
          const int rows = (t1 - t0) * group;
          const bool transposed = rows >= kTransposeRows;
          int64_t a = first(t0), b = last(t1 - 1) + 1;
          if (n_splits > 1) {
            const int64_t len = b - a;
            const int64_t a0 = a;
            a = a0 + len * split / n_splits;
            b = a0 + len * (split + 1) / n_splits;
          }
          for (int t = t0; t < t1; ++t)
            for (int g = 0; g < group; ++g)
              round_query(kv_k.type, q + t * q_stride + int64_t(kvh * group + g) * dk,
                          tile.q.data() + size_t((t - t0) * group + g) * dk, dk);
          std::fill_n(tile.o.data(), size_t(rows) * dv, 0.0f);
          std::fill_n(tile.m.data(), rows, -std::numeric_limits<float>::infinity());
          std::fill_n(tile.l.data(), rows, 0.0f);
          for (int64_t kb = a; kb < b; kb += kBlockK) {
            const int64_t ke = std::min(b, kb + kBlockK);
            for (int64_t p = kb; p < ke; ++p) {
              k_conv.dequantize(kv_k.head(p, kvh), tile.k.data() + size_t(p - kb) * dk, dk);
              v_conv.dequantize(kv_v.head(p, kvh), tile.v.data() + size_t(p - kb) * dv, dv);
            }
            if (transposed)
              for (int64_t p = 0; p < ke - kb; ++p)
                for (int i = 0; i < dk; ++i) tile.kt[size_t(i) * kBlockK + size_t(p)] = tile.k[size_t(p) * dk + i];
            for (int t = t0; t < t1; ++t) {
              const int64_t j0 = std::max(kb, first(t)), j1 = std::min(ke, last(t) + 1);
              if (j0 >= j1) continue;
              const size_t row = size_t(t - t0) * group;
              if (transposed)
                kern.scores_t(tile.q.data() + row * dk, group, tile.kt.data() + size_t(j0 - kb), kBlockK, int(j1 - j0),
                              dk, shape.scale, tile.s.data());
              else
                kern.scores(tile.q.data() + row * dk, group, tile.k.data() + size_t(j0 - kb) * dk, int(j1 - j0), dk,
                            shape.scale, tile.s.data());
              kern.update(tile.s.data(), group, int(j1 - j0), tile.v.data() + size_t(j0 - kb) * dv, dv,
                          tile.o.data() + row * dv, tile.m.data() + row, tile.l.data() + row);
            }
          }
          for (int t = t0; t < t1; ++t)
            for (int g = 0; g < group; ++g) {
              const size_t row = size_t(t - t0) * group + g;
              const int head = kvh * group + g;
              const float* o = tile.o.data() + row * dv;
              if (n_splits == 1) {
                float* dst = out + t * o_stride + int64_t(head) * dv;
                const float inv = 1.0f / tile.l[row];
                for (int i = 0; i < dv; ++i) dst[i] = o[i] * inv;
              } else {
                float* part = scratch.partial.data() +
                              ((size_t(split) * kBlockQ + size_t(t - t0)) * shape.n_head + head) * part_stride;
                part[0] = tile.m[row];
                part[1] = tile.l[row];
                std::copy_n(o, dv, part + 2);
              }
            }
        }
      },
      n_items);

  if (n_splits == 1) return;
  // Merge the ranges' partial softmaxes: weights e^(m_s - M), M the largest running max.
  for (int t = 0; t < n_tokens; ++t)
    for (int head = 0; head < shape.n_head; ++head) {
      auto part = [&](int s) {
        return scratch.partial.data() + ((size_t(s) * kBlockQ + size_t(t)) * shape.n_head + head) * part_stride;
      };
      float m = -std::numeric_limits<float>::infinity();
      for (int s = 0; s < n_splits; ++s) m = std::max(m, part(s)[0]);
      float* dst = out + t * o_stride + int64_t(head) * dv;
      std::fill_n(dst, dv, 0.0f);
      float l = 0.0f;
      for (int s = 0; s < n_splits; ++s) {
        const float* ps = part(s);
        if (ps[1] == 0.0f) continue;  // no visible position in this range
        const float w = std::exp(ps[0] - m);
        l += ps[1] * w;
        for (int i = 0; i < dv; ++i) dst[i] += ps[2 + i] * w;
      }
      const float inv = 1.0f / l;
      for (int i = 0; i < dv; ++i) dst[i] *= inv;
    }
}

}  // namespace strata::ops
