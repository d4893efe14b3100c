// The mixture-of-experts ops of the device seam (moe_experts, moe_sum, add_sigmoid_gated): the CPU
// backend against a reference written out here, and the CUDA backend against the CPU backend for
// decode (per-slot matvecs reading the routing on the device) and prompt batches (grouped per
// expert), with the experts stacked as bound, in cache slots (slot_of) and handed out alone
// (single). CUDA tests skip without a CUDA build or GPU; STRATA_REQUIRE_GPU=1 turns that into a
// failure.
//
// Tolerances (err = max |a - b| / max |b|): the CPU against the double reference 3e-2 for
// quantized experts (int8 activations on both matrices), 1e-4 for F32; the GPU against the CPU
// 4e-2 (two quantized matrices in a row, or two f16 GEMMs: twice the single matmul's 2e-2); the
// sum and the gate 1e-6.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "ops/thread_pool.h"
#include "tensor/kernels.h"

namespace strata::backend {
namespace {

float rel_err(const std::vector<float>& got, const std::vector<float>& want) {
  float max_diff = 0.0f, max_ref = 0.0f;
  for (size_t i = 0; i < want.size(); ++i) {
    max_diff = std::max(max_diff, std::fabs(got[i] - want[i]));
    max_ref = std::max(max_ref, std::fabs(want[i]));
  }
  return max_ref > 0.0f ? max_diff / max_ref : max_diff;
}

std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng) * scale;
  return v;
}

constexpr int kExperts = 5, kUsed = 2;
constexpr int64_t kEmbd = 256, kFf = 512;  // K-quant rows: multiples of 256
constexpr float kUntouched = 12345.0f;     // what slots of experts not here must keep

// A stacked expert tensor [kExperts * rows x cols] of `type`, quantized from random values.
struct Stack {
  DType type;
  int64_t rows, cols;
  size_t row_bytes;
  std::vector<uint8_t> bytes;
  std::vector<float> deq;  // what the bytes hold
  Stack(DType t, int64_t rows_per_expert, int64_t n_cols, uint32_t seed)
      : type(t), rows(rows_per_expert), cols(n_cols), row_bytes(strata::row_bytes(t, n_cols)) {
    const int64_t n_rows = kExperts * rows;
    const std::vector<float> f = random_floats(size_t(n_rows * cols), seed, 0.3f);
    bytes.resize(row_bytes * size_t(n_rows));
    deq.resize(f.size());
    const kernels::TypeKernels& k = kernels::kernels_for(t);
    for (int64_t r = 0; r < n_rows; ++r) {
      k.quantize(f.data() + r * cols, bytes.data() + size_t(r) * row_bytes, cols);
      k.dequantize(bytes.data() + size_t(r) * row_bytes, deq.data() + r * cols, cols);
    }
  }
  // One expert's shape at `data` (expert 0 of the stack there).
  WeightView view(const uint8_t* data) const { return {type, data, cols, rows, row_bytes}; }
  size_t stride() const { return size_t(rows) * row_bytes; }
};

struct Routing {
  int n_tokens;
  std::vector<int32_t> chosen;
  std::vector<float> weights;
};

// Every expert used by some token, and some expert by none (the batch must not read it).
Routing routing(int n_tokens, uint32_t seed) {
  std::mt19937 rng(seed);
  Routing r{n_tokens, {}, {}};
  for (int t = 0; t < n_tokens; ++t) {
    const int a = int(rng() % (kExperts - 1));  // expert kExperts - 1 is never chosen
    int b = int(rng() % (kExperts - 1));
    if (b == a) b = (a + 1) % (kExperts - 1);
    const float w = 0.2f + 0.6f * float(rng() % 1000) / 1000.0f;
    r.chosen.insert(r.chosen.end(), {a, b});
    r.weights.insert(r.weights.end(), {w, 1.0f - w});
  }
  return r;
}

// out[t, j] = w[t, j] * down(silu(gate x_t) * (up x_t)) of expert chosen[t, j], in double, for
// slots whose expert `here` admits; the other slots keep kUntouched.
template <typename Here>
std::vector<float> reference(const Stack& gate, const Stack& up, const Stack& down, const std::vector<float>& x,
                             const Routing& r, Here here) {
  std::vector<float> out(size_t(r.n_tokens) * kUsed * kEmbd, kUntouched);
  for (int s = 0; s < r.n_tokens * kUsed; ++s) {
    const int e = r.chosen[size_t(s)];
    if (!here(e)) continue;
    const float* xt = x.data() + size_t(s / kUsed) * kEmbd;
    std::vector<double> a(static_cast<size_t>(kFf));
    for (int64_t i = 0; i < kFf; ++i) {
      double g = 0, u = 0;
      for (int64_t c = 0; c < kEmbd; ++c) {
        g += double(gate.deq[size_t((e * kFf + i) * kEmbd + c)]) * xt[c];
        u += double(up.deq[size_t((e * kFf + i) * kEmbd + c)]) * xt[c];
      }
      a[size_t(i)] = g / (1.0 + std::exp(-g)) * u;
    }
    for (int64_t o = 0; o < kEmbd; ++o) {
      double d = 0;
      for (int64_t i = 0; i < kFf; ++i) d += double(down.deq[size_t((e * kEmbd + o) * kFf + i)]) * a[size_t(i)];
      out[size_t(s) * kEmbd + size_t(o)] = float(d * r.weights[size_t(s)]);
    }
  }
  return out;
}

