#pragma once
// Hand-built GGUF bytes for tests: hostile files must be written without the writer's checks.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "util/error.h"

namespace strata::gguf::test {

struct Bytes {
  std::vector<uint8_t> b;

  template <class T>
  Bytes& put(T v) {
    uint8_t raw[sizeof(T)];
    std::memcpy(raw, &v, sizeof v);
    b.insert(b.end(), raw, raw + sizeof v);
    return *this;
  }
  Bytes& u8(uint8_t v) { return put(v); }
  Bytes& u32(uint32_t v) { return put(v); }
  Bytes& u64(uint64_t v) { return put(v); }
  Bytes& str(const std::string& s) {
    u64(s.size());
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  Bytes& raw(const std::string& s) {
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  Bytes& header(uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    return raw("GGUF").u32(version).u64(n_tensors).u64(n_kv);
  }
  Bytes& kv_u32(const std::string& key, uint32_t v) { return str(key).u32(uint32_t(ValueType::UINT32)).u32(v); }
  Bytes& kv_str(const std::string& key, const std::string& v) {
    return str(key).u32(uint32_t(ValueType::STRING)).str(v);
  }
  // Tensor info: name, n_dims, dims, type, offset.
  Bytes& tensor(const std::string& name, std::vector<uint64_t> dims, uint32_t type, uint64_t offset) {
    str(name).u32(uint32_t(dims.size()));
    for (uint64_t d : dims) u64(d);
    return u32(type).u64(offset);
  }
  Bytes& pad_to(size_t alignment) {
    b.resize((b.size() + alignment - 1) / alignment * alignment, 0);
    return *this;
  }
  Bytes& zeros(size_t n) {
    b.resize(b.size() + n, 0);
    return *this;
  }
};

inline std::unique_ptr<File> parse_bytes(const std::vector<uint8_t>& b, const std::string& name = "test.gguf") {
  return File::parse(b.data(), b.size(), name);
}

// Parsing must throw strata::Error naming the file and containing `expected`.
inline void expect_error(const std::vector<uint8_t>& b, const std::string& expected) {
  try {
    parse_bytes(b, "hostile.gguf");
    ADD_FAILURE() << "parsed without error, expected an error containing '" << expected << "'";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(expected), std::string::npos) << "message: " << msg << "\nexpected to contain: " << expected;
    EXPECT_NE(msg.find("hostile.gguf"), std::string::npos) << "message does not name the file: " << msg;
  }
}

}  // namespace strata::gguf::test
