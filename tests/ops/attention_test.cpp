// The tiled attention kernel (ops/attention.h) against a plain reference: every score, a softmax
// and a weighted sum in double over the same cached bytes, with f16 values weighted by the
// normalized probabilities rounded to f16 as llama.cpp's non-flash path does. Lengths sit around every block edge
// of the kernel (query blocks of 32, key blocks of 64, split-K ranges of 256 positions, vector
// widths of 8 and 16) and reach 8,192; every head layout of the supported architectures; every
// KV type; every instruction-set path this CPU has; sliding windows over a ring of slots.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "ops/attention.h"
#include "ops/attention_kernels.h"
#include "tensor/fp16.h"
#include "tensor/kernels.h"
#include "tensor/type.h"
#include "util/error.h"

namespace strata::ops {
namespace {

struct Layout {
  const char* name;
  int n_head, n_head_kv, head_dim;
};
// Head layouts of the supported architectures' common sizes.
const Layout kLayouts[] = {
    {"smollm2_135m", 9, 3, 64},   {"gemma3_270m", 4, 1, 256}, {"gemma3_4b", 8, 4, 256},
    {"llama3_8b", 32, 8, 128},    {"qwen2_0_5b", 14, 2, 64},  {"qwen3_moe", 32, 4, 128},
    {"mha_tinyllama", 4, 4, 64},  {"head_96", 6, 2, 96},
};

struct Cache {
  std::vector<uint8_t> k, v;
  KvLayerView kv, vv;
};

// A cache of n_slots slots holding positions [0, n_pos) (a ring keeps the last n_slots), filled
// through kv_store from random floats.
Cache make_cache(const Layout& L, DType type, int64_t n_slots, int64_t n_pos, std::mt19937& rng) {
  Cache c;
  const size_t row = kv_row_bytes(type, L.n_head_kv, L.head_dim);
  c.k.assign(size_t(n_slots) * row, 0);
  c.v.assign(size_t(n_slots) * row, 0);
  c.kv = {c.k.data(), type, row, row / size_t(L.n_head_kv), n_slots};
  c.vv = {c.v.data(), type, row, row / size_t(L.n_head_kv), n_slots};
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> src(size_t(L.n_head_kv) * L.head_dim);
  for (int64_t p = std::max<int64_t>(0, n_pos - n_slots); p < n_pos; ++p) {
    for (float& x : src) x = dist(rng);
    kv_store(c.kv, p, src.data(), L.n_head_kv, L.head_dim);
    for (float& x : src) x = dist(rng);
    kv_store(c.vv, p, src.data(), L.n_head_kv, L.head_dim);
  }
  return c;
}

// q as the kernel's dot sees it: rounded through the keys' vec_dot type (f16, or q8_0).
std::vector<float> rounded(DType key_type, const float* q, int d) {
  const kernels::TypeKernels& k = kernels::kernels_for(kernels::kernels_for(key_type).vec_dot_type);
  std::vector<uint8_t> buf(row_bytes(kernels::kernels_for(key_type).vec_dot_type, d));
  std::vector<float> out(static_cast<size_t>(d));
  k.quantize_activation(q, buf.data(), d);
  k.dequantize(buf.data(), out.data(), d);
  return out;
}

float round_f16(double x) { return fp16_to_f32(f32_to_fp16(float(x))); }

// The reference outputs, and in `slack` how far each may honestly be off: where a probability
// lies so close to a rounding boundary of f16 that the kernel's f32 softmax may round it the
// other way, that step times |v| (zero for quantized caches, whose probabilities stay unrounded).
std::vector<float> reference(const AttentionShape& s, const std::vector<float>& q, int n_tokens, int64_t pos0,
                             const Cache& c, std::vector<double>& slack) {
  const bool round_p = c.vv.type == DType::F16;
  const int group = s.n_head / s.n_head_kv, d = s.head_dim_k, dv = s.head_dim_v;
  const kernels::TypeKernels& conv = kernels::kernels_for(c.kv.type);
  const int64_t lo = s.window > 0 ? std::max<int64_t>(0, pos0 - s.window + 1) : 0, hi = pos0 + n_tokens;
  std::vector<float> out(size_t(n_tokens) * s.n_head * dv);
  slack.assign(out.size(), 0.0);
  std::vector<float> keys(size_t(hi - lo) * d), values(size_t(hi - lo) * dv);
  std::vector<double> scores, acc(static_cast<size_t>(dv));
  for (int kvh = 0; kvh < s.n_head_kv; ++kvh) {
    for (int64_t p = lo; p < hi; ++p) {  // every visible row dequantized once per KV head
      conv.dequantize(c.kv.head(p, kvh), keys.data() + size_t(p - lo) * d, d);
      conv.dequantize(c.vv.head(p, kvh), values.data() + size_t(p - lo) * dv, dv);
    }
    for (int t = 0; t < n_tokens; ++t)
      for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
        const int64_t pos = pos0 + t;
        const int64_t first = s.window > 0 ? std::max<int64_t>(0, pos - s.window + 1) : 0;
        const std::vector<float> qr = rounded(c.kv.type, q.data() + (size_t(t) * s.n_head + h) * d, d);
        scores.assign(size_t(pos - first + 1), 0.0);
        double mx = -1e300;
        for (int64_t p = first; p <= pos; ++p) {
          const float* row = keys.data() + size_t(p - lo) * d;
          double dot = 0.0;
          for (int i = 0; i < d; ++i) dot += double(qr[size_t(i)]) * row[i];
          scores[size_t(p - first)] = dot * s.scale;
          mx = std::max(mx, scores[size_t(p - first)]);
        }
        if (s.sinks) mx = std::max(mx, double(s.sinks[h]));  // a sink joins the max and the sum
        double sum = 0.0;
        for (double& x : scores) sum += (x = std::exp(x - mx));
        if (s.sinks) sum += std::exp(double(s.sinks[h]) - mx);
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t p = first; p <= pos; ++p) {
          const float* row = values.data() + size_t(p - lo) * dv;
          double w = scores[size_t(p - first)] / sum;
          if (round_p) {
            const double lo = round_f16(w * (1.0 - 1e-5)), hi = round_f16(w * (1.0 + 1e-5));
            if (lo != hi)
              for (int i = 0; i < dv; ++i)
                slack[(size_t(t) * s.n_head + h) * dv + size_t(i)] += (hi - lo) * std::fabs(row[i]);
            w = round_f16(w);
          }
          for (int i = 0; i < dv; ++i) acc[size_t(i)] += w * row[i];
        }
        for (int i = 0; i < dv; ++i) out[(size_t(t) * s.n_head + h) * dv + size_t(i)] = float(acc[size_t(i)]);
      }
  }
  return out;
}

