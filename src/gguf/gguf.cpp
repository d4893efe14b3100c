// GGUF reader. Layout (all little-endian):
//   header:  u32 magic "GGUF", u32 version (2 or 3), u64 n_tensors, u64 n_kv
//   n_kv ×   string key, u32 value type, value       (string = u64 length + bytes)
//            array value = u32 elem type, u64 count, count × value (an array item has no type tag)
//   n_tensors × string name, u32 n_dims, n_dims × u64 ne, u32 type, u64 offset
//   padding to general.alignment (default 32), then the data section.
// Every count is bounded by the bytes left in the file before anything is reserved.
#include "gguf/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>

#include "util/error.h"

static_assert(std::endian::native == std::endian::little, "the GGUF reader assumes a little-endian host");

namespace strata::gguf {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint64_t kDefaultAlignment = 32;
constexpr int kMaxDims = 4;
// Arrays of arrays are legal; nothing real nests deeper than 2.
constexpr int kMaxArrayDepth = 8;
// A Value takes ~48 bytes in memory however small it is in the file: bound all array items
// together (a 262k-token vocabulary with scores, types and merges is ~1M).
constexpr uint64_t kMaxMetadataItems = uint64_t(1) << 24;
// Smallest encodings, used to bound counts by the bytes that remain.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;                  // empty key, type, u8
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;  // empty name, n_dims, 1 dim, type, offset

std::string hex_bytes(const uint8_t* p, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    if (i) s += ' ';
    s += digits[p[i] >> 4];
    s += digits[p[i] & 15];
  }
  return s;
}

std::string quoted(std::string_view name) {
  // Names come from hostile files: keep error messages printable and short.
  std::string s = "'";
  for (size_t i = 0; i < name.size() && i < 96; ++i) {
    unsigned char c = uint8_t(name[i]);
    s += (c < 0x20 || c == 0x7f) ? '?' : char(c);
  }
  if (name.size() > 96) s += "...";
  return s + "'";
}

uint64_t fixed_size(ValueType t) {
  switch (t) {
    case ValueType::UINT8:
    case ValueType::INT8:
    case ValueType::BOOL: return 1;
    case ValueType::UINT16:
    case ValueType::INT16: return 2;
    case ValueType::UINT32:
    case ValueType::INT32:
    case ValueType::FLOAT32: return 4;
    case ValueType::UINT64:
    case ValueType::INT64:
    case ValueType::FLOAT64: return 8;
    case ValueType::STRING: return 8;  // the length alone
    case ValueType::ARRAY: return 12;  // elem type + count alone
  }
  return 1;
}

