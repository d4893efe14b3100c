// The one dispatch table: type -> kernels, per instruction set, chosen by CPUID at first use.
#include <atomic>
#include <string>

#include "tensor/kernels_impl.h"
#include "util/error.h"

namespace strata::kernels {
namespace {

struct Tables {
  KernelTable by_isa[3];
  Isa detected = Isa::scalar;
};

Isa detect() {
#if defined(STRATA_SCALAR_ONLY)
  return Isa::scalar;
#else
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni") &&
      __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("bmi2"))
    return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c") &&
      __builtin_cpu_supports("bmi2"))
    return Isa::avx2;
  return Isa::scalar;
#endif
}

const Tables& tables() {
  static const Tables t = [] {
    Tables r;
    KernelTable& s = r.by_isa[int(Isa::scalar)];
    scalar::register_float(s);
    scalar::register_legacy(s);
    scalar::register_k(s);
    scalar::register_fp4(s);
    r.by_isa[int(Isa::avx2)] = s;
    r.by_isa[int(Isa::avx512)] = s;
    r.detected = detect();
#if !defined(STRATA_SCALAR_ONLY)
    // A path's table is only filled when the CPU can run it; otherwise it keeps the scalar entries.
    if (r.detected >= Isa::avx2) {
      avx2::register_float(r.by_isa[int(Isa::avx2)]);
      avx2::register_legacy(r.by_isa[int(Isa::avx2)]);
      avx2::register_k(r.by_isa[int(Isa::avx2)]);
      avx2::register_fp4(r.by_isa[int(Isa::avx2)]);
    }
    if (r.detected >= Isa::avx512) {
      avx512::register_float(r.by_isa[int(Isa::avx512)]);
      avx512::register_legacy(r.by_isa[int(Isa::avx512)]);
      avx512::register_k(r.by_isa[int(Isa::avx512)]);
      avx512::register_fp4(r.by_isa[int(Isa::avx512)]);
    }
#endif
    return r;
  }();
  return t;
}

std::atomic<int> g_active{-1};

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::scalar: return "scalar";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
  }
  return "unknown";
}

Isa detected_isa() { return tables().detected; }

Isa active_isa() {
  const int a = g_active.load(std::memory_order_relaxed);
  return a < 0 ? detected_isa() : Isa(a);
}

void set_active_isa(Isa isa) {
  const Isa clamped = int(isa) > int(detected_isa()) ? detected_isa() : isa;
  g_active.store(int(clamped), std::memory_order_relaxed);
}

bool has_kernels(DType type) {
  const uint32_t id = uint32_t(type);
  return id < uint32_t(kMaxTypeId) && tables().by_isa[0].k[id].dequantize != nullptr;
}

const TypeKernels& kernels_for(DType type, Isa isa) {
  const uint32_t id = uint32_t(type);
  if (!has_kernels(type))
    throw Error(std::string("no kernels for tensor type ") + type_name(type) + " (id " + std::to_string(id) + ")");
  const int path = int(isa) > int(detected_isa()) ? int(detected_isa()) : int(isa);
  return tables().by_isa[path].k[id];
}

const TypeKernels& kernels_for(DType type) { return kernels_for(type, active_isa()); }

}  // namespace strata::kernels
