// Writer → reader round trips of every value type, tensor layout, v2 files and typed getters.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <sstream>

#include "gguf/gguf.h"
#include "gguf/inspect.h"
#include "gguf/writer.h"
#include "gguf_test_util.h"

namespace strata::gguf {
namespace {

using test::Bytes;
using test::parse_bytes;

Value make(ValueType t, uint64_t v) { return {t, v}; }
Value make(ValueType t, int64_t v) { return {t, v}; }
Value f64(double v) { return {ValueType::FLOAT64, v}; }

void expect_same(const Value& a, const Value& b, const std::string& where) {
  ASSERT_EQ(a.type, b.type) << where;
  switch (a.type) {
    case ValueType::FLOAT32:
    case ValueType::FLOAT64:
      if (std::isnan(a.as_float())) {
        EXPECT_TRUE(std::isnan(b.as_float())) << where;
      } else {
        EXPECT_EQ(a.as_float(), b.as_float()) << where;
      }
      break;
    case ValueType::BOOL: EXPECT_EQ(a.as_bool(), b.as_bool()) << where; break;
    case ValueType::STRING: EXPECT_EQ(a.as_string(), b.as_string()) << where; break;
    case ValueType::ARRAY: {
      const Array& x = a.as_array();
      const Array& y = b.as_array();
      ASSERT_EQ(x.elem_type, y.elem_type) << where;
      ASSERT_EQ(x.items.size(), y.items.size()) << where;
      for (size_t i = 0; i < x.items.size(); ++i)
        expect_same(x.items[i], y.items[i], where + "[" + std::to_string(i) + "]");
      break;
    }
    case ValueType::UINT8:
    case ValueType::UINT16:
    case ValueType::UINT32:
    case ValueType::UINT64: EXPECT_EQ(a.as_uint(), b.as_uint()) << where; break;
    default: EXPECT_EQ(a.as_int(), b.as_int()) << where; break;
  }
}

std::vector<std::pair<std::string, Value>> every_value_type() {
  std::vector<std::pair<std::string, Value>> kv;
  kv.emplace_back("t.u8", make(ValueType::UINT8, uint64_t(255)));
  kv.emplace_back("t.i8", make(ValueType::INT8, int64_t(-128)));
  kv.emplace_back("t.u16", make(ValueType::UINT16, uint64_t(65535)));
  kv.emplace_back("t.i16", make(ValueType::INT16, int64_t(-32768)));
  kv.emplace_back("t.u32", Value::u32(4000000000u));
  kv.emplace_back("t.i32", Value::i32(-2000000000));
  kv.emplace_back("t.f32", Value::f32(1.5e-3f));
  kv.emplace_back("t.bool.true", Value::boolean(true));
  kv.emplace_back("t.bool.false", Value::boolean(false));
  kv.emplace_back("t.string", Value::str("héllo \"world\"\n"));
  kv.emplace_back("t.string.empty", Value::str(""));
  kv.emplace_back("t.u64", Value::u64(std::numeric_limits<uint64_t>::max()));
  kv.emplace_back("t.i64", make(ValueType::INT64, std::numeric_limits<int64_t>::min()));
  kv.emplace_back("t.f64", f64(-2.718281828459045));
  kv.emplace_back("t.f32.nan", Value::f32(std::numeric_limits<float>::quiet_NaN()));
  kv.emplace_back("a.u8", Value::array(ValueType::UINT8,
                                       {make(ValueType::UINT8, uint64_t(1)), make(ValueType::UINT8, uint64_t(2))}));
  kv.emplace_back("a.i8", Value::array(ValueType::INT8, {make(ValueType::INT8, int64_t(-1))}));
  kv.emplace_back("a.u16", Value::array(ValueType::UINT16, {make(ValueType::UINT16, uint64_t(7))}));
  kv.emplace_back("a.i16", Value::array(ValueType::INT16, {make(ValueType::INT16, int64_t(-7))}));
  kv.emplace_back("a.u32", Value::array(ValueType::UINT32, {Value::u32(1), Value::u32(2), Value::u32(3)}));
  kv.emplace_back("a.i32", Value::i32s({-1, 0, 1, 2147483647}));
  kv.emplace_back("a.f32", Value::f32s({0.5f, -0.25f, 1e30f}));
  kv.emplace_back("a.bool", Value::array(ValueType::BOOL, {Value::boolean(true), Value::boolean(false)}));
  kv.emplace_back("a.string", Value::strings({"<s>", "</s>", "", "▁the"}));
  kv.emplace_back("a.u64", Value::array(ValueType::UINT64, {Value::u64(1ull << 40)}));
  kv.emplace_back("a.i64", Value::array(ValueType::INT64, {make(ValueType::INT64, int64_t(-(1ll << 40)))}));
  kv.emplace_back("a.f64", Value::array(ValueType::FLOAT64, {f64(1e300), f64(-0.0)}));
  kv.emplace_back("a.empty", Value::array(ValueType::UINT32, {}));
  kv.emplace_back("a.nested", Value::array(ValueType::ARRAY, {Value::i32s({1, 2}), Value::strings({"x"}),
                                                              Value::array(ValueType::FLOAT32, {})}));
  kv.emplace_back("a.nested3",
                  Value::array(ValueType::ARRAY, {Value::array(ValueType::ARRAY, {Value::i32s({5}), Value::i32s({})}),
                                                  Value::array(ValueType::ARRAY, {})}));
  return kv;
}

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = uint8_t(seed + i * 7);
  return v;
}

TEST(GgufRoundTrip, EveryValueType) {
  Writer w;
  auto kv = every_value_type();
  for (const auto& [k, v] : kv) w.set(k, v);
  std::vector<uint8_t> bytes = w.to_bytes();
  auto f = parse_bytes(bytes);
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 32u);
  ASSERT_EQ(f->metadata().size(), kv.size());
  for (size_t i = 0; i < kv.size(); ++i) {
    EXPECT_EQ(f->metadata()[i].first, kv[i].first) << "insertion order";
    expect_same(kv[i].second, f->metadata()[i].second, kv[i].first);
  }
  EXPECT_TRUE(f->tensors().empty());
}

