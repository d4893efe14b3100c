// Kernels against (a) the gguf Python package's fixtures, (b) the scalar reference on every SIMD
// path, (c) float dots of dequantized data.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "tensor/blocks.h"
#include "tensor/fp16.h"
#include "tensor/kernels.h"
#include "tensor/type.h"
#include "util/error.h"

namespace strata::kernels {
namespace {

const DType kWeightTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q4_0, DType::Q4_1,
                              DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::Q2_K, DType::Q3_K,
                              DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::MXFP4};
const DType kAllTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q4_0, DType::Q4_1, DType::Q5_0,
                           DType::Q5_1, DType::Q8_0, DType::Q8_1, DType::Q2_K, DType::Q3_K, DType::Q4_K,
                           DType::Q5_K, DType::Q6_K, DType::Q8_K, DType::MXFP4};

std::vector<Isa> simd_paths() {
  std::vector<Isa> paths;
  if (int(detected_isa()) >= int(Isa::avx2)) paths.push_back(Isa::avx2);
  if (int(detected_isa()) >= int(Isa::avx512)) paths.push_back(Isa::avx512);
  return paths;
}

std::vector<float> random_floats(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<uint8_t> quantize(DType t, const std::vector<float>& x, bool activation = false) {
  std::vector<uint8_t> q(row_bytes(t, int64_t(x.size())));
  const TypeKernels& k = kernels_for(t, Isa::scalar);
  (activation ? k.quantize_activation : k.quantize)(x.data(), q.data(), int64_t(x.size()));
  return q;
}

std::vector<float> dequantize(DType t, const std::vector<uint8_t>& q, int64_t n, Isa isa = Isa::scalar) {
  std::vector<float> y(static_cast<size_t>(n));
  kernels_for(t, isa).dequantize(q.data(), y.data(), n);
  return y;
}

std::vector<int64_t> lengths_for(DType t) {
  if (type_info(t).block_elems == 256) return {256, 512, 1280, 4096};
  return {32, 64, 96, 256, 544, 4096};
}

std::filesystem::path fixture_dir() {
  if (const char* env = std::getenv("STRATA_FIXTURES")) return std::filesystem::path(env) / "quant";
  return std::filesystem::path(__FILE__).parent_path().parent_path() / "fixtures" / "quant";
}

std::vector<uint8_t> read_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) return {};
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

std::vector<float> as_floats(const std::vector<uint8_t>& b) {
  std::vector<float> v(b.size() / 4);
  std::memcpy(v.data(), b.data(), v.size() * 4);
  return v;
}

double abs_dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += std::fabs(double(a[i]) * double(b[i]));
  return s;
}

double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * double(b[i]);
  return s;
}

// ---- geometry and dispatch

TEST(Kernels, BlockGeometryMatchesTypeInfo) {
  EXPECT_EQ(type_info(DType::Q4_0).block_bytes, sizeof(BlockQ4_0));
  EXPECT_EQ(type_info(DType::Q4_1).block_bytes, sizeof(BlockQ4_1));
  EXPECT_EQ(type_info(DType::Q5_0).block_bytes, sizeof(BlockQ5_0));
  EXPECT_EQ(type_info(DType::Q5_1).block_bytes, sizeof(BlockQ5_1));
  EXPECT_EQ(type_info(DType::Q8_0).block_bytes, sizeof(BlockQ8_0));
  EXPECT_EQ(type_info(DType::Q8_1).block_bytes, sizeof(BlockQ8_1));
  EXPECT_EQ(type_info(DType::Q2_K).block_bytes, sizeof(BlockQ2_K));
  EXPECT_EQ(type_info(DType::Q3_K).block_bytes, sizeof(BlockQ3_K));
  EXPECT_EQ(type_info(DType::Q4_K).block_bytes, sizeof(BlockQ4_K));
  EXPECT_EQ(type_info(DType::Q5_K).block_bytes, sizeof(BlockQ5_K));
  EXPECT_EQ(type_info(DType::Q6_K).block_bytes, sizeof(BlockQ6_K));
  EXPECT_EQ(type_info(DType::Q8_K).block_bytes, sizeof(BlockQ8_K));
  EXPECT_EQ(type_info(DType::MXFP4).block_bytes, sizeof(BlockMXFP4));
}