class Reader {
 public:
  Reader(const uint8_t* base, uint64_t size, const std::string& path) : base_(base), size_(size), path_(path) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }
  void set_section(std::string section) { section_ = std::move(section); }

  [[noreturn]] void fail(const std::string& what) const { throw Error(path_ + ": " + section_ + ": " + what); }

  void need(uint64_t n, const char* what) const {
    if (n > remaining())
      fail(std::string(what) + " needs " + std::to_string(n) + " bytes at offset " + std::to_string(pos_) +
           " but the file has " + std::to_string(remaining()) + " left (truncated file?)");
  }

  template <class T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, base_ + pos_, sizeof v);
    pos_ += sizeof v;
    return v;
  }

  std::string read_string(const char* what) {
    uint64_t len = read<uint64_t>(what);
    if (len > remaining())
      fail(std::string(what) + " length " + std::to_string(len) + " at offset " + std::to_string(pos_ - 8) +
           " runs past the end of the file (" + std::to_string(remaining()) + " bytes left)");
    std::string s(reinterpret_cast<const char*>(base_ + pos_), size_t(len));
    pos_ += len;
    return s;
  }

  ValueType read_value_type(const char* what) {
    uint32_t t = read<uint32_t>(what);
    if (t > uint32_t(ValueType::FLOAT64))
      fail(std::string("unknown ") + what + " " + std::to_string(t) + " at offset " + std::to_string(pos_ - 4) +
           " (expected 0..12)");
    return ValueType(t);
  }

  Value read_value(ValueType type, int depth) {
    Value v;
    v.type = type;
    switch (type) {
      case ValueType::UINT8: v.data = uint64_t(read<uint8_t>("u8 value")); break;
      case ValueType::INT8: v.data = int64_t(read<int8_t>("i8 value")); break;
      case ValueType::UINT16: v.data = uint64_t(read<uint16_t>("u16 value")); break;
      case ValueType::INT16: v.data = int64_t(read<int16_t>("i16 value")); break;
      case ValueType::UINT32: v.data = uint64_t(read<uint32_t>("u32 value")); break;
      case ValueType::INT32: v.data = int64_t(read<int32_t>("i32 value")); break;
      case ValueType::UINT64: v.data = read<uint64_t>("u64 value"); break;
      case ValueType::INT64: v.data = read<int64_t>("i64 value"); break;
      case ValueType::FLOAT32: v.data = double(read<float>("f32 value")); break;
      case ValueType::FLOAT64: v.data = read<double>("f64 value"); break;
      case ValueType::BOOL: {
        uint8_t b = read<uint8_t>("bool value");
        if (b > 1)
          fail("bool value at offset " + std::to_string(pos_ - 1) + " is " + std::to_string(b) + ", expected 0 or 1");
        v.data = b == 1;
        break;
      }
      case ValueType::STRING: v.data = read_string("string value"); break;
      case ValueType::ARRAY: v.data = read_array(depth + 1); break;
    }
    return v;
  }

  Array read_array(int depth) {
    if (depth > kMaxArrayDepth)
      fail("arrays nested deeper than " + std::to_string(kMaxArrayDepth) + " levels at offset " + std::to_string(pos_));
    Array a;
    a.elem_type = read_value_type("array element type");
    uint64_t count = read<uint64_t>("array count");
    uint64_t max_count = remaining() / fixed_size(a.elem_type);
    if (count > max_count)
      fail("array of " + std::string(value_type_name(a.elem_type)) + " has count " + std::to_string(count) +
           " but the " + std::to_string(remaining()) + " bytes left in the file hold at most " +
           std::to_string(max_count));
    n_items_ += count;
    if (n_items_ > kMaxMetadataItems)
      fail("metadata arrays hold more than " + std::to_string(kMaxMetadataItems) +
           " items in all (limit of this reader)");
    a.items.reserve(size_t(count));
    for (uint64_t i = 0; i < count; ++i) a.items.push_back(read_value(a.elem_type, depth));
    return a;
  }

 private:
  const uint8_t* base_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& path_;
  std::string section_ = "header";
  uint64_t n_items_ = 0;
};

bool checked_align_up(uint64_t x, uint64_t alignment, uint64_t* out) {
  uint64_t rem = x % alignment;
  if (rem == 0) {
    *out = x;
    return true;
  }
  return !__builtin_add_overflow(x, alignment - rem, out);
}

}  // namespace

std::unique_ptr<File> File::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open: " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw Error(path + ": cannot stat: " + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": not a regular file");
  }
  std::unique_ptr<File> f(new File());
  f->path_ = path;
  f->size_ = uint64_t(st.st_size);
  if (f->size_ > 0) {
    void* p = ::mmap(nullptr, size_t(f->size_), PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      throw Error(path + ": cannot mmap " + std::to_string(f->size_) + " bytes: " + std::strerror(e));
    }
    f->base_ = static_cast<const uint8_t*>(p);
    f->mapped_ = true;
  }
  ::close(fd);
  f->parse_all();
  return f;
}

std::unique_ptr<File> File::parse(const uint8_t* data, size_t size, const std::string& source_name) {
  std::unique_ptr<File> f(new File());
  f->path_ = source_name;
  f->base_ = data;
  f->size_ = size;
  f->parse_all();
  return f;
}

File::~File() {
  if (mapped_) ::munmap(const_cast<uint8_t*>(base_), size_t(size_));
}

void File::advise_random_access(bool random) const {
  if (mapped_) ::madvise(const_cast<uint8_t*>(base_), size_t(size_), random ? MADV_RANDOM : MADV_NORMAL);
}