// The host scratch of a CPU moe_experts call for n_tokens rows.
struct HostScratch {
  std::vector<float> in, gate, up, down_out;
  std::vector<int32_t> slots;
  explicit HostScratch(int n_tokens)
      : in(size_t(n_tokens) * kEmbd), gate(size_t(n_tokens) * kFf), up(size_t(n_tokens) * kFf),
        down_out(size_t(n_tokens) * kEmbd), slots(size_t(n_tokens) * kUsed) {}
  ExpertBatch::HostScratch view() { return {in.data(), gate.data(), up.data(), down_out.data(), slots.data()}; }
};

ExpertBatch batch_of(const float* x, const Routing& r, const int32_t* chosen, const float* weights, float* out) {
  ExpertBatch b;
  b.x = x;
  b.n_tokens = r.n_tokens;
  b.n_expert = kExperts;
  b.k = kUsed;
  b.chosen = chosen;
  b.weights = weights;
  b.act = GatedActivation::silu;
  b.out = out;
  return b;
}

ExpertWeights stacked(const Stack& gate, const Stack& up, const Stack& down, const uint8_t* g, const uint8_t* u,
                      const uint8_t* d) {
  ExpertWeights w;
  w.gate = gate.view(g);
  w.up = up.view(u);
  w.down = down.view(d);
  w.gate_stride = gate.stride();
  w.up_stride = up.stride();
  w.down_stride = down.stride();
  return w;
}

TEST(CpuMoe, ExpertsMatchDoubleReference) {
  ThreadPool pool(2);
  auto cpu = make_cpu_backend(pool);
  for (DType type : {DType::F32, DType::Q8_0, DType::Q4_K}) {
    const Stack gate(type, kFf, kEmbd, 1), up(type, kFf, kEmbd, 2), down(type, kEmbd, kFf, 3);
    for (int n_tokens : {1, 7}) {
      const Routing r = routing(n_tokens, 10 + n_tokens);
      const std::vector<float> x = random_floats(size_t(n_tokens) * kEmbd, 20 + n_tokens);
      HostScratch scratch(n_tokens);
      std::vector<float> out(size_t(n_tokens) * kUsed * kEmbd, kUntouched);
      ExpertBatch b = batch_of(x.data(), r, r.chosen.data(), r.weights.data(), out.data());
      b.host = scratch.view();
      cpu->moe_experts(stacked(gate, up, down, gate.bytes.data(), up.bytes.data(), down.bytes.data()), b);
      const std::vector<float> want = reference(gate, up, down, x, r, [](int) { return true; });
      EXPECT_LT(rel_err(out, want), type == DType::F32 ? 1e-4f : 3e-2f) << type_name(type) << " n " << n_tokens;
    }
  }
}

// Experts in cache slots (slot_of, one expert absent) and one expert handed out alone: only the
// slots of the experts here are written.
TEST(CpuMoe, SlotsAndSingleExpertWriteOnlyTheirSlots) {
  ThreadPool pool(2);
  auto cpu = make_cpu_backend(pool);
  const Stack gate(DType::Q8_0, kFf, kEmbd, 4), up(DType::Q8_0, kFf, kEmbd, 5), down(DType::Q8_0, kEmbd, kFf, 6);
  constexpr int kTokens = 6;
  const Routing r = routing(kTokens, 30);
  const std::vector<float> x = random_floats(size_t(kTokens) * kEmbd, 31);
  // A cache of the experts in reverse order, expert 1 missing: slot_of = {3, -1, 1, 0, 2}.
  const std::vector<int32_t> slot_of = {3, -1, 1, 0, 2};
  auto reorder = [&](const Stack& s) {
    std::vector<uint8_t> cache(s.bytes.size());
    for (int e = 0; e < kExperts; ++e)
      if (slot_of[size_t(e)] >= 0)
        std::memcpy(cache.data() + size_t(slot_of[size_t(e)]) * s.stride(), s.bytes.data() + size_t(e) * s.stride(),
                    s.stride());
    return cache;
  };
  const std::vector<uint8_t> cg = reorder(gate), cu = reorder(up), cd = reorder(down);
  HostScratch scratch(kTokens);
  std::vector<float> out(size_t(kTokens) * kUsed * kEmbd, kUntouched);
  ExpertBatch b = batch_of(x.data(), r, r.chosen.data(), r.weights.data(), out.data());
  b.host = scratch.view();
  ExpertWeights w = stacked(gate, up, down, cg.data(), cu.data(), cd.data());
  w.slot_of = slot_of.data();
  cpu->moe_experts(w, b);
  EXPECT_LT(rel_err(out, reference(gate, up, down, x, r, [](int e) { return e != 1; })), 2e-2f);
  // Expert 1 alone, its slices handed out where a streamer would put them.
  ExpertWeights one = stacked(gate, up, down, gate.bytes.data() + gate.stride(), up.bytes.data() + up.stride(),
                              down.bytes.data() + down.stride());
  one.single = 1;
  cpu->moe_experts(one, b);
  EXPECT_LT(rel_err(out, reference(gate, up, down, x, r, [](int) { return true; })), 2e-2f);
}

