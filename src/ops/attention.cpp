// Tiled attention driver (see attention.h), the scalar tile kernels and the KV cache types.
#include "ops/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "ops/attention_kernels.h"
#include "tensor/blocks.h"
#include "tensor/fp16.h"
#include "tensor/kernels.h"
#include "util/error.h"

namespace strata::ops {

namespace {
constexpr int kMaxHeadDim = 1024;  // bound on head sizes (scratch on the stack for q rounding and f16 rows)
}  // namespace

namespace attn {
namespace scalar {
namespace {

void scores_f16(const float* q, int n_rows, int d, const float* k, int n_keys, float scale, float* s, size_t ld) {
  // The values back to f16 bits (exact: they are f16 values) for the F16 vec_dot itself.
  const kernels::TypeKernels& f16 = kernels::kernels_for(DType::F16);
  uint16_t qh[kMaxHeadDim], kh[kMaxHeadDim];
  for (int r = 0; r < n_rows; ++r) {
    for (int i = 0; i < d; ++i) qh[i] = f32_to_fp16(q[size_t(r) * d + i]);
    for (int j = 0; j < n_keys; ++j) {
      for (int i = 0; i < d; ++i) kh[i] = f32_to_fp16(k[size_t(j) * d + i]);
      s[size_t(r) * ld + size_t(j)] = f16.vec_dot(d, kh, qh) * scale;
    }
  }
}

double exp_sum(float* s, int64_t n, float m, double acc) {
  for (int64_t j = 0; j < n; ++j) acc += double(s[j] = std::exp(s[j] - m));
  return acc;
}

void accumulate(const float* e, size_t ld, int n_rows, int n_keys, const float* v, int dv, float* o,
                const float* inv_l) {
  for (int r = 0; r < n_rows; ++r) {
    const float* er = e + size_t(r) * ld;
    float* orow = o + size_t(r) * dv;
    for (int j = 0; j < n_keys; ++j) {
      const float p = fp16_to_f32(f32_to_fp16(er[j] * inv_l[r]));
      for (int i = 0; i < dv; ++i) orow[i] += p * v[size_t(j) * dv + i];
    }
  }
}

// Block b of a Q8_0 or Q4_0 row as 32 signed values (element i at i) and its scale.
float unpack_block(DType type, const uint8_t* row, int b, int8_t* out) {
  if (type == DType::Q8_0) {
    const auto* x = reinterpret_cast<const BlockQ8_0*>(row) + b;
    std::memcpy(out, x->qs, 32);
    return fp16_to_f32(x->d);
  }
  const auto* x = reinterpret_cast<const BlockQ4_0*>(row) + b;
  for (int j = 0; j < 16; ++j) {
    out[j] = int8_t((x->qs[j] & 15) - 8);
    out[j + 16] = int8_t((x->qs[j] >> 4) - 8);
  }
  return fp16_to_f32(x->d);
}

void scores_q(DType key_type, const uint8_t* qq, int n_rows, int d, const uint8_t* const* keys, int n_keys, float scale,
              float* s, size_t ld) {
  const int nb = d / 32;
  int8_t k[32];
  for (int j = 0; j < n_keys; ++j)
    for (int r = 0; r < n_rows; ++r) {
      const auto* q = reinterpret_cast<const BlockQ8_0*>(qq) + size_t(r) * nb;
      float acc[8] = {};
      for (int b = 0; b < nb; ++b) {
        const float dd = unpack_block(key_type, keys[j], b, k) * fp16_to_f32(q[b].d);
        for (int l = 0; l < 8; ++l) {
          int p = 0;
          for (int i = 4 * l; i < 4 * l + 4; ++i) p += int(k[i]) * int(q[b].qs[i]);
          acc[l] = std::fma(dd, float(p), acc[l]);
        }
      }
      s[size_t(r) * ld + size_t(j)] = (((acc[4] + acc[0]) + (acc[6] + acc[2])) + ((acc[5] + acc[1]) + (acc[7] + acc[3]))) * scale;
    }
}

void sequential(const float* s, int n_keys, const float* v, int dv, float* o, float* m, float* l) {
  float M = *m, S = *l;
  for (int j = 0; j < n_keys; ++j) {
    float ms = 1.0f, vs = 1.0f;
    if (s[j] > M) {
      ms = std::exp(M - s[j]);
      M = s[j];
      for (int i = 0; i < dv; ++i) o[i] *= ms;
    } else {
      vs = std::exp(s[j] - M);
    }
    for (int i = 0; i < dv; ++i) o[i] = std::fma(v[size_t(j) * dv + i], vs, o[i]);
    S = flash_sum_step(S, ms, vs);
  }
  *m = M;
  *l = S;
}

}  // namespace
const Kernels kKernels{scores_f16, {exp_sum}, accumulate, scores_q, sequential};
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
constexpr int kMaxSplitTokens = 4;   // f16 split-K: most query tokens (generation, small drafts)
// f16 path: scores an item keeps over its positions, at most (per thread), and the scores split-K
// keeps across its phases (once). Rows that do not fit are computed again in each sweep, a key
// block at a time: the same values, so the same result, and the scratch bounded at any context.
constexpr size_t kScoreFloats = size_t(1) << 18;       // 1 MiB a thread
constexpr size_t kSplitScoreFloats = size_t(1) << 20;  // 4 MiB

// q rounded as llama.cpp rounds it before its dots with keys of `key_type`: to f16 for f16 keys,
// through q8_0 for quantized keys (the vec_dot type of q8_0 / q4_0).
void round_query(DType key_type, const float* q, float* out, int d) {
  const DType dot_type = kernels::kernels_for(key_type).vec_dot_type;
  const kernels::TypeKernels& k = kernels::kernels_for(dot_type);
  alignas(64) uint8_t buf[kMaxHeadDim * 2];
  k.quantize_activation(q, buf, d);
  k.dequantize(buf, out, d);
}

// Split-K ranges for n_threads: enough items for four per thread with the KV heads, at most kMaxSplits.
int max_splits(const AttentionShape& s, int n_threads) {
  const int64_t want = (4 * int64_t(std::max(1, n_threads)) + s.n_head_kv - 1) / s.n_head_kv;
  return int(std::clamp<int64_t>(want, 1, kMaxSplits));
}

}  // namespace

AttentionScratch::Sizes AttentionScratch::sizes(const AttentionShape& s, int /*n_batch*/, int64_t n_ctx,
                                                int n_threads) {
  if (s.n_head_kv <= 0 || s.n_head % s.n_head_kv != 0)
    throw Error("attention: " + std::to_string(s.n_head) + " query heads do not group over " +
                std::to_string(s.n_head_kv) + " KV heads");
  if (s.head_dim_k <= 0 || s.head_dim_k > kMaxHeadDim || s.head_dim_v <= 0 || s.head_dim_v > kMaxHeadDim)
    throw Error("attention: head size " + std::to_string(s.head_dim_k) + "/" + std::to_string(s.head_dim_v) +
                " outside 1.." + std::to_string(kMaxHeadDim));
  const size_t group = size_t(s.n_head / s.n_head_kv), ctx = size_t(std::max<int64_t>(1, n_ctx));
  const size_t rows = size_t(kBlockQ) * group, dk = size_t(s.head_dim_k), dv = size_t(s.head_dim_v);
  Sizes z;
  z.q = rows * dk;
  z.qq = rows * row_bytes(DType::Q8_0, (dk + 31) / 32 * 32);
  z.k = size_t(kBlockK) * dk;
  z.v = size_t(kBlockK) * dv;
  z.s = group * kBlockK;
  z.o = rows * dv;
  z.rows = z.sum = rows;
  z.scores = std::min(rows * ctx, kScoreFloats);
  z.sums = size_t(max_splits(s, n_threads)) * size_t(kBlockQ) * size_t(s.n_head);
  z.partial = z.sums * (dv + 2);
  z.split_scores = std::min(size_t(kMaxSplitTokens) * size_t(s.n_head) * ctx, kSplitScoreFloats);
  z.n_tiles = size_t(std::max(1, n_threads));
  return z;
}

namespace {
// Every buffer of `a` no larger than the same of `b`.
bool within(const AttentionScratch::Sizes& a, const AttentionScratch::Sizes& b) {
  return a.q <= b.q && a.k <= b.k && a.v <= b.v && a.s <= b.s && a.o <= b.o && a.rows <= b.rows &&
         a.qq <= b.qq && a.sum <= b.sum && a.scores <= b.scores && a.partial <= b.partial && a.sums <= b.sums &&
         a.split_scores <= b.split_scores && a.n_tiles <= b.n_tiles;
}
}  // namespace

void AttentionScratch::init(const AttentionShape& s, int batch, int64_t ctx, int n_threads) {
  allocate(sizes(s, batch, ctx, n_threads), batch);
}

void AttentionScratch::reserve(const AttentionShape& s, int batch, int64_t ctx, int n_threads) {
  const Sizes want = sizes(s, batch, ctx, n_threads);
  if (!tiles.empty() && batch <= n_batch && within(want, sized)) return;
  if (tiles.empty()) return allocate(want, batch);
  Sizes z = sized;  // the larger of each, so that alternating shapes do not reallocate every call
  for (auto [a, b] : {std::pair{&z.q, want.q}, {&z.k, want.k}, {&z.v, want.v}, {&z.s, want.s},
                      {&z.o, want.o}, {&z.rows, want.rows}, {&z.qq, want.qq}, {&z.sum, want.sum},
                      {&z.scores, want.scores}, {&z.partial, want.partial}, {&z.sums, want.sums},
                      {&z.split_scores, want.split_scores}, {&z.n_tiles, want.n_tiles}})
    *a = std::max(*a, b);
  allocate(z, std::max(batch, n_batch));
}

void AttentionScratch::allocate(const Sizes& z, int batch) {
  n_batch = batch;
  sized = z;
  tiles.resize(z.n_tiles);
  for (Tile& t : tiles) {
    t.q.assign(z.q, 0.0f);
    t.k.assign(z.k, 0.0f);
    t.v.assign(z.v, 0.0f);
    t.s.assign(z.s, 0.0f);
    t.o.assign(z.o, 0.0f);
    t.m.assign(z.rows, 0.0f);
    t.l.assign(z.rows, 0.0f);
    t.qq.assign(z.qq, 0);
    t.sum.assign(z.sum, 0.0);
    t.scores.assign(z.scores, 0.0f);
  }
  sums.assign(z.sums, 0.0);
  partial.assign(z.partial, 0.0f);
  split_scores.assign(z.split_scores, 0.0f);
}

size_t AttentionScratch::bytes_for(const AttentionShape& s, int batch, int64_t ctx, int n_threads) {
  const Sizes z = sizes(s, batch, ctx, n_threads);
  const size_t tile = (z.q + z.k + z.v + z.s + z.o + 2 * z.rows + z.scores) * sizeof(float) +
                      z.qq + z.sum * sizeof(double);
  return z.n_tiles * tile + (z.partial + z.split_scores) * sizeof(float) + z.sums * sizeof(double);
}

size_t AttentionScratch::bytes() const {
  size_t n = (partial.capacity() + split_scores.capacity()) * sizeof(float) + sums.capacity() * sizeof(double);
  for (const Tile& t : tiles)
    n += (t.q.capacity() + t.k.capacity() + t.v.capacity() + t.s.capacity() + t.o.capacity() +
          t.m.capacity() + t.l.capacity() + t.scores.capacity()) * sizeof(float) +
         t.qq.capacity() + t.sum.capacity() * sizeof(double);
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
  if (!within(AttentionScratch::sizes(shape, n_tokens, 1, pool.n_threads()), scratch.sized))
    throw Error("attention: shape or thread count larger than the scratch was sized for");
  const attn::Kernels& kern = attn::kernels_for(kernels::active_isa());
  const kernels::TypeKernels& k_conv = kernels::kernels_for(kv_k.type);
  const kernels::TypeKernels& v_conv = kernels::kernels_for(kv_v.type);

  // Visible positions of query token t: [first(t), last(t)].
  auto first = [&](int64_t t) {
    return shape.window > 0 ? std::max<int64_t>(0, pos0 + t - shape.window + 1) : int64_t(0);
  };
  auto last = [&](int64_t t) { return pos0 + t; };

  // f16 caches follow llama.cpp's non-flash path step for step (its perplexity agrees with
  // llama.cpp's to 0.01%; the online softmax, same maths in another order, drifts 0.4-0.8% on
  // Gemma 3): scores as the f16 vec_dot of the f16 query with the cached key times the scale, the
  // row max, the sum of e^(s - max) in double, then the probabilities e^(s - max) * (1 / sum)
  // rounded to f16, accumulated against V in f32 in position order with no final division. Each
  // score is computed once and kept, then overwritten by its e^(s - max), for the whole row, where
  // an item's rows over its positions fit the scratch (items take fewer query tokens for that);
  // else each sweep computes them again a key block at a time.
  // Quantized caches need flash attention in llama.cpp; they follow its CPU kernel for them
  // (ggml's flash_attn_ext_f16_one_chunk) key by key: the query as q8_0, each score the keys' vec_dot
  // with it, the running max, sum and output updated per key, one division at the end.
  const bool f16_path = kv_k.type == DType::F16 && kv_v.type == DType::F16;
  const int64_t span = last(n_tokens - 1) - first(0) + 1;  // positions some query token sees

  // Split-K when the query blocks and KV heads alone leave threads idle (with an f16 cache only for
  // the few tokens of generation, whose rows' scores the shared split_scores holds).
  int n_splits = 1;
  if (n_tokens <= kBlockQ && (!f16_path || n_tokens <= kMaxSplitTokens)) {
    n_splits = int(std::clamp<int64_t>(span / kMinSplitKeys, 1, max_splits(shape, pool.n_threads())));
  }
  // Query tokens per item: kBlockQ, or for the f16 path as many as keep their rows' scores over
  // the item's positions (at most the window and the item's tokens) within the tile's.
  int block_q = kBlockQ;
  if (f16_path && n_splits == 1) {
    auto item_scores = [&](int n) {
      const int64_t positions = shape.window > 0 ? std::min<int64_t>(span, shape.window + n - 1) : span;
      return size_t(n) * group * size_t(positions);
    };
    int n = std::min(kBlockQ, n_tokens);
    while (n > 1 && item_scores(n) > scratch.tiles[0].scores.size()) --n;
    if (item_scores(n) <= scratch.tiles[0].scores.size()) block_q = n;
  }
  const int n_qblocks = (n_tokens + block_q - 1) / block_q;
  const bool split_kept = size_t(n_tokens) * shape.n_head * size_t(span) <= scratch.split_scores.size();
  const int64_t n_items = int64_t(shape.n_head_kv) * n_qblocks * n_splits;
  const size_t part_stride = size_t(dv + 2);

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
    it.t0 = qb * block_q;
    it.t1 = std::min(n_tokens, it.t0 + block_q);
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
  // The item's query rows rounded for the keys' dot (to f16 values, or as q8_0 blocks), outputs
  // and sums cleared.
  const kernels::TypeKernels& q8 = kernels::kernels_for(DType::Q8_0);
  const size_t qq_row = f16_path ? 0 : row_bytes(DType::Q8_0, dk);
  auto prepare = [&](AttentionScratch::Tile& tile, const Item& it) {
    for (int t = it.t0; t < it.t1; ++t)
      for (int g = 0; g < group; ++g) {
        const float* src = q + t * q_stride + int64_t(it.kvh * group + g) * dk;
        const size_t row = size_t((t - it.t0) * group + g);
        if (f16_path) {
          round_query(kv_k.type, src, tile.q.data() + row * dk, dk);
        } else {  // as llama.cpp's from_float into the keys' vec_dot type (Q8_0 for both quantized types)
          q8.quantize_activation(src, tile.qq.data() + row * qq_row, dk);
        }
      }
    std::fill_n(tile.o.data(), size_t(it.rows) * dv, 0.0f);
    std::fill_n(tile.sum.data(), it.rows, 0.0);
  };
  // Each key block of the item's range [a, b) converted to f32 once (the f16 keys if with_k, the
  // values if with_v), then body(t, j0, j1, kb) for each query token that sees some of it: [j0, j1)
  // its visible positions in the block starting at kb.
  auto for_blocks = [&](AttentionScratch::Tile& tile, const Item& it, bool with_k, bool with_v, auto&& body) {
    for (int64_t kb = it.a; kb < it.b; kb += kBlockK) {
      const int64_t ke = std::min(it.b, kb + kBlockK);
      for (int64_t p = kb; p < ke; ++p) {
        if (with_k) k_conv.dequantize(kv_k.head(p, it.kvh), tile.k.data() + size_t(p - kb) * dk, dk);
        if (with_v) v_conv.dequantize(kv_v.head(p, it.kvh), tile.v.data() + size_t(p - kb) * dv, dv);
      }
      for (int t = it.t0; t < it.t1; ++t) {
        const int64_t j0 = std::max(kb, first(t)), j1 = std::min(ke, last(t) + 1);
        if (j0 < j1) body(t, j0, j1, kb);
      }
    }
  };

  // Quantized caches: each key block's values converted once, then for each token's rows the
  // scores against the block's keys and the per-key online step.
  auto flash = [&](AttentionScratch::Tile& tile, const Item& it) {
    std::fill_n(tile.m.data(), it.rows, -std::numeric_limits<float>::infinity());
    std::fill_n(tile.l.data(), it.rows, 0.0f);
    const uint8_t* keys[kBlockK];
    int64_t keys_kb = -1;
    for_blocks(tile, it, false, true, [&](int t, int64_t j0, int64_t j1, int64_t kb) {
      if (keys_kb != kb) {
        for (int64_t p = kb; p < std::min(it.b, kb + kBlockK); ++p) keys[p - kb] = kv_k.head(p, it.kvh);
        keys_kb = kb;
      }
      const int n = int(j1 - j0);
      const size_t row = size_t(t - it.t0) * group;
      kern.scores_q(kv_k.type, tile.qq.data() + row * qq_row, group, dk, keys + (j0 - kb), n, shape.scale,
                    tile.s.data(), kBlockK);
      for (int g = 0; g < group; ++g)
        kern.sequential(tile.s.data() + size_t(g) * kBlockK, n, tile.v.data() + size_t(j0 - kb) * dv, dv,
                        tile.o.data() + (row + g) * dv, tile.m.data() + row + g, tile.l.data() + row + g);
    });
  };

  // f16 path. Row (t, g) of an item keeps its scores at rows(t) + g * ld, indexed by position minus
  // origin: in the thread's tile for a whole item, in split_scores across the splits of split-K;
  // or, where they do not fit there, nowhere (base null): each sweep computes them again.
  struct ScoreRows {
    float* base = nullptr;  // row (t0, 0)
    int t0 = 0;
    size_t ld = 0, token_stride = 0;
    int64_t origin = 0;
    bool kept() const { return base != nullptr; }
    float* at(int t, int g, int64_t pos) const {
      return base + size_t(t - t0) * token_stride + size_t(g) * ld + size_t(pos - origin);
    }
  };
  auto score_rows = [&](AttentionScratch::Tile& tile, const Item& it) {
    if (n_splits > 1) {
      if (!split_kept) return ScoreRows{};
      const size_t ld = size_t(span);
      return ScoreRows{scratch.split_scores.data() + size_t(it.kvh * group) * ld, 0, ld, size_t(shape.n_head) * ld,
                       first(0)};
    }
    const size_t ld = size_t(it.b - it.a);
    if (size_t(it.rows) * ld > tile.scores.size()) return ScoreRows{};
    return ScoreRows{tile.scores.data(), it.t0, ld, size_t(group) * ld, it.a};
  };
  // Visible positions of token t within the item: [lo, hi).
  auto visible = [&](const Item& it, int t) {
    return std::pair<int64_t, int64_t>{std::max(it.a, first(t)), std::min(it.b, last(t) + 1)};
  };
  // Token t's rows' scores against [j0, j1) of the key block at kb (converted into the tile): into
  // the kept rows, or where none are kept into the tile's block of scores. Row g's first is at the
  // result + g * ld.
  auto block_scores = [&](AttentionScratch::Tile& tile, const Item& it, const ScoreRows& sr, int t, int64_t j0,
                          int64_t j1, int64_t kb) {
    float* s = sr.kept() ? sr.at(t, 0, j0) : tile.s.data();
    const size_t ld = sr.kept() ? sr.ld : size_t(kBlockK);
    kern.scores_f16(tile.q.data() + size_t(t - it.t0) * group * dk, group, dk, tile.k.data() + size_t(j0 - kb) * dk,
                    int(j1 - j0), shape.scale, s, ld);
    return std::pair<float*, size_t>{s, ld};
  };
  // Every score of the item's rows (once where they are kept); each row's max into m.
  auto f16_max = [&](AttentionScratch::Tile& tile, const Item& it, const ScoreRows& sr) {
    std::fill_n(tile.m.data(), it.rows, -std::numeric_limits<float>::infinity());
    for_blocks(tile, it, true, false, [&](int t, int64_t j0, int64_t j1, int64_t kb) {
      const auto [s, ld] = block_scores(tile, it, sr, t, j0, j1, kb);
      for (int g = 0; g < group; ++g) {
        // In 8 lanes, in registers (one running max through memory cost 6% of a 4k prompt); the
        // max of finite floats is the same in any order (but for the sign of a zero, which
        // e^(s - max) does not see).
        const float* sg = s + size_t(g) * ld;
        const int64_t n = j1 - j0;
        float lane[8];
        std::fill_n(lane, 8, tile.m[size_t(t - it.t0) * group + g]);
        int64_t j = 0;
        for (; j + 8 <= n; j += 8)
          for (int i = 0; i < 8; ++i) lane[i] = lane[i] > sg[j + i] ? lane[i] : sg[j + i];
        for (; j < n; ++j) lane[0] = std::max(lane[0], sg[j]);
        tile.m[size_t(t - it.t0) * group + g] = *std::max_element(lane, lane + 8);
      }
    });
  };
  // Each row's sum of e^(s - m) in double in position order into sum (kept scores replaced by
  // their e^(s - m)).
  auto f16_exp = [&](AttentionScratch::Tile& tile, const Item& it, const ScoreRows& sr) {
    if (sr.kept()) {
      for (int t = it.t0; t < it.t1; ++t) {
        const auto [lo, hi] = visible(it, t);
        for (int g = 0; g < group; ++g) {
          const size_t row = size_t(t - it.t0) * group + g;
          tile.sum[row] = kern.exp_sum(sr.at(t, g, lo), hi - lo, tile.m[row]);
        }
      }
      return;
    }
    std::fill_n(tile.sum.data(), it.rows, 0.0);
    for_blocks(tile, it, true, false, [&](int t, int64_t j0, int64_t j1, int64_t kb) {
      const auto [s, ld] = block_scores(tile, it, sr, t, j0, j1, kb);
      for (int g = 0; g < group; ++g) {
        const size_t row = size_t(t - it.t0) * group + g;
        tile.sum[row] = kern.exp_sum(s + size_t(g) * ld, j1 - j0, tile.m[row], tile.sum[row]);
      }
    });
  };
  // The rounded probabilities against V, with l = 1 / sum.
  auto f16_output = [&](AttentionScratch::Tile& tile, const Item& it, const ScoreRows& sr) {
    for_blocks(tile, it, !sr.kept(), true, [&](int t, int64_t j0, int64_t j1, int64_t kb) {
      const size_t row = size_t(t - it.t0) * group;
      const float* e = sr.kept() ? sr.at(t, 0, j0) : nullptr;
      size_t ld = sr.ld;
      if (!e) {
        const auto [s, s_ld] = block_scores(tile, it, sr, t, j0, j1, kb);
        for (int g = 0; g < group; ++g) kern.exp_sum(s + size_t(g) * s_ld, j1 - j0, tile.m[row + size_t(g)]);
        e = s;
        ld = s_ld;
      }
      kern.accumulate(e, ld, group, int(j1 - j0), tile.v.data() + size_t(j0 - kb) * dv, dv, tile.o.data() + row * dv,
                      tile.l.data() + row);
    });
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
  // Each split's m (and l and o) into its partials, or back.
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
  auto add_sink_flash = [&](AttentionScratch::Tile& tile, const Item& it) {
    for_rows(it, [&](size_t row, int head) {
      const float s = sinks[head];
      float& m = tile.m[row];
      float ms = 1.0f, vs = 1.0f;
      if (s > m) {
        ms = std::exp(m - s);
        for (int i = 0; i < dv; ++i) tile.o[row * dv + size_t(i)] *= ms;
        m = s;
      } else {
        vs = std::exp(s - m);
      }
      tile.l[row] = attn::flash_sum_step(tile.l[row], ms, vs);
    });
  };

  for_items([&](AttentionScratch::Tile& tile, const Item& it) {
    if (!f16_path) {
      flash(tile, it);
      if (n_splits == 1) {
        if (sinks) add_sink_flash(tile, it);
        write_out(tile, it, true);
      } else {
        store_part(tile, it, true);
      }
      return;
    }
    const ScoreRows sr = score_rows(tile, it);
    f16_max(tile, it, sr);
    if (n_splits > 1) return store_part(tile, it, false);
    if (sinks) for_rows(it, [&](size_t row, int head) { tile.m[row] = std::max(tile.m[row], sinks[head]); });
    f16_exp(tile, it, sr);
    if (sinks) for_rows(it, [&](size_t row, int head) { tile.sum[row] += double(std::exp(sinks[head] - tile.m[row])); });
    for (int r = 0; r < it.rows; ++r) tile.l[size_t(r)] = float(1.0 / tile.sum[size_t(r)]);
    f16_output(tile, it, sr);
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
  // f16 split-K: the ranges' maxes merged, each range's e^(s - max) and sum at the global max, the
  // sums merged (in double, 1 / sum handed back), each range's rounded output, and the outputs
  // added in order.
  each_row([&](int t, int head, float*) {
    float m = sinks ? sinks[head] : -std::numeric_limits<float>::infinity();
    for (int s = 0; s < n_splits; ++s) m = std::max(m, part_at(s, t, head)[0]);
    for (int s = 0; s < n_splits; ++s) part_at(s, t, head)[0] = m;
  });
  for_items([&](AttentionScratch::Tile& tile, const Item& it) {
    load_part(tile, it);
    f16_exp(tile, it, score_rows(tile, it));
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
    f16_output(tile, it, score_rows(tile, it));
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
