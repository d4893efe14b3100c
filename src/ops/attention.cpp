// Tiled attention driver (see attention.h), the scalar tile kernels and the KV cache types.
#include "ops/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "ops/attention_kernels.h"
#include "tensor/fp16.h"
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

void accumulate(float* s, int n_rows, int n_keys, const float* v, int dv, float* o, const float* m,
                const float* inv_l) {
  for (int r = 0; r < n_rows; ++r) {
    float* sr = s + size_t(r) * n_keys;
    for (int j = 0; j < n_keys; ++j) sr[j] = fp16_to_f32(f32_to_fp16(std::exp(sr[j] - m[r]) * inv_l[r]));
    float* orow = o + size_t(r) * dv;
    for (int j = 0; j < n_keys; ++j)
      for (int i = 0; i < dv; ++i) orow[i] += sr[j] * v[size_t(j) * dv + i];
  }
}

}  // namespace
const Kernels kKernels{scores, scores_t, update, accumulate};
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
    t.q16.assign(rows * size_t(s.head_dim_k), 0);
    t.sum.assign(rows, 0.0);
  }
  sums.assign(size_t(kMaxSplits) * size_t(kBlockQ) * size_t(s.n_head), 0.0);
  partial.assign(size_t(kMaxSplits) * size_t(kBlockQ) * size_t(s.n_head) * size_t(s.head_dim_v + 2), 0.0f);
}

size_t AttentionScratch::bytes_for(const AttentionShape& s, int /*n_batch*/, int n_threads) {
  // As init: per thread q, k, v, kt, s, o, m, l, q16 and sum of one tile; the split-K partials and sums once.
  const size_t group = size_t(s.n_head / std::max(1, s.n_head_kv));
  const size_t rows = size_t(kBlockQ) * group, dk = size_t(s.head_dim_k), dv = size_t(s.head_dim_v);
  const size_t tile_floats = rows * dk + kBlockK * dk + kBlockK * dv + kBlockK * dk + group * kBlockK + rows * dv + 2 * rows;
  const size_t tile = tile_floats * sizeof(float) + rows * dk * sizeof(uint16_t) + rows * sizeof(double);
  const size_t splits = size_t(kMaxSplits) * size_t(kBlockQ) * size_t(s.n_head);
  return size_t(n_threads) * tile + splits * (dv + 2) * sizeof(float) + splits * sizeof(double);
}

