// F32, F16 and BF16: scalar reference kernels.
#include <cstring>

#include "tensor/kernels_impl.h"

namespace strata::kernels::scalar {
namespace {

void dequantize_f32(const void* src, float* dst, int64_t n) { std::memcpy(dst, src, size_t(n) * 4); }
void quantize_f32(const float* src, void* dst, int64_t n) { std::memcpy(dst, src, size_t(n) * 4); }
float vec_dot_f32(int64_t n, const void* w, const void* a) {
  const float* x = static_cast<const float*>(w);
  const float* y = static_cast<const float*>(a);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += double(x[i]) * double(y[i]);
  return float(sum);
}

void dequantize_f16(const void* src, float* dst, int64_t n) {
  const uint16_t* x = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_f32(x[i]);
}
void quantize_f16(const float* src, void* dst, int64_t n) {
  uint16_t* y = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) y[i] = f32_to_fp16(src[i]);
}
float vec_dot_f16(int64_t n, const void* w, const void* a) {
  const uint16_t* x = static_cast<const uint16_t*>(w);
  const uint16_t* y = static_cast<const uint16_t*>(a);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += double(fp16_to_f32(x[i])) * double(fp16_to_f32(y[i]));
  return float(sum);
}

void dequantize_bf16(const void* src, float* dst, int64_t n) {
  const uint16_t* x = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(x[i]);
}
void quantize_bf16(const float* src, void* dst, int64_t n) {
  uint16_t* y = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) y[i] = f32_to_bf16(src[i]);
}
float vec_dot_bf16(int64_t n, const void* w, const void* a) {
  const uint16_t* x = static_cast<const uint16_t*>(w);
  const uint16_t* y = static_cast<const uint16_t*>(a);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += double(bf16_to_f32(x[i])) * double(bf16_to_f32(y[i]));
  return float(sum);
}

}  // namespace

void register_float(KernelTable& t) {
  t[DType::F32] = {DType::F32, dequantize_f32, quantize_f32, vec_dot_f32, nullptr, quantize_f32};
  t[DType::F16] = {DType::F16, dequantize_f16, quantize_f16, vec_dot_f16, nullptr, quantize_f16};
  t[DType::BF16] = {DType::BF16, dequantize_bf16, quantize_bf16, vec_dot_bf16, nullptr, quantize_bf16};
}

}  // namespace strata::kernels::scalar
