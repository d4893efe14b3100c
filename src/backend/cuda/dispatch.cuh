#pragma once
// Internal to src/backend/cuda: the one switch from tensor type to kernel template, shared by the
// dense kernels (matmul.cu) and the expert kernels (moe.cu).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/chunks.h"
#include "backend/cuda/chunks_mxfp4.h"
#include "ops/weight.h"

namespace strata::backend::cuda {

// Calls fn(Block{}) for a chunked type; false for any other.
template <typename Fn>
bool with_block(DType type, Fn&& fn) {
  switch (type) {
    case DType::Q4_0:
      fn(BlockQ4_0{});
      return true;
    case DType::Q4_1:
      fn(BlockQ4_1{});
      return true;
    case DType::Q5_0:
      fn(BlockQ5_0{});
      return true;
    case DType::Q5_1:
      fn(BlockQ5_1{});
      return true;
    case DType::Q8_0:
      fn(BlockQ8_0{});
      return true;
    case DType::Q2_K:
      fn(BlockQ2_K{});
      return true;
    case DType::Q3_K:
      fn(BlockQ3_K{});
      return true;
    case DType::Q4_K:
      fn(BlockQ4_K{});
      return true;
    case DType::Q5_K:
      fn(BlockQ5_K{});
      return true;
    case DType::Q6_K:
      fn(BlockQ6_K{});
      return true;
    case DType::MXFP4:  // chunks_mxfp4.h
      fn(BlockMXFP4{});
      return true;
    default:
      return false;
  }
}

// Plain float storage types: two elements at element index i (even).
struct F32 {
  static __device__ float2 load2(const uint8_t* row, int64_t i) {
    return *reinterpret_cast<const float2*>(row + i * 4);
  }
};
struct F16 {
  static __device__ float2 load2(const uint8_t* row, int64_t i) {
    return __half22float2(*reinterpret_cast<const __half2*>(row + i * 2));
  }
};
struct BF16 {
  static __device__ float2 load2(const uint8_t* row, int64_t i) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(row + i * 2));
  }
};

template <typename Fn>
bool with_float(DType type, Fn&& fn) {
  switch (type) {
    case DType::F32:
      fn(F32{});
      return true;
    case DType::F16:
      fn(F16{});
      return true;
    case DType::BF16:
      fn(BF16{});
      return true;
    default:
      return false;
  }
}

}  // namespace strata::backend::cuda