struct Case {
  int64_t pos0;
  int n_tokens;
  int window;
};

class AttentionTest : public ::testing::TestWithParam<std::tuple<Layout, DType>> {};

// The kernel on every path against the reference, for one case. `shared`: a cache of every
// position up to at least the case's last (positions past it are there but must not be seen);
// null: a ring of window + batch slots is made for the case, as the model's cache does.
void check(const Layout& L, DType type, const Case& cs, const Cache* shared, ThreadPool& pool, std::mt19937& rng,
           const float* sinks = nullptr) {
  const AttentionShape shape{L.n_head, L.n_head_kv, L.head_dim, L.head_dim, 1.0f / std::sqrt(float(L.head_dim)),
                             cs.window, sinks};
  const int64_t n_pos = cs.pos0 + cs.n_tokens;
  Cache ring;
  if (!shared) ring = make_cache(L, type, std::min<int64_t>(n_pos, cs.window + cs.n_tokens), n_pos, rng);
  const Cache& c = shared ? *shared : ring;
  std::normal_distribution<float> dist(0.0f, 1.5f);
  std::vector<float> q(size_t(cs.n_tokens) * L.n_head * L.head_dim);
  for (float& x : q) x = dist(rng);
  std::vector<double> slack;
  const std::vector<float> want = reference(shape, q, cs.n_tokens, cs.pos0, c, slack);
  const std::string where = std::string(L.name) + " " + type_name(type) + " pos0=" + std::to_string(cs.pos0) +
                            " n_tokens=" + std::to_string(cs.n_tokens) + " window=" + std::to_string(cs.window);
  for (int isa = 0; isa <= int(kernels::detected_isa()); ++isa) {
    kernels::set_active_isa(kernels::Isa(isa));
    AttentionScratch scratch;
    scratch.init(shape, cs.n_tokens, n_pos, pool.n_threads());
    std::vector<float> got(want.size(), std::nanf(""));
    attention(shape, q.data(), cs.n_tokens, cs.pos0, c.kv, c.vv, got.data(), pool, scratch);
    double worst = 0.0;
    for (size_t i = 0; i < want.size(); ++i)
      worst = std::max(worst, double(std::fabs(got[i] - want[i])) - slack[i]);
    EXPECT_LT(worst, 2e-5) << where << " on " << kernels::isa_name(kernels::Isa(isa));
  }
  kernels::set_active_isa(kernels::detected_isa());
}