TEST(GgufRoundTrip, SetReplacesAndKeepsOrder) {
  Writer w;
  w.set("a", Value::u32(1));
  w.set("b", Value::u32(2));
  w.set("a", Value::str("again"));
  auto bytes = w.to_bytes();
  auto f = parse_bytes(bytes);
  ASSERT_EQ(f->metadata().size(), 2u);
  EXPECT_EQ(f->metadata()[0].first, "a");
  EXPECT_EQ(f->get_string("a"), "again");
}

TEST(GgufRoundTrip, TensorsAlignedWithData) {
  for (uint64_t alignment : {32u, 64u, 4096u}) {
    Writer w(alignment);
    w.set("general.architecture", Value::str("llama"));
    auto a = pattern(4 * 3 * 4, 1);
    auto b = pattern(2 * 18 * 2, 2);  // Q4_0 [64, 2]: 2 blocks per row
    auto c = pattern(8 * 2, 3);
    auto d = pattern(34 * 2, 4);  // Q8_0 [32, 1, 1, 2]
    w.add_tensor("a", DType::F32, {4, 3}, a);
    w.add_tensor("b", DType::Q4_0, {64, 2}, b);
    w.add_tensor("c", DType::F16, {8}, c);
    w.add_tensor("d", DType::Q8_0, {32, 1, 1, 2}, [&](uint8_t* dst, uint64_t n) {
      ASSERT_EQ(n, d.size());
      std::memcpy(dst, d.data(), n);
    });
    auto bytes = w.to_bytes();
    auto f = parse_bytes(bytes);
    EXPECT_EQ(f->alignment(), alignment);
    EXPECT_EQ(f->data_offset() % alignment, 0u);
    if (alignment != 32) {
      EXPECT_EQ(f->get_int("general.alignment"), int64_t(alignment));
    }
    ASSERT_EQ(f->tensors().size(), 4u);
    const std::vector<uint8_t>* want[] = {&a, &b, &c, &d};
    for (size_t i = 0; i < 4; ++i) {
      const TensorInfo& t = f->tensors()[i];
      EXPECT_EQ(t.offset % alignment, 0u) << t.name;
      EXPECT_EQ(t.file_offset, f->data_offset() + t.offset);
      ASSERT_EQ(t.n_bytes, want[i]->size()) << t.name;
      EXPECT_EQ(0, std::memcmp(f->tensor_data(t), want[i]->data(), t.n_bytes)) << t.name;
    }
    const TensorInfo* b_info = f->find_tensor("b");
    ASSERT_NE(b_info, nullptr);
    EXPECT_EQ(b_info->type, DType::Q4_0);
    EXPECT_EQ(b_info->shape, (std::vector<int64_t>{64, 2}));
    EXPECT_EQ(b_info->n_elements, 128);
    EXPECT_EQ(b_info->n_rows(), 2);
    EXPECT_EQ(f->find_tensor("d")->shape, (std::vector<int64_t>{32, 1, 1, 2}));
    EXPECT_EQ(f->find_tensor("zz"), nullptr);
  }
}