TEST(Kernels, DispatchTable) {
  for (DType t : kAllTypes) {
    ASSERT_TRUE(has_kernels(t)) << type_name(t);
    const TypeKernels& k = kernels_for(t);
    EXPECT_TRUE(k.dequantize && k.quantize && k.quantize_activation) << type_name(t);
  }
  for (DType t : kWeightTypes) EXPECT_NE(kernels_for(t).vec_dot, nullptr) << type_name(t);
  EXPECT_EQ(kernels_for(DType::Q4_0).vec_dot_type, DType::Q8_0);
  EXPECT_EQ(kernels_for(DType::Q4_1).vec_dot_type, DType::Q8_1);
  EXPECT_EQ(kernels_for(DType::Q5_0).vec_dot_type, DType::Q8_0);
  EXPECT_EQ(kernels_for(DType::Q5_1).vec_dot_type, DType::Q8_1);
  EXPECT_EQ(kernels_for(DType::Q8_0).vec_dot_type, DType::Q8_0);
  EXPECT_EQ(kernels_for(DType::Q4_K).vec_dot_type, DType::Q8_K);
  EXPECT_EQ(kernels_for(DType::Q6_K).vec_dot_type, DType::Q8_K);
  EXPECT_EQ(kernels_for(DType::MXFP4).vec_dot_type, DType::Q8_0);
  EXPECT_EQ(kernels_for(DType::F16).vec_dot_type, DType::F16);
  EXPECT_EQ(kernels_for(DType::BF16).vec_dot_type, DType::BF16);
  EXPECT_FALSE(has_kernels(DType::IQ2_XXS));
  EXPECT_THROW(kernels_for(DType::IQ2_XXS), Error);
  EXPECT_THROW(kernels_for(DType(999)), Error);

  const Isa before = active_isa();
  set_active_isa(Isa::scalar);
  EXPECT_EQ(active_isa(), Isa::scalar);
  EXPECT_EQ(&kernels_for(DType::Q4_K), &kernels_for(DType::Q4_K, Isa::scalar));
  set_active_isa(Isa::avx512);
  EXPECT_EQ(active_isa(), detected_isa());  // clamped
  set_active_isa(before);
  std::printf("detected path: %s\n", isa_name(detected_isa()));
}

// ---- (a) the gguf package

TEST(Kernels, DequantizeMatchesGguf) {
  const char* names[] = {"F16",  "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
                         "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "MXFP4"};
  for (const char* name : names) {
    const DType t = parse_type(name);
    const auto blocks = read_file(fixture_dir() / (std::string(name) + ".blocks"));
    const auto expect = as_floats(read_file(fixture_dir() / (std::string(name) + ".deq.f32")));
    ASSERT_FALSE(blocks.empty()) << "missing fixture for " << name << " in " << fixture_dir();
    ASSERT_EQ(row_bytes(t, int64_t(expect.size())), blocks.size()) << name;
    for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512}) {
      const auto got = dequantize(t, blocks, int64_t(expect.size()), isa);
      ASSERT_EQ(0, std::memcmp(got.data(), expect.data(), expect.size() * 4)) << name << " on " << isa_name(isa);
    }
  }
}

TEST(Kernels, QuantizeMatchesGguf) {
  const char* names[] = {"F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "MXFP4"};
  for (const char* name : names) {
    const DType t = parse_type(name);
    const auto x = as_floats(read_file(fixture_dir() / (std::string(name) + ".qin.f32")));
    const auto expect = read_file(fixture_dir() / (std::string(name) + ".qout"));
    ASSERT_FALSE(x.empty()) << "missing fixture for " << name;
    for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512}) {
      std::vector<uint8_t> got(row_bytes(t, int64_t(x.size())));
      kernels_for(t, isa).quantize(x.data(), got.data(), int64_t(x.size()));
      ASSERT_EQ(got, expect) << name << " on " << isa_name(isa);
    }
  }
}

// ---- activation quantizers as ggml's x86 backend