TEST_P(AttentionTest, MatchesReferenceAroundBlockEdges) {
  const auto [L, type] = GetParam();
  std::mt19937 rng(19);
  ThreadPool pool(3);
  const Cache all = make_cache(L, type, 1100, 1100, rng);
  // A prompt from position 0 across the query and key block edges.
  for (int n : {1, 2, 15, 16, 17, 31, 32, 33, 63, 64, 65, 97, 129}) check(L, type, {0, n, 0}, &all, pool, rng);
  // One or a few tokens after a context: key blocks, vector tails and split-K ranges.
  for (int64_t pos : {7, 8, 9, 63, 64, 65, 255, 256, 257, 511, 512, 513, 1023, 1024, 1025})
    for (int n : {1, 3}) check(L, type, {pos, n, 0}, &all, pool, rng);
  // A batch after a context (several query blocks, the last one partial).
  check(L, type, {300, 70, 0}, &all, pool, rng);
  // Sliding window over a ring of window + batch slots, in the prompt and in generation.
  for (int window : {16, 64, 100})
    for (Case cs : {Case{0, 129, window}, Case{500, 1, window}, Case{700, 33, window}})
      check(L, type, cs, nullptr, pool, rng);
}

TEST_P(AttentionTest, MatchesReferenceAtLongContext) {
  const auto [L, type] = GetParam();
  std::mt19937 rng(8192);
  ThreadPool pool(2);
  const Cache all = make_cache(L, type, 8192, 8192, rng);
  for (Case cs : {Case{4095, 1, 0}, Case{4096, 2, 0}, Case{8191, 1, 0}, Case{8180, 12, 0}})
    check(L, type, cs, &all, pool, rng);
  check(L, type, {8000, 1, 512}, nullptr, pool, rng);
}

// Attention sinks (gpt-oss): per-head logits from well below to well above the scores, so both
// of the online step's branches (the sink raising the max or not) run; prompt tiles, split-K
// ranges and sliding windows, on every KV type and path.
TEST(AttentionSinks, MatchReference) {
  const Layout layouts[] = {{"gpt_oss", 64, 8, 64}, {"gpt_oss_tiny", 4, 2, 32}};
  std::mt19937 rng(120);
  ThreadPool pool(3);
  for (const Layout& L : layouts)
    for (DType type : {DType::F16, DType::Q8_0, DType::Q4_0}) {
      std::vector<float> sinks(static_cast<size_t>(L.n_head));
      std::normal_distribution<float> dist(1.0f, 3.0f);
      for (float& x : sinks) x = dist(rng);
      const Cache all = make_cache(L, type, 600, 600, rng);
      for (Case cs : {Case{0, 1, 0}, Case{0, 40, 0}, Case{63, 1, 0}, Case{520, 1, 0}, Case{513, 3, 0}, Case{300, 70, 0}})
        check(L, type, cs, &all, pool, rng, sinks.data());
      for (Case cs : {Case{0, 129, 16}, Case{700, 1, 128}, Case{700, 33, 64}})
        check(L, type, cs, nullptr, pool, rng, sinks.data());
    }
}

std::string name(const ::testing::TestParamInfo<std::tuple<Layout, DType>>& info) {
  return std::string(std::get<0>(info.param).name) + "_" + type_name(std::get<1>(info.param));
}