size_t AttentionScratch::bytes() const {
  size_t n = partial.capacity() * sizeof(float) + sums.capacity() * sizeof(double);
  for (const Tile& t : tiles)
    n += (t.q.capacity() + t.k.capacity() + t.kt.capacity() + t.v.capacity() + t.s.capacity() + t.o.capacity() +
          t.m.capacity() + t.l.capacity()) * sizeof(float) +
         t.q16.capacity() * sizeof(uint16_t) + t.sum.capacity() * sizeof(double);
  return n;
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
  // f16 caches follow llama.cpp's non-flash path step for step, as the per-(token, head) loop
  // before this kernel did (its perplexity agrees with llama.cpp's to 0.01%; the online softmax,
  // same maths in another order, drifts 0.4-0.8% on Gemma 3): scores as the f16 vec_dot of the
  // f16 query with the cached key times the scale, the row max, the sum of e^(s - max) in double,
  // then the probabilities e^(s - max) * (1 / sum) rounded to f16, accumulated against V in f32 in
  // position order with no final division. Three sweeps over the keys (max, sum, output).
  // Quantized caches need flash attention in llama.cpp, whose CPU kernel keeps f32 probabilities
  // and divides at the end: one online sweep, scores from the f32 tiles.
  const bool f16_path = kv_k.type == DType::F16 && kv_v.type == DType::F16;

  struct Item {
    int kvh, split, t0, t1, rows;
    int64_t a, b;  // positions [a, b) this item covers
  };
  auto item_at = [&](int64_t item) {
    Item it;
    // Later query blocks see more keys: hand them out first.
    const int qb = n_qblocks - 1 - int(item / (int64_t(shape.n_head_kv) * n_splits));
    it.kvh = int(item / n_splits % shape.n_head_kv);
    it.split = int(item % n_splits);
    it.t0 = qb * kBlockQ;
    it.t1 = std::min(n_tokens, it.t0 + kBlockQ);
    it.rows = (it.t1 - it.t0) * group;
    it.a = first(it.t0);
    it.b = last(it.t1 - 1) + 1;
    if (n_splits > 1) {
      const int64_t len = it.b - it.a, a0 = it.a;
      it.a = a0 + len * it.split / n_splits;
      it.b = a0 + len * (it.split + 1) / n_splits;
    }
    return it;
  };
  auto part_at = [&](int split, int t, int head) {
    return scratch.partial.data() + ((size_t(split) * kBlockQ + size_t(t)) * shape.n_head + head) * part_stride;
  };
  // The item's query rows rounded for the keys' dot (and as f16 bits for the f16 path), outputs
  // and sums cleared.
  auto prepare = [&](AttentionScratch::Tile& tile, const Item& it) {
    for (int t = it.t0; t < it.t1; ++t)
      for (int g = 0; g < group; ++g)
        round_query(kv_k.type, q + t * q_stride + int64_t(it.kvh * group + g) * dk,
                    tile.q.data() + size_t((t - it.t0) * group + g) * dk, dk);
    if (f16_path)
      for (size_t i = 0; i < size_t(it.rows) * dk; ++i) tile.q16[i] = f32_to_fp16(tile.q[i]);
    std::fill_n(tile.o.data(), size_t(it.rows) * dv, 0.0f);
    std::fill_n(tile.sum.data(), it.rows, 0.0);
  };
  enum class Pass { online, max, sum, output };
  // One sweep over the item's key blocks. online: the online softmax with V (m, l, o); max: the
  // rows' max m (l as a by-product); sum: sum += e^(s - m) in double; output: the rounded
  // probabilities against V, with m and l = 1 / sum.
  auto sweep = [&](AttentionScratch::Tile& tile, const Item& it, Pass pass) {
    const bool transposed = !f16_path && it.rows >= kTransposeRows;
    const bool with_v = pass == Pass::online || pass == Pass::output;
    for (int64_t kb = it.a; kb < it.b; kb += kBlockK) {
      const int64_t ke = std::min(it.b, kb + kBlockK);
      for (int64_t p = kb; p < ke; ++p) {
        if (!f16_path) k_conv.dequantize(kv_k.head(p, it.kvh), tile.k.data() + size_t(p - kb) * dk, dk);
        if (with_v) v_conv.dequantize(kv_v.head(p, it.kvh), tile.v.data() + size_t(p - kb) * dv, dv);
      }
      if (transposed)
        for (int64_t p = 0; p < ke - kb; ++p)
          for (int i = 0; i < dk; ++i) tile.kt[size_t(i) * kBlockK + size_t(p)] = tile.k[size_t(p) * dk + i];
      for (int t = it.t0; t < it.t1; ++t) {
        const int64_t j0 = std::max(kb, first(t)), j1 = std::min(ke, last(t) + 1);
        if (j0 >= j1) continue;
        const int n = int(j1 - j0);
        const size_t row = size_t(t - it.t0) * group;
        if (f16_path) {
          for (int g = 0; g < group; ++g)
            for (int64_t j = j0; j < j1; ++j)
              tile.s[size_t(g) * n + size_t(j - j0)] =
                  k_conv.vec_dot(dk, kv_k.head(j, it.kvh), tile.q16.data() + (row + g) * dk) * shape.scale;
        } else if (transposed) {
          kern.scores_t(tile.q.data() + row * dk, group, tile.kt.data() + size_t(j0 - kb), kBlockK, n, dk,
                        shape.scale, tile.s.data());
        } else {
          kern.scores(tile.q.data() + row * dk, group, tile.k.data() + size_t(j0 - kb) * dk, n, dk, shape.scale,
                      tile.s.data());
        }
        const float* vb = tile.v.data() + size_t(j0 - kb) * dv;
        float* ob = tile.o.data() + row * dv;
        switch (pass) {
          case Pass::online:
            kern.update(tile.s.data(), group, n, vb, dv, ob, tile.m.data() + row, tile.l.data() + row);
            break;
          case Pass::max:
            kern.update(tile.s.data(), group, n, nullptr, 0, nullptr, tile.m.data() + row, tile.l.data() + row);
            break;
          case Pass::sum:
            for (int g = 0; g < group; ++g) {
              const float mg = tile.m[row + g];
              double acc = tile.sum[row + g];
              for (int j = 0; j < n; ++j) acc += double(std::exp(tile.s[size_t(g) * n + size_t(j)] - mg));
              tile.sum[row + g] = acc;
            }
            break;
          case Pass::output:
            kern.accumulate(tile.s.data(), group, n, vb, dv, ob, tile.m.data() + row, tile.l.data() + row);
            break;
        }
      }
    }
  };
  auto for_items = [&](auto&& body) {
    pool.parallel_for(
        n_items,
        [&](int64_t i0, int64_t i1, int thread) {
          AttentionScratch::Tile& tile = scratch.tiles[size_t(thread)];
          for (int64_t item = i0; item < i1; ++item) {
            const Item it = item_at(item);
            prepare(tile, it);
            body(tile, it);
          }
        },
        n_items);
  };
  // Each split's m (and, online, l and o) into its partials.
  auto store_part = [&](AttentionScratch::Tile& tile, const Item& it, bool with_o) {
    for (int t = it.t0; t < it.t1; ++t)
      for (int g = 0; g < group; ++g) {
        const size_t row = size_t(t - it.t0) * group + g;
        float* part = part_at(it.split, t - it.t0, it.kvh * group + g);
        part[0] = tile.m[row];
        part[1] = tile.l[row];
        if (with_o) std::copy_n(tile.o.data() + row * dv, dv, part + 2);
      }
  };
  auto load_part = [&](AttentionScratch::Tile& tile, const Item& it) {
    for (int t = it.t0; t < it.t1; ++t)
      for (int g = 0; g < group; ++g) {
        const size_t row = size_t(t - it.t0) * group + g;
        const float* part = part_at(it.split, t - it.t0, it.kvh * group + g);
        tile.m[row] = part[0];
        tile.l[row] = part[1];
      }
  };
  auto write_out = [&](AttentionScratch::Tile& tile, const Item& it, bool divide) {
    for (int t = it.t0; t < it.t1; ++t)
      for (int g = 0; g < group; ++g) {
        const size_t row = size_t(t - it.t0) * group + g;
        const float* o = tile.o.data() + row * dv;
        float* dst = out + t * o_stride + int64_t(it.kvh * group + g) * dv;
        const float inv = divide ? 1.0f / tile.l[row] : 1.0f;
        for (int i = 0; i < dv; ++i) dst[i] = o[i] * inv;
      }
  };

  // Sinks (gpt-oss): each head's sink logit joins the max and the sum of its softmax and adds no
  // value, as llama.cpp's soft_max with sinks (f16 path) and its flash kernel's sink step (online).
  const float* sinks = shape.sinks;
  auto for_rows = [&](const Item& it, auto&& fn) {
    for (int r = 0; r < it.rows; ++r) fn(size_t(r), it.kvh * group + r % group);
  };
  auto add_sink_online = [&](AttentionScratch::Tile& tile, const Item& it) {
    for_rows(it, [&](size_t row, int head) {
      const float s = sinks[head];
      float& m = tile.m[row];
      if (s > m) {
        const float ms = std::exp(m - s);
        for (int i = 0; i < dv; ++i) tile.o[row * dv + size_t(i)] *= ms;
        tile.l[row] = tile.l[row] * ms + 1.0f;
        m = s;
      } else {
        tile.l[row] += std::exp(s - m);
      }
    });
  };

  for_items([&](AttentionScratch::Tile& tile, const Item& it) {
    std::fill_n(tile.m.data(), it.rows, -std::numeric_limits<float>::infinity());
    std::fill_n(tile.l.data(), it.rows, 0.0f);
    if (!f16_path) {
      sweep(tile, it, Pass::online);
      if (n_splits == 1) {
        if (sinks) add_sink_online(tile, it);
        write_out(tile, it, true);
      } else {
        store_part(tile, it, true);
      }
      return;
    }
    sweep(tile, it, Pass::max);
    if (n_splits > 1) return store_part(tile, it, false);
    if (sinks) for_rows(it, [&](size_t row, int head) { tile.m[row] = std::max(tile.m[row], sinks[head]); });
    sweep(tile, it, Pass::sum);
    if (sinks) for_rows(it, [&](size_t row, int head) { tile.sum[row] += double(std::exp(sinks[head] - tile.m[row])); });
    for (int r = 0; r < it.rows; ++r) tile.l[size_t(r)] = float(1.0 / tile.sum[size_t(r)]);
    sweep(tile, it, Pass::output);
    write_out(tile, it, false);
  });
  if (n_splits == 1) return;

  auto each_row = [&](auto&& fn) {
    for (int t = 0; t < n_tokens; ++t)
      for (int head = 0; head < shape.n_head; ++head) fn(t, head, out + t * o_stride + int64_t(head) * dv);
  };
  if (!f16_path) {
    // Merge the ranges' partial softmaxes: weights e^(m_s - M), M the largest running max.
    each_row([&](int t, int head, float* dst) {
      float m = sinks ? sinks[head] : -std::numeric_limits<float>::infinity();
      for (int s = 0; s < n_splits; ++s) m = std::max(m, part_at(s, t, head)[0]);
      std::fill_n(dst, dv, 0.0f);
      float l = sinks ? std::exp(sinks[head] - m) : 0.0f;
      for (int s = 0; s < n_splits; ++s) {
        const float* ps = part_at(s, t, head);
        if (ps[1] == 0.0f) continue;  // no visible position in this range
        const float w = std::exp(ps[0] - m);
        l += ps[1] * w;
        for (int i = 0; i < dv; ++i) dst[i] += ps[2 + i] * w;
      }
      const float inv = 1.0f / l;
      for (int i = 0; i < dv; ++i) dst[i] *= inv;
    });
    return;
  }
  // f16 split-K: the ranges' maxes merged, each range's sum at the global max, the sums merged
  // (in double, 1 / sum handed back), each range's rounded output, and the outputs added in order.
  each_row([&](int t, int head, float*) {
    float m = sinks ? sinks[head] : -std::numeric_limits<float>::infinity();
    for (int s = 0; s < n_splits; ++s) m = std::max(m, part_at(s, t, head)[0]);
    for (int s = 0; s < n_splits; ++s) part_at(s, t, head)[0] = m;
  });
  for_items([&](AttentionScratch::Tile& tile, const Item& it) {
    load_part(tile, it);
    sweep(tile, it, Pass::sum);
    for (int t = it.t0; t < it.t1; ++t)
      for (int g = 0; g < group; ++g)
        scratch.sums[(size_t(it.split) * kBlockQ + size_t(t - it.t0)) * shape.n_head + size_t(it.kvh * group + g)] =
            tile.sum[size_t(t - it.t0) * group + g];
  });
  each_row([&](int t, int head, float*) {
    double sum = 0.0;
    for (int s = 0; s < n_splits; ++s) sum += scratch.sums[(size_t(s) * kBlockQ + size_t(t)) * shape.n_head + head];
    if (sinks) sum += double(std::exp(sinks[head] - part_at(0, t, head)[0]));
    for (int s = 0; s < n_splits; ++s) part_at(s, t, head)[1] = float(1.0 / sum);
  });
  for_items([&](AttentionScratch::Tile& tile, const Item& it) {
    load_part(tile, it);
    sweep(tile, it, Pass::output);
    store_part(tile, it, true);
  });
  each_row([&](int t, int head, float* dst) {
    std::fill_n(dst, dv, 0.0f);
    for (int s = 0; s < n_splits; ++s) {
      const float* ps = part_at(s, t, head) + 2;
      for (int i = 0; i < dv; ++i) dst[i] += ps[i];
    }
  });
}

}  // namespace strata::ops
