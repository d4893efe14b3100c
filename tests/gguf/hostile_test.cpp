// Hostile files: every malformed field throws strata::Error naming the problem, never crashes.
#include "gguf/writer.h"
#include "gguf_test_util.h"

namespace strata::gguf {
namespace {

using test::Bytes;
using test::expect_error;

constexpr uint32_t kArray = uint32_t(ValueType::ARRAY);

TEST(GgufHostile, BadMagic) {
  Bytes b;
  b.raw("GGML").u32(3).u64(0).u64(0);
  expect_error(b.b, "bad magic 47 47 4d 4c");
  expect_error({}, "too short for the GGUF magic");
  expect_error({'G', 'G'}, "too short");
}

TEST(GgufHostile, UnsupportedVersion) {
  expect_error(Bytes().header(1, 0, 0).b, "version 1 is not supported");
  expect_error(Bytes().header(4, 0, 0).b, "unsupported GGUF version 4");
  expect_error(Bytes().header(0x03000000, 0, 0).b, "big-endian");
  expect_error(Bytes().header(0, 0, 0).b, "hostile.gguf: header: unsupported GGUF version 0");
  EXPECT_NO_THROW(test::parse_bytes(Bytes().header(3, 0, 0).b));  // empty but valid
}

TEST(GgufHostile, AbsurdCounts) {
  expect_error(Bytes().header(3, 0, uint64_t(1) << 62).b, "metadata count 4611686018427387904 is impossible");
  expect_error(Bytes().header(3, ~uint64_t(0), 0).b, "tensor count 18446744073709551615 is impossible");
  // A plausible count that the remaining bytes still cannot hold.
  expect_error(Bytes().header(3, 2, 0).zeros(40).b, "tensor count 2 is impossible");
}

TEST(GgufHostile, StringLengthPastEnd) {
  Bytes b;
  b.header(3, 0, 1).u64(1000000).raw("general.name");
  expect_error(b.b, "key length 1000000");
  expect_error(b.b, "runs past the end of the file");
  expect_error(b.b, "metadata key 0");
  Bytes v;
  v.header(3, 0, 1).str("general.name").u32(uint32_t(ValueType::STRING)).u64(~uint64_t(0)).raw("abc");
  expect_error(v.b, "metadata key 0 'general.name': string value length 18446744073709551615");
}

TEST(GgufHostile, ArrayCountAbsurd) {
  Bytes b;
  b.header(3, 0, 1)
      .str("tokenizer.ggml.tokens")
      .u32(kArray)
      .u32(uint32_t(ValueType::STRING))
      .u64(uint64_t(1) << 60)
      .zeros(64);
  expect_error(b.b, "metadata key 0 'tokenizer.ggml.tokens': array of string has count 1152921504606846976");
  Bytes u;
  u.header(3, 0, 1).str("x").u32(kArray).u32(uint32_t(ValueType::UINT32)).u64(5).u32(1).u32(2);
  expect_error(u.b, "hold at most 2");
}

TEST(GgufHostile, NestedArraysTooDeep) {
  Bytes b;
  b.header(3, 0, 1).str("deep").u32(kArray);
  for (int i = 0; i < 10000; ++i) b.u32(kArray).u64(1);
  b.u32(uint32_t(ValueType::UINT8)).u64(0);
  expect_error(b.b, "nested deeper than 8 levels");
  // Depth 8 is still fine.
  Bytes ok;
  ok.header(3, 0, 1).str("deep").u32(kArray);
  for (int i = 0; i < 7; ++i) ok.u32(kArray).u64(1);
  ok.u32(uint32_t(ValueType::UINT8)).u64(1).u8(9);
  auto f = test::parse_bytes(ok.b);
  const Value* v = &f->get("deep");
  for (int i = 0; i < 7; ++i) v = &v->as_array().items.at(0);
  EXPECT_EQ(v->as_array().items.at(0).as_int(), 9);
}

TEST(GgufHostile, BadValueTypes) {
  expect_error(Bytes().header(3, 0, 1).str("k").u32(13).u32(0).b, "unknown value type 13");
  expect_error(Bytes().header(3, 0, 1).str("k").u32(kArray).u32(77).u64(0).b, "unknown array element type 77");
  expect_error(Bytes().header(3, 0, 1).str("k").u32(uint32_t(ValueType::BOOL)).u8(2).b, "expected 0 or 1");
  expect_error(Bytes().header(3, 0, 1).str("").u32(uint32_t(ValueType::UINT8)).u8(2).b, "empty key");
}

TEST(GgufHostile, DuplicateMetadataKey) {
  Bytes b;
  b.header(3, 0, 2).kv_u32("general.alignment", 32).kv_u32("general.alignment", 64);
  expect_error(b.b, "metadata key 1 'general.alignment': duplicate metadata key");
}

TEST(GgufHostile, BadAlignment) {
  expect_error(Bytes().header(3, 0, 1).kv_u32("general.alignment", 3).b, "alignment 3 is not a nonzero power of two");
  expect_error(Bytes().header(3, 0, 1).kv_u32("general.alignment", 0).b, "alignment 0 is not a nonzero power of two");
  expect_error(Bytes().header(3, 0, 1).kv_str("general.alignment", "32").b,
               "alignment must be an integer, found string");
  Bytes neg;
  neg.header(3, 0, 1).str("general.alignment").u32(uint32_t(ValueType::INT32)).put(int32_t(-32));
  expect_error(neg.b, "bad alignment");
  // A huge power of two passes the check, but then no tensor fits.
  Bytes huge;
  huge.header(3, 1, 1)
      .str("general.alignment")
      .u32(uint32_t(ValueType::UINT64))
      .u64(uint64_t(1) << 63)
      .tensor("w", {4}, 0, 0)
      .zeros(64);
  expect_error(huge.b, "runs past the end of the file");
}

Bytes one_tensor(std::vector<uint64_t> dims, uint32_t type, uint64_t offset) {
  Bytes b;
  b.header(3, 1, 0).tensor("w", std::move(dims), type, offset).pad_to(32).zeros(64);
  return b;
}

TEST(GgufHostile, BadDims) {
  expect_error(one_tensor({}, 0, 0).b, "tensor info 0 'w': n_dims is 0, expected 1..4");
  expect_error(one_tensor({1, 1, 1, 1, 1}, 0, 0).b, "n_dims is 5");
  Bytes many;
  many.header(3, 1, 0).str("w").u32(0xffffffff).zeros(64);
  expect_error(many.b, "n_dims is 4294967295");
  expect_error(one_tensor({4, 0}, 0, 0).b, "dimension 1 is 0");
  expect_error(one_tensor({uint64_t(1) << 32, uint64_t(1) << 32}, 0, 0).b, "overflow");
  expect_error(one_tensor({~uint64_t(0)}, 0, 0).b, "overflow");
  // Element count fits in int64, bytes do not.
  expect_error(one_tensor({uint64_t(1) << 31, uint64_t(1) << 31}, 0, 0).b, "overflows 64 bits");
  expect_error(one_tensor({16}, uint32_t(DType::Q4_0), 0).b, "ne[0] = 16 is not a multiple of the Q4_0 block size 32");
}

TEST(GgufHostile, UnknownTypeId) {
  expect_error(one_tensor({4}, 99, 0).b, "tensor info 0 'w': unknown tensor type id 99");
  expect_error(one_tensor({4}, 4, 0).b, "unknown tensor type id 4");  // removed Q4_2
}

TEST(GgufHostile, Offsets) {
  expect_error(one_tensor({4}, 0, 16).b, "data offset 16 is not a multiple of the alignment 32");
  expect_error(one_tensor({4}, 0, 64).b, "runs past the end of the file");
  expect_error(one_tensor({64}, 0, 0).b, "runs past the end of the file");
  expect_error(one_tensor({4}, 0, ~uint64_t(31)).b, "runs past the end of the file");  // offset + data_offset overflows
}

TEST(GgufHostile, OverlappingTensors) {
  Bytes b;
  b.header(3, 3, 0).tensor("a", {16}, 0, 0).tensor("b", {4}, 0, 64).tensor("c", {16}, 0, 32).pad_to(32).zeros(96);
  expect_error(b.b, "data: tensors 'a' [0, 64) and 'c' [32, 96) overlap");
}

TEST(GgufHostile, DuplicateTensorName) {
  Bytes b;
  b.header(3, 2, 0).tensor("w", {4}, 0, 0).tensor("w", {4}, 0, 32).pad_to(32).zeros(64);
  expect_error(b.b, "tensor info 1 'w': duplicate tensor name 'w'");
}

TEST(GgufHostile, ControlCharactersInNamesAreNotEchoed) {
  Bytes b;
  b.header(3, 1, 0).tensor(std::string("a\nb\x1b[31m", 8), {4}, 99, 0).pad_to(32).zeros(64);
  expect_error(b.b, "'a?b?[31m'");
}

// A small valid file whose last tensor ends exactly at the end of the file: every proper
// prefix is invalid.
std::vector<uint8_t> small_valid_file() {
  Writer w;
  w.set("general.architecture", Value::str("llama"));
  w.set("llama.block_count", Value::u32(1));
  w.set("f", Value::f32(0.5f));
  w.set("tokens", Value::strings({"a", "bc", ""}));
  w.set("nested", Value::array(ValueType::ARRAY, {Value::i32s({1, 2}), Value::f32s({})}));
  w.set("flag", Value::boolean(true));
  w.add_tensor("t0", DType::F32, {8}, std::vector<uint8_t>(32, 1));
  w.add_tensor("t1", DType::Q8_0, {32, 1}, std::vector<uint8_t>(34, 2));
  w.add_tensor("t2", DType::F16, {16}, std::vector<uint8_t>(32, 3));
  return w.to_bytes();
}

TEST(GgufHostile, TruncationAtEveryPrefix) {
  std::vector<uint8_t> full = small_valid_file();
  auto f = test::parse_bytes(full);
  ASSERT_EQ(f->tensors().back().file_offset + f->tensors().back().n_bytes, full.size());
  const char* causes[] = {"truncated", "past the end", "too short", "is impossible", "hold at most"};
  for (size_t n = 0; n < full.size(); ++n) {
    // A fresh copy of exactly n bytes, so reading past it would be seen by sanitizers.
    std::vector<uint8_t> prefix(full.begin(), full.begin() + n);
    try {
      test::parse_bytes(prefix, "prefix.gguf");
      ADD_FAILURE() << "prefix of " << n << " bytes parsed";
    } catch (const Error& e) {
      std::string m = e.what();
      bool named = false;
      for (const char* c : causes) named |= m.find(c) != std::string::npos;
      EXPECT_TRUE(named) << "prefix " << n << ": " << m;
    }
  }
}

TEST(GgufHostile, EveryByteFlippedNeverCrashes) {
  // Not an assertion on messages: each corrupted file parses or throws strata::Error.
  std::vector<uint8_t> full = small_valid_file();
  for (size_t i = 0; i < full.size(); ++i) {
    for (uint8_t x : {uint8_t(0xff), uint8_t(0x80), uint8_t(0x01)}) {
      std::vector<uint8_t> b = full;
      b[i] ^= x;
      try {
        test::parse_bytes(b);
      } catch (const Error&) {
      }
    }
  }
}

TEST(GgufHostile, OpenErrors) {
  try {
    File::open("/nonexistent/model.gguf");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/model.gguf: cannot open"), std::string::npos) << e.what();
  }
  EXPECT_THROW(File::open("/tmp"), Error);
}

}  // namespace
}  // namespace strata::gguf
