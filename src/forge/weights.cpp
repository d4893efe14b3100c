#include "forge/weights.h"

#include <algorithm>
#include <cstring>
#include <thread>

#include "tensor/fp16.h"
#include "tensor/kernels.h"
#include "util/error.h"

namespace strata::forge {
namespace {

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t x = a ^ (b * 0x9E3779B97F4A7C15ull);
  return splitmix64(x);
}

uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
void store_u16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }

// 256 f16 scales spread over [0.5, 1.5) x target; a random byte of the block picks one, so fixing a
// block's scales costs no extra random draws. factor != 0 makes a second table of factor x scale
// (the negative minimum of Q4_1 and Q5_1, which centres their unsigned quants on zero).
struct ScaleTable {
  uint16_t scale[256];
  uint16_t scaled[256];
  ScaleTable(float target, float factor) {
    for (int i = 0; i < 256; ++i) {
      const float d = target * (0.5f + float(i) / 256.0f);
      scale[i] = f32_to_fp16(d);
      scaled[i] = f32_to_fp16(factor * fp16_to_f32(scale[i]));
    }
  }
};

// Targets: the scale that makes dequantized weights about 0.02 in magnitude for random quants.
// Q4_0: d*(q-8), |q-8| ~ 4.6. Q5_0: d*(q-16), ~9.2. Q8_0: d*q, ~74. Q2_K: d*sc*q - dmin*m with
// 4-bit sc and m. Q3_K: d*(sc-32)*q, q in -4..3. Q4_K/Q5_K: d*sc*q - dmin*m with 6-bit sc and m:
// dmin balances the mean of d*sc*q. Q6_K: d*sc*(q-32) with int8 sc.
void fix_blocks(DType type, uint8_t* p, uint64_t n_blocks) {
  switch (type) {
    case DType::Q4_0:
    case DType::Q5_0: {
      static const ScaleTable q4(0.004f, 0), q5(0.002f, 0);
      const ScaleTable& t = type == DType::Q4_0 ? q4 : q5;
      const size_t bb = type == DType::Q4_0 ? 18 : 22;
      for (uint64_t b = 0; b < n_blocks; ++b, p += bb) store_u16(p, t.scale[p[0]]);
      break;
    }
    case DType::Q4_1:
    case DType::Q5_1: {
      static const ScaleTable q4(0.004f, -7.5f), q5(0.002f, -15.5f);
      const ScaleTable& t = type == DType::Q4_1 ? q4 : q5;
      const size_t bb = type == DType::Q4_1 ? 20 : 24;
      for (uint64_t b = 0; b < n_blocks; ++b, p += bb) {
        const uint8_t r = p[0];
        store_u16(p, t.scale[r]);
        store_u16(p + 2, t.scaled[r]);
      }
      break;
    }
    case DType::Q8_0: {
      static const ScaleTable t(0.0003f, 0);
      for (uint64_t b = 0; b < n_blocks; ++b, p += 34) {
        store_u16(p, t.scale[p[0]]);
        for (int i = 2; i < 34; ++i)
          if (p[i] == 0x80) p[i] = 0x81;  // -128 never comes out of a quantizer: keep to -127..127
      }
      break;
    }
    case DType::Q2_K: {
      static const ScaleTable d(0.0025f, 0), dmin(0.003f, 0);
      for (uint64_t b = 0; b < n_blocks; ++b, p += 84) {
        store_u16(p + 80, d.scale[p[80]]);
        store_u16(p + 82, dmin.scale[p[82]]);
      }
      break;
    }
    case DType::Q3_K: {
      static const ScaleTable d(0.0005f, 0);
      for (uint64_t b = 0; b < n_blocks; ++b, p += 110) store_u16(p + 108, d.scale[p[108]]);
      break;
    }
    case DType::Q4_K:
    case DType::Q5_K: {
      static const ScaleTable d4(0.00014f, 0), d5(0.00007f, 0), dmin(0.001f, 0);
      const ScaleTable& d = type == DType::Q4_K ? d4 : d5;
      const size_t bb = type == DType::Q4_K ? 144 : 176;
      for (uint64_t b = 0; b < n_blocks; ++b, p += bb) {
        store_u16(p, d.scale[p[0]]);
        store_u16(p + 2, dmin.scale[p[2]]);
      }
      break;
    }
    case DType::Q6_K: {
      static const ScaleTable d(0.00002f, 0);
      for (uint64_t b = 0; b < n_blocks; ++b, p += 210) store_u16(p + 208, d.scale[p[208]]);
      break;
    }
    case DType::MXFP4:  // exponent byte 2^-10 .. 2^-7: |w| about 0.001 .. 0.1, like the values fill
      for (uint64_t b = 0; b < n_blocks; ++b, p += 17) p[0] = uint8_t(118 + (p[0] & 3));
      break;
    case DType::F16:  // sign and mantissa random, exponent 2^-9 .. 2^-6
      for (uint64_t i = 0; i < n_blocks; ++i, p += 2) {
        const uint16_t x = load_u16(p);
        store_u16(p, uint16_t((x & 0x83FFu) | ((6u + ((x >> 10) & 3u)) << 10)));
      }
      break;
    case DType::BF16:
      for (uint64_t i = 0; i < n_blocks; ++i, p += 2) {
        const uint16_t x = load_u16(p);
        store_u16(p, uint16_t((x & 0x807Fu) | ((118u + ((x >> 7) & 3u)) << 7)));
      }
      break;
    case DType::F32:
      for (uint64_t i = 0; i < n_blocks; ++i, p += 4) {
        uint32_t x;
        std::memcpy(&x, p, 4);
        x = (x & 0x807FFFFFu) | ((118u + ((x >> 23) & 3u)) << 23);
        std::memcpy(p, &x, 4);
      }
      break;
    default:
      throw Error(std::string("forge: no random-block generator for type ") + type_name(type));
  }
}