TEST(Kernels, ActivationQuantizersRoundHalfToEven) {
  // amax 127 gives id = 1 exactly: 2.5 -> 2 and -3.5 -> -4 (ggml's _mm256_round_ps), where the
  // weight quantizer (quantize_row_q8_0_ref, roundf) gives 3 and -4.
  std::vector<float> x(32, 0.0f);
  x[0] = 127.0f;
  x[1] = 2.5f;
  x[2] = -3.5f;
  for (DType t : {DType::Q8_0, DType::Q8_1}) {
    for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512}) {
      std::vector<uint8_t> q(row_bytes(t, 32));
      kernels_for(t, isa).quantize_activation(x.data(), q.data(), 32);
      const int8_t* qs = reinterpret_cast<const int8_t*>(q.data() + (t == DType::Q8_0 ? 2 : 4));
      EXPECT_EQ(qs[0], 127);
      EXPECT_EQ(qs[1], 2) << type_name(t) << " " << isa_name(isa);
      EXPECT_EQ(qs[2], -4);
    }
    const auto ref = quantize(t, x);
    EXPECT_EQ(int8_t(ref[(t == DType::Q8_0 ? 2 : 4) + 1]), 3);
  }
  // Q8_K: iscale = -127 / (signed max), bsums of 16.
  std::vector<float> xk = random_floats(256, 7);
  xk[5] = -10.0f;
  std::vector<uint8_t> qk(row_bytes(DType::Q8_K, 256));
  kernels_for(DType::Q8_K, Isa::scalar).quantize_activation(xk.data(), qk.data(), 256);
  BlockQ8_K b;
  std::memcpy(&b, qk.data(), sizeof b);
  EXPECT_EQ(b.qs[5], -127);  // iscale = -127 / -10
  EXPECT_FLOAT_EQ(b.d, 1 / (-127.f / -10.0f));
  for (int j = 0; j < 16; ++j) {
    int s = 0;
    for (int l = 0; l < 16; ++l) s += b.qs[16 * j + l];
    EXPECT_EQ(b.bsums[j], s);
  }
}

// ---- (b) every SIMD path against the scalar reference

TEST(Kernels, SimdDequantizeAndQuantizeMatchScalar) {
  for (Isa isa : simd_paths()) {
    for (DType t : kAllTypes) {
      for (int64_t n : lengths_for(t)) {
        const auto x = random_floats(n, uint32_t(n) * 31 + uint32_t(t), 0.7f);
        std::vector<uint8_t> a(row_bytes(t, n)), b(row_bytes(t, n));
        kernels_for(t, Isa::scalar).quantize(x.data(), a.data(), n);
        kernels_for(t, isa).quantize(x.data(), b.data(), n);
        ASSERT_EQ(a, b) << "quantize " << type_name(t) << " n=" << n << " " << isa_name(isa);
        kernels_for(t, Isa::scalar).quantize_activation(x.data(), a.data(), n);
        kernels_for(t, isa).quantize_activation(x.data(), b.data(), n);
        ASSERT_EQ(a, b) << "quantize_activation " << type_name(t) << " n=" << n << " " << isa_name(isa);
        const auto ya = dequantize(t, a, n, Isa::scalar), yb = dequantize(t, a, n, isa);
        ASSERT_EQ(0, std::memcmp(ya.data(), yb.data(), size_t(n) * 4))
            << "dequantize " << type_name(t) << " n=" << n << " " << isa_name(isa);
      }
    }
  }
}

TEST(Kernels, SimdDotsMatchScalar) {
  for (Isa isa : simd_paths()) {
    for (DType t : kWeightTypes) {
      const TypeKernels& ks = kernels_for(t, Isa::scalar);
      const TypeKernels& kv = kernels_for(t, isa);
      const DType at = ks.vec_dot_type;
      for (int64_t n : lengths_for(t)) {
        const int n_rows = 6, n_cols = 5;  // not multiples of the tile shape
        std::vector<std::vector<uint8_t>> w, a;
        std::vector<std::vector<float>> wf, af;
        for (int r = 0; r < n_rows; ++r) {
          auto x = random_floats(n, 1000u + uint32_t(r) * 7 + uint32_t(n));
          w.push_back(quantize(t, x));
          wf.push_back(dequantize(t, w.back(), n));
        }
        for (int c = 0; c < n_cols; ++c) {
          auto x = random_floats(n, 5000u + uint32_t(c) * 13 + uint32_t(n), 2.0f);
          a.push_back(quantize(at, x, true));
          af.push_back(dequantize(at, a.back(), n));
        }
        std::vector<float> ref(size_t(n_rows * n_cols));
        for (int r = 0; r < n_rows; ++r)
          for (int c = 0; c < n_cols; ++c) {
            const float s = ks.vec_dot(n, w[r].data(), a[c].data());
            const float v = kv.vec_dot(n, w[r].data(), a[c].data());
            const double tol = 2e-6 * abs_dot(wf[r], af[c]) + 1e-6;
            ASSERT_NEAR(s, v, tol) << "vec_dot " << type_name(t) << " n=" << n << " " << isa_name(isa);
            ref[size_t(r * n_cols + c)] = s;
          }
        if (!kv.tile_dot) continue;
        // rows and columns as contiguous matrices
        const size_t wrb = row_bytes(t, n), arb = row_bytes(at, n);
        std::vector<uint8_t> wm(wrb * n_rows), am(arb * n_cols);
        for (int r = 0; r < n_rows; ++r) std::memcpy(wm.data() + r * wrb, w[r].data(), wrb);
        for (int c = 0; c < n_cols; ++c) std::memcpy(am.data() + c * arb, a[c].data(), arb);
        std::vector<float> out(size_t(n_rows * 8), -1.0f);
        kv.tile_dot(n, wm.data(), wrb, n_rows, am.data(), arb, n_cols, out.data(), 8, 1);
        for (int r = 0; r < n_rows; ++r)
          for (int c = 0; c < n_cols; ++c) {
            const double tol = 2e-6 * abs_dot(wf[r], af[c]) + 1e-6;
            ASSERT_NEAR(ref[size_t(r * n_cols + c)], out[size_t(r * 8 + c)], tol)
                << "tile_dot " << type_name(t) << " n=" << n << " r=" << r << " c=" << c << " " << isa_name(isa);
          }
      }
    }
  }
}