TEST(CpuMoe, SumAndSigmoidGate) {
  ThreadPool pool(1);
  auto cpu = make_cpu_backend(pool);
  const std::vector<float> slots = {1, 2, 10, 20, 100, 200, 3, 4, 30, 40, 300, 400};  // 2 tokens, k 3, n 2
  std::vector<float> out(4);
  cpu->moe_sum(slots.data(), 2, 3, 2, out.data());
  EXPECT_EQ(out, (std::vector<float>{111, 222, 333, 444}));
  std::vector<float> x = {1, 1, 1, 1};
  const std::vector<float> y = {2, 4, 6, 8}, gate = {0.0f, 100.0f};
  cpu->add_sigmoid_gated(x.data(), y.data(), gate.data(), 2, 2);
  EXPECT_EQ(x, (std::vector<float>{2, 3, 7, 9}));
}

// ---- the CUDA backend against the CPU backend

bool gpu_required() {
  const char* v = std::getenv("STRATA_REQUIRE_GPU");
  return v && std::strcmp(v, "1") == 0;
}

class CudaMoe : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    if (!cuda_built() || cuda_device_count() == 0) {
      const std::string why = !cuda_built() ? "this build has no CUDA backend (configure with -DSTRATA_CUDA=ON)"
                                            : "no CUDA device on this machine (run make test-gpu on a GPU machine)";
      if (gpu_required()) FAIL() << "STRATA_REQUIRE_GPU=1 but " << why;
      GTEST_SKIP() << why;
    }
    gpu_ = make_cuda_backend(0);
    cpu_ = make_cpu_backend(pool_);
  }
  void TearDown() override {
    if (gpu_)
      for (void* p : owned_) gpu_->free(p);
  }
  template <typename T>
  T* to_gpu(const std::vector<T>& host) {
    void* p = gpu_->alloc(host.size() * sizeof(T));
    owned_.push_back(p);
    gpu_->upload(p, host.data(), host.size() * sizeof(T));
    return static_cast<T*>(p);
  }
  template <typename T>
  std::vector<T> from_gpu(const T* p, size_t n) {
    std::vector<T> host(n);
    gpu_->download(host.data(), p, n * sizeof(T));
    return host;
  }
  ThreadPool pool_{4};
  std::unique_ptr<Backend> cpu_, gpu_;
  std::vector<void*> owned_;
};