TEST(GgufRoundTrip, WriteFileThroughChunkBuffer) {
  // Many small tensors cross the 8 MiB chunk boundary, one large tensor grows the buffer.
  std::string path =
      (std::filesystem::temp_directory_path() / ("strata_gguf_" + std::to_string(getpid()) + ".gguf")).string();
  Writer w;
  w.set("general.name", Value::str("chunked"));
  const int n_small = 300;
  for (int i = 0; i < n_small; ++i)
    w.add_tensor("small." + std::to_string(i), DType::F32, {7000 + i},
                 [i](uint8_t* dst, uint64_t n) { std::memset(dst, i & 0xff, n); });
  const int64_t big_elems = 3 << 20;  // 12 MiB
  w.add_tensor("big", DType::F32, {big_elems}, [](uint8_t* dst, uint64_t n) {
    for (uint64_t i = 0; i < n; ++i) dst[i] = uint8_t(i * 31 + 5);
  });
  w.add_tensor("tail", DType::F32, {3}, [](uint8_t* dst, uint64_t n) { std::memset(dst, 0xab, n); });
  w.write(path);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  {
    auto f = File::open(path);
    ASSERT_EQ(f->tensors().size(), size_t(n_small + 2));
    for (int i = 0; i < n_small; ++i) {
      const TensorInfo& t = f->tensors()[i];
      ASSERT_EQ(t.n_bytes, uint64_t(7000 + i) * 4);
      const uint8_t* p = f->tensor_data(t);
      ASSERT_EQ(p[0], uint8_t(i));
      ASSERT_EQ(p[t.n_bytes - 1], uint8_t(i));
    }
    const TensorInfo* big = f->find_tensor("big");
    ASSERT_NE(big, nullptr);
    const uint8_t* p = f->tensor_data(*big);
    for (uint64_t i = 0; i < big->n_bytes; i += 4093) ASSERT_EQ(p[i], uint8_t(i * 31 + 5)) << i;
    EXPECT_EQ(f->tensor_data(*f->find_tensor("tail"))[11], 0xab);
    // The file matches the in-memory serialization byte for byte.
    auto mem = w.to_bytes();
    ASSERT_EQ(mem.size(), f->file_size());
    EXPECT_EQ(0, std::memcmp(mem.data(), f->base(), mem.size()));
  }
  std::filesystem::remove(path);
}

TEST(GgufRoundTrip, WriteFailureLeavesNoTmp) {
  std::string path =
      (std::filesystem::temp_directory_path() / ("strata_gguf_fail_" + std::to_string(getpid()) + ".gguf")).string();
  Writer w;
  w.add_tensor("x", DType::F32, {4}, [](uint8_t*, uint64_t) { throw Error("fill failed"); });
  EXPECT_THROW(w.write(path), Error);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_THROW(Writer().write("/nonexistent-dir/x.gguf"), Error);
}

