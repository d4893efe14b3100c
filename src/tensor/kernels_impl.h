#pragma once
// Internal to src/tensor: the per-path kernel tables and helpers shared by the family files.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "tensor/blocks.h"
#include "tensor/fp16.h"
#include "tensor/kernels.h"

namespace strata::kernels {

constexpr int kMaxTypeId = 40;  // DType ids are < 40

struct KernelTable {
  TypeKernels k[kMaxTypeId];
  TypeKernels& operator[](DType t) { return k[uint32_t(t)]; }
};

// Each family file fills the entries of its types for one path; a SIMD path starts from a copy of
// the scalar table and overrides what it implements.
#define STRATA_DECLARE_REGISTER(ns)        \
  namespace ns {                           \
  void register_float(KernelTable& t);     \
  void register_legacy(KernelTable& t);    \
  void register_k(KernelTable& t);         \
  void register_fp4(KernelTable& t);       \
  }
STRATA_DECLARE_REGISTER(scalar)
STRATA_DECLARE_REGISTER(avx2)
STRATA_DECLARE_REGISTER(avx512)
#undef STRATA_DECLARE_REGISTER

// ggml's nearest_int: round half to even through the float mantissa (|f| < 2^22).
inline int nearest_int(float f) {
  const float v = f + 12582912.f;
  int32_t i;
  std::memcpy(&i, &v, 4);
  return (i & 0x007fffff) - 0x00400000;
}

// ggml's 6-bit scale/min unpacking of Q4_K / Q5_K sub-block j.
inline void get_scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
  }
}

// Q3_K's 16 signed 6-bit scales (still offset by 32) from its 12 packed bytes.
inline void unpack_q3_k_scales(const uint8_t* packed, int8_t out[16]) {
  constexpr uint32_t kmask1 = 0x03030303, kmask2 = 0x0f0f0f0f;
  uint32_t aux[4];
  std::memcpy(aux, packed, 12);
  const uint32_t tmp = aux[2];
  aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4);
  aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4);
  aux[0] = (aux[0] & kmask2) | (((tmp >> 0) & kmask1) << 4);
  aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4);
  std::memcpy(out, aux, 16);
}

// Q4_K / Q5_K scales and mins as 8 + 8 bytes (same values as get_scale_min_k4 for j = 0..7).
inline void unpack_k4_scales(const uint8_t* packed, uint8_t out[16]) {
  constexpr uint32_t kmask1 = 0x3f3f3f3f, kmask2 = 0x0f0f0f0f, kmask3 = 0x03030303;
  uint32_t u[4];
  std::memcpy(u, packed, 12);
  u[3] = ((u[2] >> 4) & kmask2) | (((u[1] >> 6) & kmask3) << 4);
  const uint32_t uaux = u[1] & kmask1;
  u[1] = (u[2] & kmask2) | (((u[0] >> 6) & kmask3) << 4);
  u[2] = uaux;
  u[0] &= kmask1;
  std::memcpy(out, u, 16);
}

// ggml's ggml_e8m0_to_fp32_half: 2^(e - 128), i.e. half the E8M0 scale (the MXFP4 table is
// doubled), with e < 2 as the denormals 2^-128 and 2^-127.
inline float e8m0_to_f32_half(uint8_t e) {
  const uint32_t bits = e < 2 ? 0x00200000u << e : uint32_t(e - 1) << 23;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace strata::kernels