void File::parse_all() {
  Reader r(base_, size_, path_);

  // --- header
  if (size_ < 4)
    r.fail("file is " + std::to_string(size_) + " bytes, too short for the GGUF magic (expected 47 47 55 46 'GGUF')");
  uint32_t magic = r.read<uint32_t>("magic");
  if (magic != kMagic) r.fail("not a GGUF file: bad magic " + hex_bytes(base_, 4) + " (expected 47 47 55 46 'GGUF')");
  version_ = r.read<uint32_t>("version");
  if (version_ == 1)
    r.fail("GGUF version 1 is not supported (expected version 2 or 3; convert the file with a current llama.cpp)");
  if (version_ != 2 && version_ != 3) {
    std::string hint = (version_ & 0xffff) == 0 ? " (a big-endian file? only little-endian GGUF is supported)" : "";
    r.fail("unsupported GGUF version " + std::to_string(version_) + ", expected 2 or 3" + hint);
  }
  uint64_t n_tensors = r.read<uint64_t>("tensor count");
  uint64_t n_kv = r.read<uint64_t>("metadata count");
  if (n_kv > r.remaining() / kMinKvBytes)
    r.fail("metadata count " + std::to_string(n_kv) + " is impossible: the " + std::to_string(r.remaining()) +
           " bytes left hold at most " + std::to_string(r.remaining() / kMinKvBytes) + " entries");
  if (n_tensors > r.remaining() / kMinTensorInfoBytes)
    r.fail("tensor count " + std::to_string(n_tensors) + " is impossible: the " + std::to_string(r.remaining()) +
           " bytes left hold at most " + std::to_string(r.remaining() / kMinTensorInfoBytes) + " tensor infos");

  // --- metadata
  metadata_.reserve(size_t(n_kv));
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string where = "metadata key " + std::to_string(i);
    r.set_section(where);
    std::string key = r.read_string("key");
    if (key.empty()) r.fail("empty key");
    r.set_section(where + " " + quoted(key));
    if (metadata_index_.count(key)) r.fail("duplicate metadata key " + quoted(key));
    ValueType type = r.read_value_type("value type");
    Value value = r.read_value(type, 0);
    metadata_index_.emplace(key, metadata_.size());
    metadata_.emplace_back(std::move(key), std::move(value));
  }

  alignment_ = kDefaultAlignment;
  if (const Value* a = find("general.alignment")) {
    r.set_section("metadata key " + std::to_string(metadata_index_.find("general.alignment")->second) +
                  " 'general.alignment'");
    if (!a->is_integer()) r.fail(std::string("alignment must be an integer, found ") + value_type_name(a->type));
    uint64_t v = 0;
    try {
      v = a->as_uint();
    } catch (const Error& e) {
      r.fail(std::string("bad alignment: ") + e.what());
    }
    if (v == 0 || (v & (v - 1)) != 0) r.fail("alignment " + std::to_string(v) + " is not a nonzero power of two");
    alignment_ = v;
  }

  // --- tensor infos
  tensors_.reserve(size_t(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    std::string where = "tensor info " + std::to_string(i);
    r.set_section(where);
    TensorInfo t;
    t.name = r.read_string("tensor name");
    r.set_section(where + " " + quoted(t.name));
    if (tensor_index_.count(t.name)) r.fail("duplicate tensor name " + quoted(t.name));
    uint32_t n_dims = r.read<uint32_t>("n_dims");
    if (n_dims < 1 || n_dims > uint32_t(kMaxDims))
      r.fail("n_dims is " + std::to_string(n_dims) + ", expected 1.." + std::to_string(kMaxDims));
    int64_t n_elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t ne = r.read<uint64_t>("dimension");
      if (ne == 0) r.fail("dimension " + std::to_string(d) + " is 0, expected > 0");
      if (ne > uint64_t(std::numeric_limits<int64_t>::max()) ||
          __builtin_mul_overflow(n_elements, int64_t(ne), &n_elements))
        r.fail("dimension " + std::to_string(d) + " = " + std::to_string(ne) +
               " makes the element count overflow int64");
      t.shape.push_back(int64_t(ne));
    }
    t.n_elements = n_elements;
    uint32_t type_id = r.read<uint32_t>("type");
    const TypeInfo* info = find_type_info(type_id);
    if (!info) r.fail("unknown tensor type id " + std::to_string(type_id));
    t.type = DType(type_id);
    if (t.shape[0] % info->block_elems != 0)
      r.fail("ne[0] = " + std::to_string(t.shape[0]) + " is not a multiple of the " + info->name + " block size " +
             std::to_string(info->block_elems));
    uint64_t n_blocks = uint64_t(n_elements / info->block_elems);
    if (__builtin_mul_overflow(n_blocks, uint64_t(info->block_bytes), &t.n_bytes))
      r.fail("size of " + std::to_string(n_elements) + " " + info->name + " elements overflows 64 bits");
    t.offset = r.read<uint64_t>("offset");
    if (t.offset % alignment_ != 0)
      r.fail("data offset " + std::to_string(t.offset) + " is not a multiple of the alignment " +
             std::to_string(alignment_));
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }

  // --- data section
  r.set_section("data");
  if (!checked_align_up(r.pos(), alignment_, &data_offset_))
    r.fail("data section offset overflows with alignment " + std::to_string(alignment_));
  for (size_t i = 0; i < tensors_.size(); ++i) {
    TensorInfo& t = tensors_[i];
    r.set_section("tensor info " + std::to_string(i) + " " + quoted(t.name));
    uint64_t end = 0;
    if (__builtin_add_overflow(data_offset_, t.offset, &t.file_offset) ||
        __builtin_add_overflow(t.file_offset, t.n_bytes, &end) || end > size_)
      r.fail("data [" + std::to_string(t.offset) + ", +" + std::to_string(t.n_bytes) + ") at data section offset " +
             std::to_string(data_offset_) + " runs past the end of the file (" + std::to_string(size_) + " bytes)");
  }
  r.set_section("data");
  std::vector<const TensorInfo*> by_offset;
  by_offset.reserve(tensors_.size());
  for (const auto& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo* a = by_offset[i - 1];
    const TensorInfo* b = by_offset[i];
    if (a->offset + a->n_bytes > b->offset)
      r.fail("tensors " + quoted(a->name) + " [" + std::to_string(a->offset) + ", " +
             std::to_string(a->offset + a->n_bytes) + ") and " + quoted(b->name) + " [" + std::to_string(b->offset) +
             ", " + std::to_string(b->offset + b->n_bytes) + ") overlap");
  }
}