void fill_random_bytes(Rng& rng, uint8_t* p, uint64_t n) {
  uint64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const uint64_t v = rng.next();
    std::memcpy(p + i, &v, 8);
  }
  if (i < n) {
    const uint64_t v = rng.next();
    std::memcpy(p + i, &v, n - i);
  }
}

}  // namespace

Rng::Rng(uint64_t seed) {
  for (auto& s : s_) s = splitmix64(seed);
}

float Rng::normal() {
  const uint64_t a = next(), b = next();
  const double k = 1.0 / 2147483648.0;  // int32 -> [-1, 1)
  const double sum = double(int32_t(uint32_t(a))) * k + double(int32_t(uint32_t(a >> 32))) * k +
                     double(int32_t(uint32_t(b))) * k + double(int32_t(uint32_t(b >> 32))) * k;
  return float(sum * 0.8660254037844386);  // variance 4/3 -> 1
}

uint64_t tensor_seed(uint64_t seed, const std::string& name) {
  uint64_t h = 0xCBF29CE484222325ull;  // FNV-1a
  for (unsigned char c : name) h = (h ^ c) * 0x100000001B3ull;
  return mix(seed, h);
}

bool can_fill_blocks(DType type) {
  switch (type) {
    case DType::F32: case DType::F16: case DType::BF16: case DType::Q4_0: case DType::Q4_1: case DType::Q5_0:
    case DType::Q5_1: case DType::Q8_0: case DType::Q2_K: case DType::Q3_K: case DType::Q4_K: case DType::Q5_K:
    case DType::Q6_K: case DType::MXFP4:
      return true;
    default:
      return false;
  }
}

void fill_values(DType type, const std::vector<int64_t>& shape, float mean, float std, uint64_t seed, uint8_t* dst,
                 uint64_t n_bytes) {
  const int64_t ne0 = shape.at(0);
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  const int64_t n_rows = n / ne0;
  const size_t rb = row_bytes(type, ne0);
  if (rb * uint64_t(n_rows) != n_bytes)
    throw Error("forge: tensor of " + std::to_string(n) + " " + type_name(type) + " elements needs " +
                std::to_string(rb * uint64_t(n_rows)) + " bytes, the writer gave " + std::to_string(n_bytes));
  Rng rng(seed);
  std::vector<float> row(static_cast<size_t>(ne0));
  const kernels::TypeKernels* k = nullptr;
  if (type != DType::F32 && type != DType::F16 && type != DType::BF16) {
    k = &kernels::kernels_for(type);
    if (!k->quantize) throw Error(std::string("forge: no quantizer for type ") + type_name(type));
  }
  for (int64_t r = 0; r < n_rows; ++r) {
    for (auto& v : row) v = mean + std * rng.normal();
    uint8_t* out = dst + uint64_t(r) * rb;
    switch (type) {
      case DType::F32:
        std::memcpy(out, row.data(), rb);
        break;
      case DType::F16:
        for (int64_t i = 0; i < ne0; ++i) store_u16(out + 2 * i, f32_to_fp16(row[size_t(i)]));
        break;
      case DType::BF16:
        for (int64_t i = 0; i < ne0; ++i) store_u16(out + 2 * i, f32_to_bf16(row[size_t(i)]));
        break;
      default:
        k->quantize(row.data(), out, ne0);
    }
  }
}

void fill_blocks(DType type, uint64_t seed, uint8_t* dst, uint64_t n_bytes, int n_threads) {
  if (!can_fill_blocks(type)) throw Error(std::string("forge: no random-block generator for type ") + type_name(type));
  const TypeInfo& info = type_info(type);
  // fix_blocks walks whole blocks: one element for F32, F16 and BF16.
  const uint64_t unit = info.block_bytes;
  if (n_bytes % unit != 0)
    throw Error("forge: " + std::to_string(n_bytes) + " bytes is not a whole number of " + info.name + " blocks");
  const uint64_t units_per_chunk = std::max<uint64_t>(1, (1u << 20) / unit);
  const uint64_t chunk_bytes = units_per_chunk * unit;
  const uint64_t n_chunks = (n_bytes + chunk_bytes - 1) / chunk_bytes;

  auto work = [&](uint64_t first, uint64_t step) {
    for (uint64_t c = first; c < n_chunks; c += step) {
      uint8_t* p = dst + c * chunk_bytes;
      const uint64_t len = std::min(chunk_bytes, n_bytes - c * chunk_bytes);
      Rng rng(mix(seed, c));
      fill_random_bytes(rng, p, len);
      fix_blocks(type, p, len / unit);
    }
  };
  const int threads = int(std::min<uint64_t>(uint64_t(std::max(1, n_threads)), n_chunks));
  if (threads <= 1) {
    work(0, 1);
    return;
  }
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work, uint64_t(t), uint64_t(threads));
  work(0, uint64_t(threads));
  for (auto& th : pool) th.join();
}

}  // namespace strata::forge
