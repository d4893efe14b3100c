// GGUF v3 writer: header and metadata built in memory, tensor data streamed through one reusable
// buffer (8 MiB, grown to the largest tensor when one is bigger: Fill produces a whole tensor).
#include "gguf/writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

#include "util/error.h"

namespace strata::gguf {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF"
constexpr uint32_t kVersion = 3;
constexpr uint64_t kDefaultAlignment = 32;
constexpr size_t kChunkBytes = size_t(8) << 20;

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

class Bytes {
 public:
  explicit Bytes(std::vector<uint8_t>& out) : out_(out) {}
  template <class T>
  void put(T v) {
    uint8_t b[sizeof(T)];
    std::memcpy(b, &v, sizeof v);
    out_.insert(out_.end(), b, b + sizeof v);
  }
  void put_string(const std::string& s) {
    put<uint64_t>(s.size());
    out_.insert(out_.end(), s.begin(), s.end());
  }

  // A value without its type tag (the tag precedes top-level values only, array items have none).
  void put_value(const Value& v, const std::string& key) {
    auto unsigned_in = [&](uint64_t max) {
      uint64_t u = v.as_uint();
      if (u > max)
        throw Error("gguf writer: metadata key '" + key + "': " + std::to_string(u) + " does not fit in " +
                    value_type_name(v.type));
      return u;
    };
    auto signed_in = [&](int64_t min, int64_t max) {
      int64_t i = v.as_int();
      if (i < min || i > max)
        throw Error("gguf writer: metadata key '" + key + "': " + std::to_string(i) + " does not fit in " +
                    value_type_name(v.type));
      return i;
    };
    try {
      switch (v.type) {
        case ValueType::UINT8: put<uint8_t>(uint8_t(unsigned_in(UINT8_MAX))); break;
        case ValueType::INT8: put<int8_t>(int8_t(signed_in(INT8_MIN, INT8_MAX))); break;
        case ValueType::UINT16: put<uint16_t>(uint16_t(unsigned_in(UINT16_MAX))); break;
        case ValueType::INT16: put<int16_t>(int16_t(signed_in(INT16_MIN, INT16_MAX))); break;
        case ValueType::UINT32: put<uint32_t>(uint32_t(unsigned_in(UINT32_MAX))); break;
        case ValueType::INT32: put<int32_t>(int32_t(signed_in(INT32_MIN, INT32_MAX))); break;
        case ValueType::UINT64: put<uint64_t>(v.as_uint()); break;
        case ValueType::INT64: put<int64_t>(v.as_int()); break;
        case ValueType::FLOAT32: put<float>(float(v.as_float())); break;
        case ValueType::FLOAT64: put<double>(v.as_float()); break;
        case ValueType::BOOL: put<uint8_t>(v.as_bool() ? 1 : 0); break;
        case ValueType::STRING: put_string(v.as_string()); break;
        case ValueType::ARRAY: {
          const Array& a = v.as_array();
          put<uint32_t>(uint32_t(a.elem_type));
          put<uint64_t>(a.items.size());
          for (const Value& item : a.items) {
            if (item.type != a.elem_type)
              throw Error(std::string("array of ") + value_type_name(a.elem_type) + " holds a " +
                          value_type_name(item.type));
            put_value(item, key);
          }
          break;
        }
        default: throw Error("unknown value type " + std::to_string(uint32_t(v.type)));
      }
    } catch (const Error& e) {
      if (std::strncmp(e.what(), "gguf writer:", 12) == 0) throw;
      throw Error("gguf writer: metadata key '" + key + "': " + e.what());
    }
  }

 private:
  std::vector<uint8_t>& out_;
};

struct Layout {
  std::vector<uint8_t> header;    // through the padding before the data section
  std::vector<uint64_t> offsets;  // of each tensor, relative to the data section
  uint64_t data_bytes = 0;        // data section, padding after the last tensor included
};

}  // namespace

void Writer::set(const std::string& key, Value value) {
  if (key.empty()) throw Error("gguf writer: empty metadata key");
  for (auto& kv : metadata_) {
    if (kv.first == key) {
      kv.second = std::move(value);
      return;
    }
  }
  metadata_.emplace_back(key, std::move(value));
}

void Writer::add_tensor(const std::string& name, DType type, std::vector<int64_t> shape, Fill fill) {
  std::string where = "gguf writer: tensor '" + name + "': ";
  for (const auto& t : tensors_)
    if (t.name == name) throw Error(where + "duplicate tensor name");
  const TypeInfo* info = find_type_info(uint32_t(type));
  if (!info) throw Error(where + "unknown type id " + std::to_string(uint32_t(type)));
  if (shape.empty() || shape.size() > 4)
    throw Error(where + std::to_string(shape.size()) + " dimensions, expected 1..4");
  int64_t n = 1;
  for (int64_t d : shape)
    if (d <= 0 || __builtin_mul_overflow(n, d, &n)) throw Error(where + "bad dimension " + std::to_string(d));
  if (shape[0] % info->block_elems != 0)
    throw Error(where + "ne[0] = " + std::to_string(shape[0]) + " is not a multiple of the " + info->name +
                " block size " + std::to_string(info->block_elems));
  uint64_t n_bytes = uint64_t(n / info->block_elems) * info->block_bytes;
  tensors_.push_back({name, type, std::move(shape), n_bytes, std::move(fill)});
}

