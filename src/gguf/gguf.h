#pragma once
// GGUF v2/v3 files: metadata, tensor table and tensor data.
// Every count, size and offset is validated against the file before use; a bad file throws
// strata::Error naming the file, the section and the field.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "tensor/type.h"

namespace strata::gguf {

enum class ValueType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6,
  BOOL = 7, STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* value_type_name(ValueType t);

struct Value;
struct Array {
  ValueType elem_type = ValueType::UINT8;
  std::vector<Value> items;
};

// One metadata value. Integers keep their GGUF type in `type`; they are stored widened.
struct Value {
  ValueType type = ValueType::UINT8;
  std::variant<uint64_t, int64_t, double, bool, std::string, Array> data;

  static Value u32(uint32_t v) { return {ValueType::UINT32, uint64_t(v)}; }
  static Value u64(uint64_t v) { return {ValueType::UINT64, v}; }
  static Value i32(int32_t v) { return {ValueType::INT32, int64_t(v)}; }
  static Value f32(float v) { return {ValueType::FLOAT32, double(v)}; }
  static Value boolean(bool v) { return {ValueType::BOOL, v}; }
  static Value str(std::string v) { return {ValueType::STRING, std::move(v)}; }
  static Value array(ValueType elem, std::vector<Value> items) { return {ValueType::ARRAY, Array{elem, std::move(items)}}; }
  static Value strings(const std::vector<std::string>& v);
  static Value f32s(const std::vector<float>& v);
  static Value i32s(const std::vector<int32_t>& v);

  bool is_integer() const;
  bool is_number() const;  // integer or float
  // Conversions throw strata::Error when the value has another type.
  int64_t as_int() const;
  uint64_t as_uint() const;
  double as_float() const;  // integers convert too
  bool as_bool() const;
  const std::string& as_string() const;
  const Array& as_array() const;
  std::string to_display(size_t max_items = 8) const;  // for `strata inspect`
};

struct TensorInfo {
  std::string name;
  std::vector<int64_t> shape;  // ne[0] first: ne[0] is the row length (contiguous dimension)
  DType type = DType::F32;
  uint64_t offset = 0;         // relative to the start of the data section
  uint64_t file_offset = 0;    // absolute
  uint64_t n_bytes = 0;
  int64_t n_elements = 0;
  int64_t n_rows() const { return n_elements / (shape.empty() ? 1 : shape[0]); }
};

// A parsed GGUF file. Tensor data is memory-mapped read-only (or points into a caller's buffer).
class File {
 public:
  // Opens and validates a file; tensor data is mmapped.
  static std::unique_ptr<File> open(const std::string& path);
  // Parses a whole file held in memory (the buffer must outlive the File). Used by the fuzzer.
  static std::unique_ptr<File> parse(const uint8_t* data, size_t size, const std::string& source_name);
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return size_; }

  // Metadata in file order.
  const std::vector<std::pair<std::string, Value>>& metadata() const { return metadata_; }
  const Value* find(std::string_view key) const;
  // Typed lookups: throw strata::Error naming the key when missing or of the wrong type.
  const Value& get(std::string_view key) const;
  std::string get_string(std::string_view key) const;
  std::string get_string(std::string_view key, const std::string& fallback) const;
  int64_t get_int(std::string_view key) const;
  int64_t get_int(std::string_view key, int64_t fallback) const;
  double get_float(std::string_view key) const;
  double get_float(std::string_view key, double fallback) const;
  bool get_bool(std::string_view key, bool fallback) const;
  std::string architecture() const { return get_string("general.architecture", ""); }

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find_tensor(std::string_view name) const;
  const uint8_t* tensor_data(const TensorInfo& t) const { return base_ + t.file_offset; }
  const uint8_t* base() const { return base_; }
  // How the kernel reads the mapping on a page fault: random (the page alone, for scattered small
  // reads: a model's norms at load, an embedding row per token) or normal (the pages around it
  // too, up to the device's read-ahead). A no-op for a parsed buffer.
  void advise_random_access(bool random) const;

 private:
  File() = default;
  void parse_all();

  std::string path_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  bool mapped_ = false;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, Value>> metadata_;
  std::map<std::string, size_t, std::less<>> metadata_index_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

}  // namespace strata::gguf
