#pragma once
// Writes GGUF v3 files. Tensor data is produced by a callback at write time, so multi-GB files
// stream to disk at disk speed without holding the weights in memory.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "gguf/gguf.h"

namespace strata::gguf {

class Writer {
 public:
  // Fills dst (exactly n_bytes, the tensor's size) with the tensor's data.
  using Fill = std::function<void(uint8_t* dst, uint64_t n_bytes)>;

  explicit Writer(uint64_t alignment = 32) : alignment_(alignment) {}
  void set(const std::string& key, Value value);  // replaces an existing key, keeps order
  void add_tensor(const std::string& name, DType type, std::vector<int64_t> shape, Fill fill);
  void add_tensor(const std::string& name, DType type, std::vector<int64_t> shape, std::vector<uint8_t> bytes);
  // Writes the file (to path + ".tmp", then renames). Throws strata::Error on I/O failure.
  void write(const std::string& path) const;
  // Serializes everything into memory (tests, fuzz seeds).
  std::vector<uint8_t> to_bytes() const;

 private:
  struct PendingTensor {
    std::string name;
    DType type;
    std::vector<int64_t> shape;
    uint64_t n_bytes;
    Fill fill;
  };
  uint64_t alignment_;
  std::vector<std::pair<std::string, Value>> metadata_;
  std::vector<PendingTensor> tensors_;
};

}  // namespace strata::gguf