// ---- (c) vec_dot against float dots

// Tiles of the shapes prompt processing uses: more rows and columns than one register tile, a K
// that does not fill the last chunk of packed blocks, and a transposed output ([column][row]).
TEST(Kernels, TileDotLargeShapesMatchScalar) {
  for (Isa isa : simd_paths()) {
    for (DType t : kWeightTypes) {
      const TypeKernels& ks = kernels_for(t, Isa::scalar);
      const TypeKernels& kv = kernels_for(t, isa);
      if (!kv.tile_dot) continue;
      const DType at = ks.vec_dot_type;
      const int64_t n = type_info(t).block_elems == 256 ? 1280 : 1056;
      const int n_rows = 19, n_cols = 70;
      const size_t wrb = row_bytes(t, n), arb = row_bytes(at, n);
      std::vector<uint8_t> wm(wrb * n_rows), am(arb * n_cols);
      std::vector<std::vector<float>> wf, af;
      for (int r = 0; r < n_rows; ++r) {
        const auto q = quantize(t, random_floats(n, 300u + uint32_t(r)));
        std::memcpy(wm.data() + r * wrb, q.data(), wrb);
        wf.push_back(dequantize(t, q, n));
      }
      for (int c = 0; c < n_cols; ++c) {
        const auto q = quantize(at, random_floats(n, 900u + uint32_t(c), 2.0f), true);
        std::memcpy(am.data() + c * arb, q.data(), arb);
        af.push_back(dequantize(at, q, n));
      }
      // The AVX-512 (VNNI) path packs these rows and keeps the scalar reference's order exactly.
      const bool exact = isa == Isa::avx512 && (t == DType::Q4_0 || t == DType::Q5_0 || t == DType::Q8_0 || t == DType::Q4_K);
      const size_t col_stride = n_rows + 3;
      std::vector<float> out(col_stride * n_cols, -1.0f);
      kv.tile_dot(n, wm.data(), wrb, n_rows, am.data(), arb, n_cols, out.data(), 1, col_stride);
      for (int r = 0; r < n_rows; ++r)
        for (int c = 0; c < n_cols; ++c) {
          const float ref = ks.vec_dot(n, wm.data() + r * wrb, am.data() + c * arb);
          const double tol = 2e-6 * abs_dot(wf[r], af[c]) + 1e-6;
          ASSERT_NEAR(ref, out[c * col_stride + r], tol)
              << "tile_dot " << type_name(t) << " r=" << r << " c=" << c << " " << isa_name(isa);
          if (exact) ASSERT_EQ(ref, out[c * col_stride + r]) << "tile_dot " << type_name(t) << " r=" << r << " c=" << c;
        }
    }
  }
}

