#pragma once
// Causal self-attention over a cache of keys and values, for any number of query tokens at
// consecutive positions (a prompt batch or one generated token).
//
// One kernel for both phases, flash-attention style: the queries of a block of tokens, for all
// the query heads of one GQA group, against blocks of cached positions, with an online softmax
// (running max and sum per row, output rescaled as the max grows), so no score row over the
// whole context is ever held. Each block of keys and values is converted to f32 once and read
// by every query row of the group. Work is split over (KV head, query block) pairs, and for a
// few query tokens over a long context also over ranges of positions whose partial softmaxes are
// merged at the end (split-K), so one generated token keeps every thread busy.
//
// f16 caches instead reproduce llama.cpp's non-flash numerics exactly as the former per-(token,
// head) loop did (perplexity depends on it to better than 0.1%): f16 vec_dot scores, the row max,
// the sum in double, the normalized probabilities rounded to f16 against V with no division, in
// three sweeps over each tile's keys (split-K: three phases, the max and sum merged between).
// Quantized caches (which llama.cpp only runs with flash attention) follow ggml-cpu's flash kernel
// for them bit for bit (flash_attn_ext_f16_one_chunk): the query quantized to q8_0, each score the
// keys' q8_0 / q4_0 vec_dot with it, then key by key the running max, an expf, the value added
// with an FMA and the sum S = S * ms + vs; one division at the end. The key blocks and the GQA
// group's rows are tiled as above; split-K ranges (generation) merge their partial softmaxes.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "ops/thread_pool.h"
#include "tensor/type.h"

namespace strata::ops {

// Element types a KV cache may hold: F16 (llama.cpp's default), Q8_0, Q4_0 (blocks of 32 along
// each head). parse_kv_type accepts "f16", "q8_0", "q4_0" and throws strata::Error otherwise.
bool is_kv_type(DType type);
DType parse_kv_type(const std::string& name);
// Bytes of one cached position of n_heads heads of head_dim elements (head_dim a multiple of the
// type's block size).
size_t kv_row_bytes(DType type, int n_heads, int head_dim);

// One layer's keys or values: row r holds the position stored in slot r; position p lives in
// slot p % n_slots (a sliding-window layer keeps only its window plus a batch as a ring).
struct KvLayerView {
  uint8_t* data = nullptr;
  DType type = DType::F16;
  size_t row_bytes = 0;   // n_heads * head_bytes
  size_t head_bytes = 0;  // one head of one position
  int64_t n_slots = 0;
  uint8_t* head(int64_t pos, int kv_head) const {
    return data + size_t(pos % n_slots) * row_bytes + size_t(kv_head) * head_bytes;
  }
};

struct AttentionShape {
  int n_head = 0;
  int n_head_kv = 0;  // n_head is a multiple: query head h reads KV head h / (n_head / n_head_kv)
  int head_dim_k = 0;
  int head_dim_v = 0;
  float scale = 1.0f;  // multiplies q·k
  int window = 0;      // > 0: a query at position p sees positions (p - window, p]; 0: all of [0, p]
  // [n_head] or null: attention sinks (gpt-oss), a learned logit per query head that joins the
  // softmax's max and sum but has no value, so each head may attend to nothing.
  const float* sinks = nullptr;
};

// Per-thread tiles and the split-K partials, sized once for the largest shape, batch and context
// a session uses (nothing allocates per token). Bounded at any context: the f16 path's score rows
// grow with it up to a fixed size, past which they are computed again (same results).
struct AttentionScratch {
  // Element counts of every buffer, from one formula that init allocates and bytes_for counts.
  struct Sizes {
    size_t q, k, v, s, o, rows;      // per tile: floats (rows: m and l each)
    size_t sum;                      // per tile: double sums per row
    size_t qq;                       // per tile: bytes of the query rows as q8_0 blocks
    size_t scores;                   // per tile: f16 path's scores of one item [rows x n_ctx], bounded
    size_t partial, sums;            // once: split-K partials (floats), split-K sums (doubles)
    size_t split_scores;             // once: f16 split-K scores [kMaxSplitTokens x n_head x n_ctx], bounded
    size_t n_tiles;
  };
  static Sizes sizes(const AttentionShape& largest, int n_batch, int64_t n_ctx, int n_threads);
  void init(const AttentionShape& largest, int n_batch, int64_t n_ctx, int n_threads);
  // For a caller that cannot size up front (a backend without a session's scratch): allocates
  // only when these arguments need more than the buffers hold, then the larger of each.
  void reserve(const AttentionShape& shape, int n_batch, int64_t n_ctx, int n_threads);
  size_t bytes() const;
  // What init allocates for these arguments, in bytes (the planner's memory model counts it).
  static size_t bytes_for(const AttentionShape& largest, int n_batch, int64_t n_ctx, int n_threads);

  struct Tile {
    std::vector<float> q;       // the block's query rows, rounded as the key type's dot does
    std::vector<float> k, v;    // one block of positions converted to f32 [block x head_dim]
    std::vector<float> s;       // scores of one token's rows against the key block
    std::vector<float> o;       // unnormalized outputs [rows x head_dim_v]
    std::vector<float> m, l;    // running max and sum per row (f16 path: the max and 1 / sum)
    std::vector<uint8_t> qq;    // quantized caches: the query rows as q8_0 blocks, for the keys' vec_dot
    std::vector<double> sum;    // f16 path: sum of e^(s - max) per row
    std::vector<float> scores;  // f16 path: each row's scores over the item's positions, then e^(s - max)
  };
  std::vector<Tile> tiles;          // per thread
  std::vector<float> partial;       // split-K: [split x row x (head_dim_v + 2)]
  std::vector<double> sums;         // split-K, f16 path: each range's sum [split x row]
  std::vector<float> split_scores;  // split-K, f16 path: [token x head x position - first visible]
  int n_batch = 0;
  Sizes sized{};  // what the buffers were allocated for

 private:
  void allocate(const Sizes& sizes, int n_batch);
};

// Writes one position's n_heads heads of head_dim floats (from src, contiguous) into the cache
// view, converted to its type as llama.cpp's copy into the cache does.
void kv_store(const KvLayerView& view, int64_t pos, const float* src, int n_heads, int head_dim);

// out[t, h * head_dim_v ...] = softmax(scale * q[t, h] · K[first(t) .. pos0 + t]) · V[...] for
// the n_tokens queries at positions pos0 .. pos0 + n_tokens - 1 (their own keys already stored).
// q: [n_tokens x n_head * head_dim_k], out: [n_tokens x n_head * head_dim_v].
void attention(const AttentionShape& shape, const float* q, int n_tokens, int64_t pos0, const KvLayerView& k,
               const KvLayerView& v, float* out, ThreadPool& pool, AttentionScratch& scratch);

}  // namespace strata::ops
