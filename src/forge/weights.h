#pragma once
// Deterministic random weights. Two generators:
// - values: floats (about normal, given mean and std) quantized row by row with the reference
//   quantizer of the type; the file is what a real quantizer would have written. For small files.
// - blocks: random bytes written straight into the blocks of the type, with every scale an f16 of a
//   sane magnitude (no NaN/Inf, weights of roughly +-0.02 after dequantization). Disk speed, for
//   multi-GB files.
// Both depend only on the seed: the same seed gives the same bytes, whatever the thread count.
#include <cstdint>
#include <string>
#include <vector>

#include "tensor/type.h"

namespace strata::forge {

// xoshiro256** (Blackman & Vigna): fast, and the same stream on every platform.
class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  // Irwin-Hall sum of four uniforms scaled to unit variance: close to a standard normal, no libm.
  float normal();

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

// A seed for one tensor from the file's seed and the tensor's name.
uint64_t tensor_seed(uint64_t seed, const std::string& name);

// Fills a tensor of `shape` (ne[0] first) and `type` with values mean + std * normal, quantized row by
// row. Types: F32, F16, BF16 and every type with a quantize kernel.
void fill_values(DType type, const std::vector<int64_t>& shape, float mean, float std, uint64_t seed, uint8_t* dst,
                 uint64_t n_bytes);

// Fills n_bytes (whole blocks of `type`) with random valid blocks. Types: F32, F16, BF16, Q4_0, Q4_1,
// Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K. Work is split into fixed chunks, each with its
// own seed, over n_threads threads.
void fill_blocks(DType type, uint64_t seed, uint8_t* dst, uint64_t n_bytes, int n_threads = 1);
bool can_fill_blocks(DType type);

}  // namespace strata::forge