INSTANTIATE_TEST_SUITE_P(Layouts, AttentionTest,
                         ::testing::Combine(::testing::ValuesIn(kLayouts),
                                            ::testing::Values(DType::F16, DType::Q8_0, DType::Q4_0)),
                         name);

// The f16 path's tile of scores (from the f16 values held as floats) is, bit for bit, the F16
// vec_dot of each key with each query row times the scale, on every instruction-set path.
TEST(AttentionKernels, F16ScoresEqualTheF16VecDotBitForBit) {
  std::mt19937 rng(64);
  std::normal_distribution<float> dist(0.0f, 2.0f);
  for (int d : {32, 64, 96, 128, 192, 256}) {
    const int n_rows = 3, n_keys = 53;
    const size_t ld = 61;
    std::vector<uint16_t> q(size_t(n_rows) * d), k(size_t(n_keys) * d);
    for (uint16_t& x : q) x = f32_to_fp16(dist(rng));
    for (uint16_t& x : k) x = f32_to_fp16(dist(rng));
    std::vector<float> qf(q.size()), kf(k.size());  // the same values as floats, as the kernel takes them
    for (size_t i = 0; i < q.size(); ++i) qf[i] = fp16_to_f32(q[i]);
    for (size_t i = 0; i < k.size(); ++i) kf[i] = fp16_to_f32(k[i]);
    for (int isa = 0; isa <= int(kernels::detected_isa()); ++isa) {
      kernels::set_active_isa(kernels::Isa(isa));
      std::vector<float> s(size_t(n_rows) * ld, 0.0f);
      attn::kernels_for(kernels::Isa(isa)).scores_f16(qf.data(), n_rows, d, kf.data(), n_keys, 0.125f, s.data(), ld);
      for (int r = 0; r < n_rows; ++r)
        for (int j = 0; j < n_keys; ++j) {
          const float want =
              kernels::kernels_for(DType::F16).vec_dot(d, k.data() + size_t(j) * d, q.data() + size_t(r) * d) * 0.125f;
          ASSERT_EQ(s[size_t(r) * ld + size_t(j)], want)
              << "d " << d << " row " << r << " key " << j << " on " << kernels::isa_name(kernels::Isa(isa));
        }
    }
    kernels::set_active_isa(kernels::detected_isa());
  }
}