TEST(GgufRoundTrip, WriterRefusesBadInput) {
  Writer w;
  EXPECT_THROW(w.add_tensor("q", DType::Q4_0, {16}, std::vector<uint8_t>(9)), Error);  // 16 not a multiple of 32
  EXPECT_THROW(w.add_tensor("q", DType::F32, {}, std::vector<uint8_t>()), Error);
  EXPECT_THROW(w.add_tensor("q", DType::F32, {1, 1, 1, 1, 1}, std::vector<uint8_t>(4)), Error);
  EXPECT_THROW(w.add_tensor("q", DType::F32, {0}, std::vector<uint8_t>()), Error);
  EXPECT_THROW(w.add_tensor("q", DType::F32, {4}, std::vector<uint8_t>(15)), Error);  // wrong byte count
  EXPECT_THROW(w.add_tensor("q", DType(99), {4}, std::vector<uint8_t>(16)), Error);
  w.add_tensor("q", DType::F32, {4}, std::vector<uint8_t>(16));
  EXPECT_THROW(w.add_tensor("q", DType::F32, {4}, std::vector<uint8_t>(16)), Error);  // duplicate
  Writer bad_value;
  bad_value.set("x", make(ValueType::UINT8, uint64_t(300)));
  EXPECT_THROW(bad_value.to_bytes(), Error);
  Writer mixed;
  mixed.set("x", Value::array(ValueType::UINT32, {Value::u32(1), Value::str("no")}));
  EXPECT_THROW(mixed.to_bytes(), Error);
  EXPECT_THROW(Writer(3).to_bytes(), Error);
  Writer disagree(64);
  disagree.set("general.alignment", Value::u32(32));
  EXPECT_THROW(disagree.to_bytes(), Error);
}

TEST(GgufRoundTrip, UncomputableKnownTypeAccepted) {
  // IQ2_XXS (16) and MXFP4 (39) have geometry but no kernels: the reader still accepts them.
  Bytes b;
  b.header(3, 2, 0).tensor("iq", {256, 2}, 16, 0).tensor("mx", {32}, 39, 160).pad_to(32).zeros(160 + 17);
  auto f = parse_bytes(b.b);
  EXPECT_EQ(f->tensors()[0].type, DType::IQ2_XXS);
  EXPECT_EQ(f->tensors()[0].n_bytes, 132u);
  EXPECT_EQ(f->tensors()[1].n_bytes, 17u);
}

TEST(GgufRoundTrip, Version2ByHand) {
  Bytes b;
  b.header(2, 1, 3)
      .kv_str("general.architecture", "llama")
      .kv_u32("llama.block_count", 2)
      .str("tokenizer.ggml.scores")
      .u32(uint32_t(ValueType::ARRAY))
      .u32(uint32_t(ValueType::FLOAT32))
      .u64(2)
      .put(0.5f)
      .put(-1.0f)
      .tensor("token_embd.weight", {4, 2}, 0, 0)
      .pad_to(32);
  for (int i = 0; i < 8; ++i) b.put(float(i));
  auto f = parse_bytes(b.b);
  EXPECT_EQ(f->version(), 2u);
  EXPECT_EQ(f->architecture(), "llama");
  EXPECT_EQ(f->get_int("llama.block_count"), 2);
  EXPECT_EQ(f->get("tokenizer.ggml.scores").as_array().items[1].as_float(), -1.0);
  const TensorInfo& t = f->tensors().at(0);
  float x;
  std::memcpy(&x, f->tensor_data(t) + 7 * 4, 4);
  EXPECT_EQ(x, 7.0f);
}