// --- lookups

const Value* File::find(std::string_view key) const {
  auto it = metadata_index_.find(key);
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
}

const Value& File::get(std::string_view key) const {
  const Value* v = find(key);
  if (!v) throw Error(path_ + ": metadata key " + quoted(key) + " is missing");
  return *v;
}

namespace {

template <class F>
auto convert(const std::string& path, std::string_view key, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error& e) {
    throw Error(path + ": metadata key " + quoted(key) + ": " + e.what());
  }
}

}  // namespace

std::string File::get_string(std::string_view key) const {
  const Value& v = get(key);
  return convert(path_, key, [&] { return v.as_string(); });
}

std::string File::get_string(std::string_view key, const std::string& fallback) const {
  const Value* v = find(key);
  if (!v) return fallback;
  return convert(path_, key, [&] { return v->as_string(); });
}

int64_t File::get_int(std::string_view key) const {
  const Value& v = get(key);
  return convert(path_, key, [&] { return v.as_int(); });
}

int64_t File::get_int(std::string_view key, int64_t fallback) const {
  const Value* v = find(key);
  if (!v) return fallback;
  return convert(path_, key, [&] { return v->as_int(); });
}

double File::get_float(std::string_view key) const {
  const Value& v = get(key);
  return convert(path_, key, [&] { return v.as_float(); });
}

double File::get_float(std::string_view key, double fallback) const {
  const Value* v = find(key);
  if (!v) return fallback;
  return convert(path_, key, [&] { return v->as_float(); });
}

bool File::get_bool(std::string_view key, bool fallback) const {
  const Value* v = find(key);
  if (!v) return fallback;
  return convert(path_, key, [&] { return v->as_bool(); });
}

const TensorInfo* File::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace strata::gguf