// ggml-cpu's flash-attention kernel for quantized caches (flash_attn_ext_f16_one_chunk), written
// out as it runs for one (token, head) row: the query through q8_0, per key in position order
// the x86 q8_0 / q4_0 vec_dot (8 lanes of 4 integer products, one FMA a block, hsum_float_8)
// times the scale, the running max with expf, the value added with an FMA, S = S * ms + vs; a
// sink after the keys; then o * (1 / S).
std::vector<float> ggml_flash_reference(const AttentionShape& s, const std::vector<float>& q, int n_tokens,
                                        int64_t pos0, const Cache& c) {
  const int group = s.n_head / s.n_head_kv, d = s.head_dim_k, dv = s.head_dim_v, nb = d / 32;
  const kernels::TypeKernels& q8 = kernels::kernels_for(DType::Q8_0, kernels::Isa::scalar);
  const kernels::TypeKernels& vconv = kernels::kernels_for(c.vv.type, kernels::Isa::scalar);
  std::vector<float> out(size_t(n_tokens) * s.n_head * dv), o(static_cast<size_t>(dv)), v(static_cast<size_t>(dv));
  std::vector<uint8_t> qq(row_bytes(DType::Q8_0, d));
  auto block = [&](const uint8_t* row, int b, int8_t* x) {  // element i of block b, and the scale
    if (c.kv.type == DType::Q8_0) {
      std::memcpy(x, row + size_t(b) * 34 + 2, 32);
    } else {
      for (int j = 0; j < 16; ++j) {
        x[j] = int8_t((row[size_t(b) * 18 + 2 + size_t(j)] & 15) - 8);
        x[j + 16] = int8_t((row[size_t(b) * 18 + 2 + size_t(j)] >> 4) - 8);
      }
    }
    uint16_t h;
    std::memcpy(&h, row + size_t(b) * (c.kv.type == DType::Q8_0 ? 34 : 18), 2);
    return fp16_to_f32(h);
  };
  for (int t = 0; t < n_tokens; ++t)
    for (int h = 0; h < s.n_head; ++h) {
      const int64_t pos = pos0 + t, first = s.window > 0 ? std::max<int64_t>(0, pos - s.window + 1) : 0;
      q8.quantize_activation(q.data() + (size_t(t) * s.n_head + h) * d, qq.data(), d);
      float M = -std::numeric_limits<float>::infinity(), S = 0.0f;
      std::fill(o.begin(), o.end(), 0.0f);
      for (int64_t p = first; p <= pos; ++p) {
        const uint8_t* key = c.kv.head(p, h / group);
        float acc[8] = {};
        for (int b = 0; b < nb; ++b) {
          int8_t x[32];
          uint16_t qd;
          std::memcpy(&qd, qq.data() + size_t(b) * 34, 2);
          const float dd = block(key, b, x) * fp16_to_f32(qd);
          const auto* y = reinterpret_cast<const int8_t*>(qq.data() + size_t(b) * 34 + 2);
          for (int l = 0; l < 8; ++l) {
            int sum = 0;
            for (int i = 4 * l; i < 4 * l + 4; ++i) sum += int(x[i]) * int(y[i]);
            acc[l] = std::fma(dd, float(sum), acc[l]);
          }
        }
        const float score = (((acc[4] + acc[0]) + (acc[6] + acc[2])) + ((acc[5] + acc[1]) + (acc[7] + acc[3]))) * s.scale;
        float ms = 1.0f, vs = 1.0f;
        if (score > M) {
          const float m_old = M;
          M = score;
          ms = std::exp(m_old - M);
          for (float& x : o) x *= ms;
        } else {
          vs = std::exp(score - M);
        }
        vconv.dequantize(c.vv.head(p, h / group), v.data(), dv);
        for (int i = 0; i < dv; ++i) o[size_t(i)] = std::fma(v[size_t(i)], vs, o[size_t(i)]);
        S = std::fma(S, ms, vs);
      }
      if (s.sinks) {
        float ms = 1.0f, vs = 1.0f;
        if (s.sinks[h] > M) {
          ms = std::exp(M - s.sinks[h]);
          for (float& x : o) x *= ms;
        } else {
          vs = std::exp(s.sinks[h] - M);
        }
        S = std::fma(S, ms, vs);
      }
      const float inv = 1.0f / S;
      for (int i = 0; i < dv; ++i) out[(size_t(t) * s.n_head + h) * dv + size_t(i)] = o[size_t(i)] * inv;
    }
  return out;
}

// Quantized caches give ggml's flash kernel's outputs bit for bit wherever no split-K range is cut
// (prompts, short contexts), on every path, layout, window and with sinks. (The same kernel was
// checked against ggml_flash_attn_ext of llama-cpp-python 0.3.36's libggml-cpu itself: q8_0 and
// q4_0, head sizes 64 and 256, 40 tokens after 100, every output equal.)
TEST(AttentionKernels, QuantizedCachesAreGgmlsFlashKernelBitForBit) {
  const Layout layouts[] = {{"smollm2_135m", 9, 3, 64}, {"gemma3_270m", 4, 1, 256}, {"head_96", 6, 2, 96},
                            {"gpt_oss_tiny", 4, 2, 32}};
  std::mt19937 rng(4096);
  ThreadPool pool(3);
  for (const Layout& L : layouts)
    for (DType type : {DType::Q8_0, DType::Q4_0}) {
      const Cache all = make_cache(L, type, 700, 700, rng);
      std::vector<float> sinks(static_cast<size_t>(L.n_head));
      std::normal_distribution<float> sd(1.0f, 3.0f);
      for (float& x : sinks) x = sd(rng);
      for (Case cs : {Case{0, 1, 0}, Case{0, 129, 0}, Case{100, 40, 0}, Case{300, 70, 0}, Case{200, 1, 0},
                      Case{600, 33, 0}, Case{500, 64, 100}})
        for (const float* sink : {static_cast<const float*>(nullptr), static_cast<const float*>(sinks.data())}) {
          const AttentionShape shape{L.n_head,  L.n_head_kv, L.head_dim, L.head_dim,
                                     1.0f / std::sqrt(float(L.head_dim)), cs.window, sink};
          std::normal_distribution<float> dist(0.0f, 1.5f);
          std::vector<float> q(size_t(cs.n_tokens) * L.n_head * L.head_dim);
          for (float& x : q) x = dist(rng);
          const std::vector<float> want = ggml_flash_reference(shape, q, cs.n_tokens, cs.pos0, all);
          for (int isa = 0; isa <= int(kernels::detected_isa()); ++isa) {
            kernels::set_active_isa(kernels::Isa(isa));
            AttentionScratch scratch;
            scratch.init(shape, cs.n_tokens, cs.pos0 + cs.n_tokens, pool.n_threads());
            std::vector<float> got(want.size(), std::nanf(""));
            attention(shape, q.data(), cs.n_tokens, cs.pos0, all.kv, all.vv, got.data(), pool, scratch);
            size_t differ = 0;
            for (size_t i = 0; i < got.size(); ++i) differ += std::memcmp(&got[i], &want[i], sizeof(float)) != 0;
            EXPECT_EQ(differ, 0u) << L.name << " " << type_name(type) << " pos0=" << cs.pos0
                                  << " n_tokens=" << cs.n_tokens << " window=" << cs.window << (sink ? " sinks" : "")
                                  << " on " << kernels::isa_name(kernels::Isa(isa));
          }
          kernels::set_active_isa(kernels::detected_isa());
        }
    }
}