void Writer::add_tensor(const std::string& name, DType type, std::vector<int64_t> shape, std::vector<uint8_t> bytes) {
  auto data = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
  add_tensor(name, type, std::move(shape), [data, name](uint8_t* dst, uint64_t n_bytes) {
    if (data->size() != n_bytes)
      throw Error("gguf writer: tensor '" + name + "': " + std::to_string(data->size()) +
                  " bytes given, its shape needs " + std::to_string(n_bytes));
    std::memcpy(dst, data->data(), n_bytes);
  });
  const PendingTensor& t = tensors_.back();
  if (data->size() != t.n_bytes) {
    std::string msg = "gguf writer: tensor '" + name + "': " + std::to_string(data->size()) +
                      " bytes given, its shape needs " + std::to_string(t.n_bytes);
    tensors_.pop_back();
    throw Error(msg);
  }
}

namespace {

Layout make_layout(
    uint64_t alignment, const std::vector<std::pair<std::string, Value>>& metadata,
    const std::vector<std::tuple<const std::string*, DType, const std::vector<int64_t>*, uint64_t>>& tensors) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0)
    throw Error("gguf writer: alignment " + std::to_string(alignment) + " is not a nonzero power of two");
  bool has_alignment_key = false;
  for (const auto& [key, value] : metadata) {
    if (key != "general.alignment") continue;
    has_alignment_key = true;
    if (!value.is_integer() || value.as_uint() != alignment)
      throw Error("gguf writer: metadata general.alignment = " + value.to_display() +
                  " disagrees with the writer's alignment " + std::to_string(alignment));
  }
  bool add_alignment_key = !has_alignment_key && alignment != kDefaultAlignment;

  Layout l;
  Bytes b(l.header);
  b.put<uint32_t>(kMagic);
  b.put<uint32_t>(kVersion);
  b.put<uint64_t>(tensors.size());
  b.put<uint64_t>(metadata.size() + (add_alignment_key ? 1 : 0));
  for (const auto& [key, value] : metadata) {
    b.put_string(key);
    b.put<uint32_t>(uint32_t(value.type));
    b.put_value(value, key);
  }
  if (add_alignment_key) {
    b.put_string("general.alignment");
    b.put<uint32_t>(uint32_t(ValueType::UINT32));
    b.put_value(Value::u32(uint32_t(alignment)), "general.alignment");
  }
  uint64_t offset = 0;
  for (const auto& [name, type, shape, n_bytes] : tensors) {
    b.put_string(*name);
    b.put<uint32_t>(uint32_t(shape->size()));
    for (int64_t d : *shape) b.put<uint64_t>(uint64_t(d));
    b.put<uint32_t>(uint32_t(type));
    b.put<uint64_t>(offset);
    l.offsets.push_back(offset);
    offset = align_up(offset + n_bytes, alignment);
  }
  l.data_bytes = offset;
  l.header.resize(align_up(l.header.size(), alignment), 0);
  return l;
}

}  // namespace

std::vector<uint8_t> Writer::to_bytes() const {
  std::vector<std::tuple<const std::string*, DType, const std::vector<int64_t>*, uint64_t>> infos;
  for (const auto& t : tensors_) infos.emplace_back(&t.name, t.type, &t.shape, t.n_bytes);
  Layout l = make_layout(alignment_, metadata_, infos);
  std::vector<uint8_t> out = std::move(l.header);
  size_t data_start = out.size();
  out.resize(data_start + l.data_bytes, 0);
  for (size_t i = 0; i < tensors_.size(); ++i)
    tensors_[i].fill(out.data() + data_start + l.offsets[i], tensors_[i].n_bytes);
  return out;
}

void Writer::write(const std::string& path) const {
  std::vector<std::tuple<const std::string*, DType, const std::vector<int64_t>*, uint64_t>> infos;
  for (const auto& t : tensors_) infos.emplace_back(&t.name, t.type, &t.shape, t.n_bytes);
  Layout l = make_layout(alignment_, metadata_, infos);

  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(tmp + ": cannot create: " + std::strerror(errno));
  auto fail = [&](const std::string& what) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw Error(tmp + ": " + what);
  };
  auto write_all = [&](const uint8_t* p, size_t n) {
    while (n > 0) {
      ssize_t w = ::write(fd, p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        fail(std::string("write failed: ") + std::strerror(errno));
      }
      p += w;
      n -= size_t(w);
    }
  };

  write_all(l.header.data(), l.header.size());
  // Tensors are packed into the buffer with their padding and flushed whenever the next one
  // does not fit; the buffer only grows for a tensor larger than it.
  std::vector<uint8_t> buf(kChunkBytes);
  size_t used = 0;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const PendingTensor& t = tensors_[i];
    uint64_t end = i + 1 < tensors_.size() ? l.offsets[i + 1] : l.data_bytes;
    uint64_t span = end - l.offsets[i];  // the tensor and its padding
    if (used + span > buf.size()) {
      write_all(buf.data(), used);
      used = 0;
      if (span > buf.size()) buf.resize(size_t(span));
    }
    std::memset(buf.data() + used + t.n_bytes, 0, size_t(span - t.n_bytes));
    try {
      t.fill(buf.data() + used, t.n_bytes);
    } catch (...) {
      ::close(fd);
      ::unlink(tmp.c_str());
      throw;
    }
    used += size_t(span);
  }
  write_all(buf.data(), used);
  if (::close(fd) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    throw Error(tmp + ": close failed: " + std::strerror(e));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    throw Error(tmp + ": cannot rename to " + path + ": " + std::strerror(e));
  }
}

}  // namespace strata::gguf