TEST(GgufRoundTrip, TypedGetters) {
  Writer w;
  for (const auto& [k, v] : every_value_type()) w.set(k, v);
  auto bytes = w.to_bytes();
  auto f = parse_bytes(bytes, "getters.gguf");
  EXPECT_EQ(f->get_int("t.u8"), 255);
  EXPECT_EQ(f->get_int("t.i8"), -128);
  EXPECT_EQ(f->get_int("t.u32"), 4000000000);
  EXPECT_EQ(f->get_int("t.i64"), std::numeric_limits<int64_t>::min());
  EXPECT_THROW(f->get_int("t.u64"), Error);  // does not fit in int64
  EXPECT_EQ(f->get("t.u64").as_uint(), std::numeric_limits<uint64_t>::max());
  EXPECT_FLOAT_EQ(float(f->get_float("t.f32")), 1.5e-3f);
  EXPECT_EQ(f->get_float("t.i32"), -2000000000.0);
  EXPECT_EQ(f->get_float("t.f64"), -2.718281828459045);
  EXPECT_EQ(f->get_string("t.string"), "héllo \"world\"\n");
  EXPECT_TRUE(f->get_bool("t.bool.true", false));
  EXPECT_FALSE(f->get_bool("t.bool.false", true));
  EXPECT_TRUE(f->get_bool("missing", true));
  EXPECT_EQ(f->get_int("missing", 42), 42);
  EXPECT_EQ(f->get_float("missing", 0.5), 0.5);
  EXPECT_EQ(f->get_string("missing", "dflt"), "dflt");
  EXPECT_EQ(f->find("missing"), nullptr);
  try {
    f->get_int("t.string");
    FAIL();
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("getters.gguf"), std::string::npos) << m;
    EXPECT_NE(m.find("'t.string'"), std::string::npos) << m;
    EXPECT_NE(m.find("expected an integer, found string"), std::string::npos) << m;
  }
  try {
    f->get_string("general.missing");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'general.missing' is missing"), std::string::npos) << e.what();
  }
  EXPECT_THROW(f->get_int("t.f32"), Error);
  EXPECT_THROW(f->get_int("t.string", 1), Error);  // present with the wrong type: not the fallback
  EXPECT_THROW(f->get_float("t.bool.true"), Error);
  EXPECT_THROW(f->get_bool("t.u8", false), Error);
}

TEST(GgufRoundTrip, DisplayAndInspect) {
  EXPECT_EQ(Value::u32(7).to_display(), "7");
  EXPECT_EQ(Value::f32(0.1f).to_display(), "0.1");
  EXPECT_EQ(Value::boolean(true).to_display(), "true");
  EXPECT_EQ(Value::str("a\"b\n").to_display(), "\"a\\\"b\\n\"");
  std::vector<int32_t> many(100);
  for (int i = 0; i < 100; ++i) many[i] = i;
  EXPECT_EQ(Value::i32s(many).to_display(3), "array<i32>[100] [0, 1, 2, ...]");
  EXPECT_EQ(Value::array(ValueType::ARRAY, {Value::i32s({1})}).to_display(), "array<array>[1] [array<i32>[1] [1]]");
  std::string long_str(1000, 'x');
  EXPECT_LT(Value::str(long_str).to_display().size(), 300u);
  EXPECT_EQ(Value::str(long_str).to_display(std::numeric_limits<size_t>::max()).size(), 1002u);

  Writer w;
  w.set("general.architecture", Value::str("llama"));
  w.set("tokenizer.ggml.tokens", Value::strings(std::vector<std::string>(1000, "tok")));
  w.add_tensor("blk.0.attn_q.weight", DType::Q8_0, {64, 4}, std::vector<uint8_t>(34 * 8));
  w.add_tensor("output_norm.weight", DType::F32, {64}, std::vector<uint8_t>(256));
  auto bytes = w.to_bytes();
  auto f = parse_bytes(bytes, "inspect.gguf");
  std::ostringstream short_out, all_out;
  print_inspect(*f, short_out, false);
  print_inspect(*f, all_out, true);
  std::string s = short_out.str();
  EXPECT_NE(s.find("version:    3"), std::string::npos) << s;
  EXPECT_NE(s.find("array<string>[1000]"), std::string::npos) << s;
  EXPECT_NE(s.find("blk.0.attn_q.weight"), std::string::npos) << s;
  EXPECT_NE(s.find("[64, 4]"), std::string::npos) << s;
  EXPECT_NE(s.find("Q8_0"), std::string::npos) << s;
  EXPECT_NE(s.find("totals per type"), std::string::npos) << s;
  EXPECT_LT(s.size(), all_out.str().size());
}

}  // namespace
}  // namespace strata::gguf