// The f16 path's exponentials are the C library's expf bit for bit (on every path, over every
// 61st float from -112 to 0, vector tails included), and their sum is in double in order.
TEST(AttentionKernels, ExpSumIsTheCLibraryExpfBitForBit) {
  std::vector<float> x;
  for (uint32_t b = 0x80000000u; b <= 0xC2E00000u; b += 61) {
    float f;
    std::memcpy(&f, &b, sizeof f);
    x.push_back(f);
  }
  const float m = 0.75f;
  for (int isa = 0; isa <= int(kernels::detected_isa()); ++isa) {
    for (int64_t n : {int64_t(x.size()), int64_t(13)}) {
      std::vector<float> s(x.begin(), x.begin() + n);
      for (float& v : s) v += m;  // s - m spans [-112, 0] again
      std::vector<float> want(s);
      double want_sum = 0.0;
      for (float& v : want) want_sum += double(v = std::exp(v - m));
      const double sum = attn::kernels_for(kernels::Isa(isa)).exp_sum(s.data(), n, m);
      for (int64_t j = 0; j < n; ++j)
        ASSERT_EQ(std::memcmp(&s[size_t(j)], &want[size_t(j)], sizeof(float)), 0)
            << "e^" << want[size_t(j)] << " at " << j << " on " << kernels::isa_name(kernels::Isa(isa));
      EXPECT_EQ(sum, want_sum);
    }
  }
}

// The f16 path keeps an item's score rows where the scratch holds them and computes them again in
// each sweep where it does not (items also take fewer query tokens to fit): a scratch sized for
// the whole context, for part of it, and for one position give the same bits, on every path, in
// prompt tiles, split-K, sliding windows and with sinks.
TEST(AttentionScratch, BoundedScoresGiveTheSameBits) {
  const Layout layouts[] = {{"smollm2_135m", 9, 3, 64}, {"gemma3_270m", 4, 1, 256}, {"gpt_oss_tiny", 4, 2, 32}};
  std::mt19937 rng(2048);
  ThreadPool pool(3);
  for (const Layout& L : layouts) {
    const int64_t n_pos = 1200;
    const Cache all = make_cache(L, DType::F16, n_pos, n_pos, rng);
    std::vector<float> sinks(size_t(L.n_head), 0.5f);
    for (Case cs : {Case{0, 90, 0}, Case{1100, 60, 0}, Case{1150, 1, 0}, Case{1197, 3, 0}, Case{1100, 40, 64},
                    Case{1150, 50, 300}})
      for (const float* sink : {static_cast<const float*>(nullptr), static_cast<const float*>(sinks.data())}) {
        const AttentionShape shape{L.n_head,  L.n_head_kv, L.head_dim, L.head_dim, 1.0f / std::sqrt(float(L.head_dim)),
                                   cs.window, sink};
        std::normal_distribution<float> dist(0.0f, 1.5f);
        std::vector<float> q(size_t(cs.n_tokens) * L.n_head * L.head_dim);
        for (float& x : q) x = dist(rng);
        for (int isa = 0; isa <= int(kernels::detected_isa()); ++isa) {
          kernels::set_active_isa(kernels::Isa(isa));
          std::vector<float> want;
          for (int64_t sized_for : {n_pos, int64_t(300), int64_t(1)}) {
            AttentionScratch scratch;
            scratch.init(shape, cs.n_tokens, sized_for, pool.n_threads());
            std::vector<float> got(q.size(), std::nanf(""));
            attention(shape, q.data(), cs.n_tokens, cs.pos0, all.kv, all.vv, got.data(), pool, scratch);
            if (want.empty()) want = got;
            ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
                << L.name << " pos0=" << cs.pos0 << " n_tokens=" << cs.n_tokens << " window=" << cs.window
                << (sink ? " sinks" : "") << " scratch for " << sized_for << " positions on "
                << kernels::isa_name(kernels::Isa(isa));
          }
        }
        kernels::set_active_isa(kernels::detected_isa());
      }
  }
}