TEST_P(CudaMoe, ExpertsMatchCpu) {
  const DType type = GetParam();
  // Q4_K_M's mix: the down matrices one step finer.
  const DType down_type = type == DType::Q4_K ? DType::Q6_K : type;
  const Stack gate(type, kFf, kEmbd, 7), up(type, kFf, kEmbd, 8), down(down_type, kEmbd, kFf, 9);
  const uint8_t *gg = to_gpu(gate.bytes), *gu = to_gpu(up.bytes), *gd = to_gpu(down.bytes);
  const std::vector<int32_t> slot_of = {3, -1, 1, 0, 2};  // the cache case: experts reordered, 1 absent
  auto reorder = [&](const Stack& s) {
    std::vector<uint8_t> cache(s.bytes.size());
    for (int e = 0; e < kExperts; ++e)
      if (slot_of[size_t(e)] >= 0)
        std::memcpy(cache.data() + size_t(slot_of[size_t(e)]) * s.stride(), s.bytes.data() + size_t(e) * s.stride(),
                    s.stride());
    return cache;
  };
  const std::vector<uint8_t> cg = reorder(gate), cu = reorder(up), cd = reorder(down);
  const uint8_t *cgg = to_gpu(cg), *cgu = to_gpu(cu), *cgd = to_gpu(cd);
  const int32_t* slot_of_gpu = to_gpu(slot_of);
  for (int n_tokens : {1, 2, 8, 9, 40}) {  // decode matvecs up to 8 tokens, grouped GEMMs past
    const Routing r = routing(n_tokens, 40 + n_tokens);
    const std::vector<float> x = random_floats(size_t(n_tokens) * kEmbd, 50 + n_tokens);
    const size_t n_out = size_t(n_tokens) * kUsed * kEmbd;
    const float* xg = to_gpu(x);
    const int32_t* chosen_g = to_gpu(r.chosen);
    const float* weights_g = to_gpu(r.weights);
    for (int mode = 0; mode < 3; ++mode) {  // stacked, cache slots, one expert alone
      const char* what = mode == 0 ? "stacked" : mode == 1 ? "slot_of" : "single";
      ExpertWeights wc = stacked(gate, up, down, gate.bytes.data(), up.bytes.data(), down.bytes.data());
      ExpertWeights wg = stacked(gate, up, down, gg, gu, gd);
      if (mode == 1) {
        wc = stacked(gate, up, down, cg.data(), cu.data(), cd.data());
        wc.slot_of = slot_of.data();
        wg = stacked(gate, up, down, cgg, cgu, cgd);
        wg.slot_of = slot_of_gpu;
      } else if (mode == 2) {
        wc = stacked(gate, up, down, gate.bytes.data() + 2 * gate.stride(), up.bytes.data() + 2 * up.stride(),
                     down.bytes.data() + 2 * down.stride());
        wg = stacked(gate, up, down, gg + 2 * gate.stride(), gu + 2 * up.stride(), gd + 2 * down.stride());
        wc.single = wg.single = 2;
      }
      HostScratch scratch(n_tokens);
      std::vector<float> want(n_out, kUntouched);
      ExpertBatch bc = batch_of(x.data(), r, r.chosen.data(), r.weights.data(), want.data());
      bc.host = scratch.view();
      cpu_->moe_experts(wc, bc);
      float* out_g = to_gpu(std::vector<float>(n_out, kUntouched));
      gpu_->moe_experts(wg, batch_of(xg, r, chosen_g, weights_g, out_g));
      const std::vector<float> got = from_gpu(out_g, n_out);
      size_t untouched_cpu = 0, untouched_gpu = 0;
      for (size_t i = 0; i < n_out; ++i) {
        untouched_cpu += want[i] == kUntouched;
        untouched_gpu += got[i] == kUntouched;
      }
      EXPECT_EQ(untouched_gpu, untouched_cpu) << what << " n " << n_tokens;
      const float err = rel_err(got, want);
      std::printf("  %-5s/%-5s %-7s n_tokens %2d: |gpu-cpu| %.2e (%zu of %zu slot values untouched)\n",
                  type_name(type), type_name(down_type), what, n_tokens, err, untouched_cpu, n_out);
      EXPECT_LT(err, 4e-2f) << type_name(type) << " " << what << " n_tokens " << n_tokens;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(ExpertTypes, CudaMoe,
                         ::testing::Values(DType::F32, DType::F16, DType::Q8_0, DType::Q4_0, DType::Q4_K,
                                           DType::Q5_K),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(type_name(info.param));
                         });

TEST_P(CudaMoe, SumAndSigmoidGateMatchCpu) {
  if (GetParam() != DType::F32) GTEST_SKIP() << "type-independent: run once";
  constexpr int kTokens = 7, kK = 3;
  constexpr int64_t kN = 1000;
  const std::vector<float> slots = random_floats(size_t(kTokens * kK * kN), 60);
  std::vector<float> want(size_t(kTokens * kN));
  cpu_->moe_sum(slots.data(), kTokens, kK, kN, want.data());
  float* out = to_gpu(std::vector<float>(want.size()));
  gpu_->moe_sum(to_gpu(slots), kTokens, kK, kN, out);
  EXPECT_LT(rel_err(from_gpu(out, want.size()), want), 1e-6f) << "moe_sum";
  const std::vector<float> y = random_floats(want.size(), 61), gate = random_floats(kTokens, 62, 3.0f);
  std::vector<float> x = want;
  cpu_->add_sigmoid_gated(x.data(), y.data(), gate.data(), kTokens, kN);
  float* xg = to_gpu(want);
  gpu_->add_sigmoid_gated(xg, to_gpu(y), to_gpu(gate), kTokens, kN);
  EXPECT_LT(rel_err(from_gpu(xg, x.size()), x), 1e-6f) << "add_sigmoid_gated";
}

}  // namespace
}  // namespace strata::backend
