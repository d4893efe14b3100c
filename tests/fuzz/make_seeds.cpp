// Writes a handful of small valid GGUF files into a directory: the fuzzer's seed corpus.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "gguf/writer.h"

using namespace strata;
using namespace strata::gguf;

namespace {

void save(const std::string& dir, const std::string& name, std::vector<uint8_t> bytes, uint32_t version = 3) {
  std::memcpy(bytes.data() + 4, &version, 4);  // v2 shares v3's layout
  std::ofstream(dir + "/" + name, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  std::string dir = argv[1];

  save(dir, "empty.gguf", Writer().to_bytes());

  Writer scalars;
  scalars.set("general.architecture", Value::str("llama"));
  scalars.set("u8", Value{ValueType::UINT8, uint64_t(7)});
  scalars.set("i8", Value{ValueType::INT8, int64_t(-7)});
  scalars.set("u16", Value{ValueType::UINT16, uint64_t(700)});
  scalars.set("i16", Value{ValueType::INT16, int64_t(-700)});
  scalars.set("u32", Value::u32(70000));
  scalars.set("i32", Value::i32(-70000));
  scalars.set("f32", Value::f32(0.5f));
  scalars.set("bool", Value::boolean(true));
  scalars.set("u64", Value::u64(1ull << 40));
  scalars.set("i64", Value{ValueType::INT64, int64_t(-1)});
  scalars.set("f64", Value{ValueType::FLOAT64, 0.25});
  save(dir, "scalars.gguf", scalars.to_bytes());

  Writer arrays;
  arrays.set("tokens", Value::strings({"<s>", "a", "bc"}));
  arrays.set("scores", Value::f32s({0.f, -1.f, 2.f}));
  arrays.set("types", Value::i32s({1, 2, 3}));
  arrays.set("nested", Value::array(ValueType::ARRAY, {Value::i32s({1}), Value::strings({"x"}), Value::f32s({})}));
  save(dir, "arrays.gguf", arrays.to_bytes());

  Writer tensors;
  tensors.set("general.architecture", Value::str("llama"));
  tensors.add_tensor("f32", DType::F32, {4, 2}, std::vector<uint8_t>(32, 1));
  tensors.add_tensor("q4_0", DType::Q4_0, {32}, std::vector<uint8_t>(18, 2));
  tensors.add_tensor("q4_k", DType::Q4_K, {256}, std::vector<uint8_t>(144, 3));
  tensors.add_tensor("f16", DType::F16, {2, 1, 1, 2}, std::vector<uint8_t>(8, 4));
  save(dir, "tensors.gguf", tensors.to_bytes());
  save(dir, "tensors_v2.gguf", tensors.to_bytes(), 2);

  Writer aligned(64);
  aligned.set("general.alignment", Value::u32(64));
  aligned.add_tensor("a", DType::Q8_0, {32, 2}, std::vector<uint8_t>(68, 5));
  aligned.add_tensor("b", DType::I8, {3}, std::vector<uint8_t>(3, 6));
  save(dir, "aligned64.gguf", aligned.to_bytes());
  return 0;
}
