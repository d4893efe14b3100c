// GGUF metadata values: builders, typed conversions and display for `strata inspect`.
#include <charconv>
#include <cstdio>
#include <limits>

#include "gguf/gguf.h"
#include "util/error.h"

namespace strata::gguf {

const char* value_type_name(ValueType t) {
  switch (t) {
    case ValueType::UINT8: return "u8";
    case ValueType::INT8: return "i8";
    case ValueType::UINT16: return "u16";
    case ValueType::INT16: return "i16";
    case ValueType::UINT32: return "u32";
    case ValueType::INT32: return "i32";
    case ValueType::FLOAT32: return "f32";
    case ValueType::BOOL: return "bool";
    case ValueType::STRING: return "string";
    case ValueType::ARRAY: return "array";
    case ValueType::UINT64: return "u64";
    case ValueType::INT64: return "i64";
    case ValueType::FLOAT64: return "f64";
  }
  return "unknown";
}

Value Value::strings(const std::vector<std::string>& v) {
  std::vector<Value> items;
  items.reserve(v.size());
  for (const auto& s : v) items.push_back(str(s));
  return array(ValueType::STRING, std::move(items));
}

Value Value::f32s(const std::vector<float>& v) {
  std::vector<Value> items;
  items.reserve(v.size());
  for (float x : v) items.push_back(f32(x));
  return array(ValueType::FLOAT32, std::move(items));
}

Value Value::i32s(const std::vector<int32_t>& v) {
  std::vector<Value> items;
  items.reserve(v.size());
  for (int32_t x : v) items.push_back(i32(x));
  return array(ValueType::INT32, std::move(items));
}

bool Value::is_integer() const {
  switch (type) {
    case ValueType::UINT8:
    case ValueType::INT8:
    case ValueType::UINT16:
    case ValueType::INT16:
    case ValueType::UINT32:
    case ValueType::INT32:
    case ValueType::UINT64:
    case ValueType::INT64: return true;
    default: return false;
  }
}

bool Value::is_number() const { return is_integer() || type == ValueType::FLOAT32 || type == ValueType::FLOAT64; }

namespace {

[[noreturn]] void wrong_type(const Value& v, const char* expected) {
  throw Error(std::string("expected ") + expected + ", found " + value_type_name(v.type));
}

}  // namespace

int64_t Value::as_int() const {
  if (is_integer()) {
    if (const auto* u = std::get_if<uint64_t>(&data)) {
      if (*u > uint64_t(std::numeric_limits<int64_t>::max()))
        throw Error("integer " + std::to_string(*u) + " does not fit in int64");
      return int64_t(*u);
    }
    if (const auto* i = std::get_if<int64_t>(&data)) return *i;
  }
  wrong_type(*this, "an integer");
}

uint64_t Value::as_uint() const {
  if (is_integer()) {
    if (const auto* u = std::get_if<uint64_t>(&data)) return *u;
    if (const auto* i = std::get_if<int64_t>(&data)) {
      if (*i < 0) throw Error("integer " + std::to_string(*i) + " is negative, expected an unsigned value");
      return uint64_t(*i);
    }
  }
  wrong_type(*this, "an unsigned integer");
}

double Value::as_float() const {
  if (const auto* d = std::get_if<double>(&data); d && (type == ValueType::FLOAT32 || type == ValueType::FLOAT64))
    return *d;
  if (is_integer()) {
    if (const auto* u = std::get_if<uint64_t>(&data)) return double(*u);
    if (const auto* i = std::get_if<int64_t>(&data)) return double(*i);
  }
  wrong_type(*this, "a number");
}

bool Value::as_bool() const {
  if (const auto* b = std::get_if<bool>(&data); b && type == ValueType::BOOL) return *b;
  wrong_type(*this, "a bool");
}

const std::string& Value::as_string() const {
  if (const auto* s = std::get_if<std::string>(&data); s && type == ValueType::STRING) return *s;
  wrong_type(*this, "a string");
}

const Array& Value::as_array() const {
  if (const auto* a = std::get_if<Array>(&data); a && type == ValueType::ARRAY) return *a;
  wrong_type(*this, "an array");
}

// --- display

namespace {

void append_quoted(std::string& out, const std::string& s, size_t max_bytes) {
  size_t n = s.size();
  bool cut = n > max_bytes;
  if (cut) {
    n = max_bytes;
    while (n > 0 && (uint8_t(s[n]) & 0xC0) == 0x80) --n;  // do not split a UTF-8 sequence
  }
  out += '"';
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = uint8_t(s[i]);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\x%02x", c);
          out += buf;
        } else {
          out += char(c);
        }
    }
  }
  out += '"';
  if (cut) out += "... (" + std::to_string(s.size()) + " bytes)";
}

void append_float(std::string& out, double v, bool single) {
  char buf[64];
  auto r = single ? std::to_chars(buf, buf + sizeof buf, float(v)) : std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

void append_value(std::string& out, const Value& v, size_t max_items, size_t max_string) {
  switch (v.type) {
    case ValueType::FLOAT32:
    case ValueType::FLOAT64:
      if (const auto* d = std::get_if<double>(&v.data)) {
        append_float(out, *d, v.type == ValueType::FLOAT32);
        return;
      }
      break;
    case ValueType::BOOL:
      if (const auto* b = std::get_if<bool>(&v.data)) {
        out += *b ? "true" : "false";
        return;
      }
      break;
    case ValueType::STRING:
      if (const auto* s = std::get_if<std::string>(&v.data)) {
        append_quoted(out, *s, max_string);
        return;
      }
      break;
    case ValueType::ARRAY:
      if (const auto* a = std::get_if<Array>(&v.data)) {
        out += std::string("array<") + value_type_name(a->elem_type) + ">[" + std::to_string(a->items.size()) + "] [";
        size_t shown = std::min(a->items.size(), max_items);
        for (size_t i = 0; i < shown; ++i) {
          if (i) out += ", ";
          append_value(out, a->items[i], max_items, max_string);
        }
        if (shown < a->items.size()) out += shown ? ", ..." : "...";
        out += ']';
        return;
      }
      break;
    default:
      if (const auto* u = std::get_if<uint64_t>(&v.data)) {
        out += std::to_string(*u);
        return;
      }
      if (const auto* i = std::get_if<int64_t>(&v.data)) {
        out += std::to_string(*i);
        return;
      }
      break;
  }
  out += "<";
  out += value_type_name(v.type);
  out += " holding another kind of value>";
}

}  // namespace

std::string Value::to_display(size_t max_items) const {
  // Strings are cut in proportion to how much of an array is shown; max_items = SIZE_MAX shows all.
  size_t max_string =
      max_items > std::numeric_limits<size_t>::max() / 16 ? max_items : std::max<size_t>(max_items * 16, 64);
  std::string out;
  append_value(out, *this, max_items, max_string);
  return out;
}

}  // namespace strata::gguf