// The AVX-512 Q6_K prompt kernel packs 16 rows per register but keeps the AVX2 register tiles' lanes
// and float order per row: the two paths agree bit for bit (the model-level logits tests vs
// llama.cpp were tuned on these values). Rows past a 16-row group, columns past a pass of 128 and a
// row-major output too.
TEST(Kernels, Q6KPackedTilesEqualRegisterTiles) {
  if (int(detected_isa()) < int(Isa::avx512)) GTEST_SKIP() << "needs the AVX-512 path";
  const TypeKernels& k2 = kernels_for(DType::Q6_K, Isa::avx2);
  const TypeKernels& k5 = kernels_for(DType::Q6_K, Isa::avx512);
  ASSERT_TRUE(k2.tile_dot && k5.tile_dot);
  const int64_t n = 1280;
  const int n_rows = 37, n_cols = 133;
  const size_t wrb = row_bytes(DType::Q6_K, n), arb = row_bytes(DType::Q8_K, n);
  std::vector<uint8_t> wm(wrb * n_rows), am(arb * n_cols);
  for (int r = 0; r < n_rows; ++r) {
    const auto q = quantize(DType::Q6_K, random_floats(n, 700u + uint32_t(r), r % 5 == 0 ? 40.0f : 1.0f));
    std::memcpy(wm.data() + r * wrb, q.data(), wrb);
  }
  for (int c = 0; c < n_cols; ++c) {
    const auto q = quantize(DType::Q8_K, random_floats(n, 1900u + uint32_t(c), c % 7 == 0 ? 100.0f : 2.0f), true);
    std::memcpy(am.data() + c * arb, q.data(), arb);
  }
  for (const bool col_major : {true, false}) {
    const size_t rs = col_major ? 1 : n_cols + 2, cs = col_major ? n_rows + 3 : 1;
    const size_t size = col_major ? cs * n_cols : rs * n_rows;
    std::vector<float> o2(size, -1.0f), o5(size, -1.0f);
    k2.tile_dot(n, wm.data(), wrb, n_rows, am.data(), arb, n_cols, o2.data(), rs, cs);
    k5.tile_dot(n, wm.data(), wrb, n_rows, am.data(), arb, n_cols, o5.data(), rs, cs);
    for (int r = 0; r < n_rows; ++r)
      for (int c = 0; c < n_cols; ++c)
        ASSERT_EQ(o2[r * rs + c * cs], o5[r * rs + c * cs]) << "Q6_K r=" << r << " c=" << c << " col_major=" << col_major;
  }
}

// F32 weights against a batch sum as llamafile's tinyBLAS (ggml's path for two or more tokens on x86):
// one FMA accumulator of the vector's lanes over the row, then the vector's sum, as GCC reduces it
// (halves of 256, 128, then pairs). gpt-oss's router is F32 (issue 16).
float tinyblas_f32_dot(int64_t n, const float* x, const float* y, int lanes) {
  std::vector<float> acc(size_t(lanes), 0.0f);
  for (int64_t i = 0; i < n; i += lanes)
    for (int l = 0; l < lanes; ++l) acc[size_t(l)] = std::fma(x[i + l], y[i + l], acc[size_t(l)]);
  if (lanes == 8) {  // hsum: high + low 128, then (0, 2) (1, 3), then 0 + 1
    float r[4];
    for (int l = 0; l < 4; ++l) r[l] = acc[size_t(l) + 4] + acc[size_t(l)];
    return (r[0] + r[2]) + (r[1] + r[3]);
  }
  for (int w = lanes / 2; w >= 1; w /= 2)
    for (int l = 0; l < w; ++l) acc[size_t(l)] = acc[size_t(l)] + acc[size_t(l + w)];
  return acc[0];
}

TEST(Kernels, F32TileDotFollowsTinyBlas) {
  for (Isa isa : simd_paths()) {
    const TypeKernels& k = kernels_for(DType::F32, isa);
    ASSERT_NE(k.tile_dot, nullptr);
    const int lanes = isa == Isa::avx512 ? 16 : 8;
    for (int64_t n : {int64_t(2880), int64_t(2888)}) {  // the second not a multiple of 16: vec_dot
      const int n_rows = 4, n_cols = 3;
      std::vector<std::vector<float>> w, a;
      std::vector<float> wm, am;
      for (int r = 0; r < n_rows; ++r) w.push_back(random_floats(n, 500u + uint32_t(r), 0.02f));
      for (int c = 0; c < n_cols; ++c) a.push_back(random_floats(n, 600u + uint32_t(c)));
      for (auto& v : w) wm.insert(wm.end(), v.begin(), v.end());
      for (auto& v : a) am.insert(am.end(), v.begin(), v.end());
      std::vector<float> out(size_t(n_rows) * n_cols);
      k.tile_dot(n, wm.data(), size_t(n) * 4, n_rows, am.data(), size_t(n) * 4, n_cols, out.data(), 1, n_rows);
      for (int r = 0; r < n_rows; ++r)
        for (int c = 0; c < n_cols; ++c) {
          const float want = n % lanes == 0 ? tinyblas_f32_dot(n, w[size_t(r)].data(), a[size_t(c)].data(), lanes)
                                            : k.vec_dot(n, w[size_t(r)].data(), a[size_t(c)].data());
          ASSERT_EQ(out[size_t(c) * n_rows + r], want) << "n=" << n << " r=" << r << " c=" << c << " " << isa_name(isa);
        }
    }
  }
}