// The scratch stops growing with the context: the same bytes at 32k and 128k positions, and they
// are what init allocates.
TEST(AttentionScratch, IsBoundedAtAnyContext) {
  const AttentionShape llama3_8b{32, 8, 128, 128};
  const size_t at_32k = AttentionScratch::bytes_for(llama3_8b, 512, 32768, 4);
  EXPECT_EQ(AttentionScratch::bytes_for(llama3_8b, 512, 131072, 4), at_32k);
  EXPECT_LT(at_32k, size_t(16) << 20);
  AttentionScratch scratch;
  scratch.init(llama3_8b, 512, 131072, 4);
  EXPECT_EQ(scratch.bytes(), at_32k);
}

// reserve allocates only for arguments that need more than the buffers hold, then the larger of
// each (a backend without a session's scratch calls it on every attention).
TEST(AttentionScratch, ReserveGrowsOnlyWhenNeeded) {
  const AttentionShape small{9, 3, 64, 64}, wide{4, 1, 256, 256};
  AttentionScratch scratch;
  scratch.reserve(small, 8, 300, 2);
  EXPECT_EQ(scratch.bytes(), AttentionScratch::bytes_for(small, 8, 300, 2));
  const float* before = scratch.tiles[0].scores.data();
  scratch.reserve(small, 1, 100, 2);
  scratch.reserve(small, 8, 300, 1);
  EXPECT_EQ(scratch.tiles[0].scores.data(), before);
  EXPECT_EQ(scratch.bytes(), AttentionScratch::bytes_for(small, 8, 300, 2));
  scratch.reserve(wide, 4, 200, 2);
  const size_t both = scratch.bytes();
  EXPECT_GE(both, AttentionScratch::bytes_for(wide, 4, 200, 2));
  EXPECT_GE(both, AttentionScratch::bytes_for(small, 8, 300, 2));
  const float* grown = scratch.tiles[0].q.data();
  scratch.reserve(small, 8, 300, 2);  // alternating shapes reallocate nothing
  scratch.reserve(wide, 4, 200, 2);
  EXPECT_EQ(scratch.tiles[0].q.data(), grown);
  EXPECT_EQ(scratch.bytes(), both);
}

TEST(KvType, ParsesTheSupportedTypesOnly) {
  EXPECT_EQ(parse_kv_type("f16"), DType::F16);
  EXPECT_EQ(parse_kv_type("q8_0"), DType::Q8_0);
  EXPECT_EQ(parse_kv_type("Q4_0"), DType::Q4_0);
  EXPECT_THROW(parse_kv_type("q4_k"), Error);
  EXPECT_THROW(parse_kv_type("nonsense"), Error);
  EXPECT_EQ(kv_row_bytes(DType::Q8_0, 3, 64), size_t(3 * 2 * 34));
  EXPECT_EQ(kv_row_bytes(DType::Q4_0, 1, 256), size_t(8 * 18));
  EXPECT_THROW(kv_row_bytes(DType::Q4_0, 1, 48), Error);
}

}  // namespace
}  // namespace strata::ops