// MXFP4 experts against Q8_0 activations, one token or several routed to the expert, sum as ggml's
// x86 ggml_vec_dot_mxfp4_q8_0 (what its mul_mat_id runs per routed token): even blocks into one
// 8-lane FMA accumulator, odd blocks into another, then hsum_float_8 of their sum (issue 16).
TEST(Kernels, Mxfp4TileDotFollowsGgmlVecDot) {
  for (Isa isa : simd_paths()) {
    const TypeKernels& k = kernels_for(DType::MXFP4, isa);
    const int64_t n = 2880;
    const int n_rows = 7, n_cols = 6;
    const size_t wrb = row_bytes(DType::MXFP4, n), arb = row_bytes(DType::Q8_0, n);
    std::vector<uint8_t> w(wrb * n_rows), a(arb * n_cols);
    for (int r = 0; r < n_rows; ++r) {
      const auto q = quantize(DType::MXFP4, random_floats(n, 800u + uint32_t(r), 0.02f));
      std::memcpy(w.data() + r * wrb, q.data(), wrb);
    }
    for (int c = 0; c < n_cols; ++c) {
      const auto q = quantize(DType::Q8_0, random_floats(n, 900u + uint32_t(c)), true);
      std::memcpy(a.data() + c * arb, q.data(), arb);
    }
    std::vector<float> out(size_t(n_rows) * n_cols);
    k.tile_dot(n, w.data(), wrb, n_rows, a.data(), arb, n_cols, out.data(), 1, n_rows);
    for (int r = 0; r < n_rows; ++r)
      for (int c = 0; c < n_cols; ++c)
        ASSERT_EQ(out[size_t(c) * n_rows + r], k.vec_dot(n, w.data() + r * wrb, a.data() + c * arb))
            << "r=" << r << " c=" << c << " " << isa_name(isa);
  }
}

TEST(Kernels, VecDotMatchesDequantizedFloatDot) {
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512}) {
    for (DType t : kWeightTypes) {
      const TypeKernels& k = kernels_for(t, isa);
      const int64_t n = 4096;
      const auto xw = random_floats(n, 11), xa = random_floats(n, 12, 3.0f);
      const auto w = quantize(t, xw);
      const auto a = quantize(k.vec_dot_type, xa, true);
      const auto wf = dequantize(t, w, n), af = dequantize(k.vec_dot_type, a, n);
      const float got = k.vec_dot(n, w.data(), a.data());
      // the same numbers as floats: only summation order differs
      EXPECT_NEAR(got, dot(wf, af), 2e-6 * abs_dot(wf, af) + 1e-6) << type_name(t) << " " << isa_name(isa);
      // against the unquantized activations: within the activation quantization error
      EXPECT_NEAR(got, dot(wf, xa), 0.02 * abs_dot(wf, xa)) << type_name(t) << " " << isa_name(isa);
    }
  }
}

TEST(Kernels, QuantizeRoundTripError) {
  // Reference quantizers reproduce their input within a few percent of its RMS.
  const int64_t n = 4096;
  const auto x = random_floats(n, 99);
  double rms = 0;
  for (float v : x) rms += double(v) * v;
  rms = std::sqrt(rms / double(n));
  const std::pair<DType, double> limits[] = {
      {DType::F16, 1e-3}, {DType::BF16, 1e-2}, {DType::Q8_0, 0.01}, {DType::Q8_1, 0.01}, {DType::Q8_K, 0.01},
      {DType::Q6_K, 0.04}, {DType::Q5_0, 0.08}, {DType::Q5_1, 0.08}, {DType::Q5_K, 0.07}, {DType::Q4_0, 0.15},
      {DType::Q4_1, 0.15}, {DType::Q4_K, 0.12}, {DType::Q3_K, 0.25}, {DType::Q2_K, 0.45},
      {DType::MXFP4, 0.2}};
  for (const auto& [t, limit] : limits) {
    const auto y = dequantize(t, quantize(t, x), n);
    double err = 0;
    for (int64_t i = 0; i < n; ++i) err += double(y[size_t(i)] - x[size_t(i)]) * (y[size_t(i)] - x[size_t(i)]);
    EXPECT_LT(std::sqrt(err / double(n)), limit * rms) << type_name(t);
  }
}

}  // namespace
}  // namespace strata::kernels
