#include "template/value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "util/error.h"

namespace strata::jinja {

const Value* Dict::find(std::string_view key) const {
  for (const auto& [k, v] : items)
    if (k.kind == Kind::String && k.s == key) return &v;
  return nullptr;
}

Value* Dict::find(std::string_view key) {
  for (auto& [k, v] : items)
    if (k.kind == Kind::String && k.s == key) return &v;
  return nullptr;
}

const Value* Dict::find(const Value& key) const {
  if (key.is_string()) return find(std::string_view(key.s));
  for (const auto& [k, v] : items)
    if (equals(k, key)) return &v;
  return nullptr;
}

Value* Dict::find(const Value& key) {
  return const_cast<Value*>(static_cast<const Dict*>(this)->find(key));
}

void Dict::set(const std::string& key, Value v) {
  if (Value* slot = find(std::string_view(key))) *slot = std::move(v);
  else items.emplace_back(Value::string(key), std::move(v));
}

void Dict::set(const Value& key, Value v) {
  if (key.kind == Kind::List && !key.is_tuple) throw Error("unhashable type: 'list'");
  if (key.kind == Kind::Dict) throw Error(std::string("unhashable type: '") + key.type_name() + "'");
  if (Value* slot = find(key)) *slot = std::move(v);
  else items.emplace_back(key, std::move(v));
}

Value Value::markup(std::string s) {
  Value v = string(std::move(s));
  v.is_markup = true;
  return v;
}

Value Value::generator(List items) {
  Value v = new_list(std::move(items));
  v.is_generator = true;
  return v;
}

List consume(const Value& generator) {
  List items;
  items.swap(*generator.list);
  return items;
}

Value Value::undefined(std::string name) {
  Value v;
  v.s = std::move(name);
  return v;
}
Value Value::none() {
  Value v;
  v.kind = Kind::None;
  return v;
}
Value Value::boolean(bool b) {
  Value v;
  v.kind = Kind::Bool;
  v.b = b;
  return v;
}
Value Value::integer(int64_t i) {
  Value v;
  v.kind = Kind::Int;
  v.i = i;
  return v;
}
Value Value::number(double f) {
  Value v;
  v.kind = Kind::Float;
  v.f = f;
  return v;
}
Value Value::string(std::string s) {
  Value v;
  v.kind = Kind::String;
  v.s = std::move(s);
  return v;
}
Value Value::new_list(List items) {
  Value v;
  v.kind = Kind::List;
  v.list = std::make_shared<List>(std::move(items));
  return v;
}
Value Value::tuple(List items) {
  Value v = new_list(std::move(items));
  v.is_tuple = true;
  return v;
}
Value Value::new_dict() {
  Value v;
  v.kind = Kind::Dict;
  v.dict = std::make_shared<Dict>();
  return v;
}
Value Value::function(Function f) {
  Value v;
  v.kind = Kind::Function;
  v.fn = std::make_shared<Function>(std::move(f));
  return v;
}

Value Value::from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return none();
    case nlohmann::ordered_json::value_t::boolean: return boolean(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return integer(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: return integer(int64_t(j.get<uint64_t>()));
    case nlohmann::ordered_json::value_t::number_float: return number(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return string(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List items;
      for (const auto& e : j) items.push_back(from_json(e));
      return new_list(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      Value d = new_dict();
      for (auto it = j.begin(); it != j.end(); ++it) d.dict->items.emplace_back(Value::string(it.key()), from_json(it.value()));
      return d;
    }
    default: return undefined();
  }
}

bool Value::truthy() const {
  switch (kind) {
    case Kind::Undefined:
    case Kind::None: return false;
    case Kind::Bool: return b;
    case Kind::Int: return i != 0;
    case Kind::Float: return f != 0;
    case Kind::String: return !s.empty();
    case Kind::List: return is_generator || !list->empty();
    case Kind::Dict: return is_namespace || !dict->items.empty();
    case Kind::Function: return true;
  }
  return false;
}

const char* Value::type_name() const {
  switch (kind) {
    case Kind::Undefined: return "Undefined";
    case Kind::None: return "NoneType";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::String: return "str";
    case Kind::List: return is_generator ? "generator" : is_tuple ? "tuple" : "list";
    case Kind::Dict: return is_namespace ? "Namespace" : "dict";
    case Kind::Function: return "function";
  }
  return "?";
}

Value CallArgs::get(size_t index, std::string_view name, Value fallback) const {
  if (index < pos.size()) return pos[index];
  for (const auto& [k, v] : kw)
    if (k == name) return v;
  return fallback;
}

bool CallArgs::has(size_t index, std::string_view name) const {
  if (index < pos.size()) return true;
  for (const auto& [k, v] : kw)
    if (k == name) return true;
  return false;
}

// --- UTF-8

std::u32string utf8_decode(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    unsigned char c = s[i];
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    if (i + n > s.size()) n = 1;
    char32_t cp = n == 1 ? c : n == 2 ? (c & 0x1f) : n == 3 ? (c & 0x0f) : (c & 0x07);
    for (int k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3f);
    out.push_back(cp);
    i += n;
  }
  return out;
}

std::string utf8_encode(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t cp : s) {
    if (cp < 0x80) {
      out += char(cp);
    } else if (cp < 0x800) {
      out += char(0xc0 | (cp >> 6));
      out += char(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      out += char(0xe0 | (cp >> 12));
      out += char(0x80 | ((cp >> 6) & 0x3f));
      out += char(0x80 | (cp & 0x3f));
    } else {
      out += char(0xf0 | (cp >> 18));
      out += char(0x80 | ((cp >> 12) & 0x3f));
      out += char(0x80 | ((cp >> 6) & 0x3f));
      out += char(0x80 | (cp & 0x3f));
    }
  }
  return out;
}

size_t utf8_length(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xc0) != 0x80;
  return n;
}

// --- str() and repr()

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
  // Shortest round-trip digits, then Python's layout: positional for 1e-4 <= |d| < 1e16.
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  size_t e_pos = sci.find('e');
  int exp10 = std::stoi(sci.substr(e_pos + 1));
  std::string mant = sci.substr(0, e_pos);
  bool neg = mant[0] == '-';
  if (neg) mant.erase(0, 1);
  std::string digits;
  for (char c : mant)
    if (c != '.') digits += c;
  std::string out;
  if (exp10 >= -5 && exp10 < 16) {
    int point = exp10 + 1;  // digits before the decimal point
    if (point <= 0) {
      out = "0." + std::string(-point, '0') + digits;
    } else if (point >= int(digits.size())) {
      out = digits + std::string(point - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, point) + "." + digits.substr(point);
    }
    if (exp10 == -5) {  // Python switches to exponent form below 1e-4
      out.clear();
    }
  }
  if (out.empty()) {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char eb[16];
    std::snprintf(eb, sizeof eb, "e%c%02d", exp10 < 0 ? '-' : '+', std::abs(exp10));
    out += eb;
  }
  return neg ? "-" + out : out;
}

static std::string repr_string(const std::string& s) {
  bool has_single = s.find('\'') != std::string::npos;
  bool has_double = s.find('"') != std::string::npos;
  char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (unsigned char c : s) {
    if (c == quote || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    } else {
      out += char(c);
    }
  }
  out += quote;
  return out;
}

namespace {
// Walking a value is bounded: a namespace can hold itself ({% set ns.x = ns %}), and a list can
// hold one large list many times ([[s]] * n) without taking memory until it is printed.
thread_local int t_walk_depth = 0;
struct WalkGuard {
  WalkGuard() {
    if (++t_walk_depth > kMaxValueDepth) {
      --t_walk_depth;
      throw Error("a value nests more than " + std::to_string(kMaxValueDepth) +
                  " deep (one that contains itself?) (the template engine's limit)");
    }
  }
  ~WalkGuard() { --t_walk_depth; }
};
void check_text_size(const std::string& out) {
  if (out.size() > kMaxValueBytes)
    throw Error("a value's text is larger than " + std::to_string(kMaxValueBytes >> 20) +
                " MiB (the template engine's limit)");
}
}  // namespace

std::string to_repr(const Value& v) {
  WalkGuard guard;
  switch (v.kind) {
    case Kind::String: return repr_string(v.s);
    case Kind::List: {
      if (v.is_generator) return "<generator object>";  // Python adds an address no template can rely on
      std::string out = v.is_tuple ? "(" : "[";
      for (size_t k = 0; k < v.list->size(); ++k) {
        out += (k ? ", " : "") + to_repr((*v.list)[k]);
        check_text_size(out);
      }
      if (v.is_tuple && v.list->size() == 1) out += ",";
      return out + (v.is_tuple ? ")" : "]");
    }
    case Kind::Dict: {
      std::string out = v.is_namespace ? "<Namespace {" : "{";
      bool first = true;
      for (const auto& [k, e] : v.dict->items) {
        out += (first ? "" : ", ") + to_repr(k) + ": " + to_repr(e);
        check_text_size(out);
        first = false;
      }
      return out + (v.is_namespace ? "}>" : "}");
    }
    default: return to_str(v);
  }
}

std::string to_str(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined: return "";
    case Kind::None: return "None";
    case Kind::Bool: return v.b ? "True" : "False";
    case Kind::Int: return std::to_string(v.i);
    case Kind::Float: return float_repr(v.f);
    case Kind::String: return v.s;
    case Kind::Function: return "<function>";
    default: return to_repr(v);
  }
}

// --- json.dumps

static void json_string(std::string& out, const std::string& s, bool ensure_ascii) {
  out += '"';
  std::u32string cps;
  if (ensure_ascii) cps = utf8_decode(s);
  auto escape_cp = [&](char32_t c) {
    char b[16];
    if (c >= 0x10000) {
      char32_t v = c - 0x10000;
      std::snprintf(b, sizeof b, "\\u%04x\\u%04x", unsigned(0xd800 + (v >> 10)), unsigned(0xdc00 + (v & 0x3ff)));
    } else {
      std::snprintf(b, sizeof b, "\\u%04x", unsigned(c));
    }
    out += b;
  };
  auto put = [&](char32_t c, char raw) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20 || (ensure_ascii && c >= 0x7f)) escape_cp(c);
        else if (ensure_ascii) out += char(c);
        else out += raw;
    }
  };
  if (ensure_ascii) {
    for (char32_t c : cps) put(c, 0);
  } else {
    for (char c : s) put(static_cast<unsigned char>(c), c);
  }
  out += '"';
}

// json.dumps turns str, int, float, bool and None keys into strings and refuses the rest.
static std::string json_key(const Value& k) {
  switch (k.kind) {
    case Kind::String: return k.s;
    case Kind::None: return "null";
    case Kind::Bool: return k.b ? "true" : "false";
    case Kind::Int: return std::to_string(k.i);
    case Kind::Float: return std::isnan(k.f) ? "NaN" : std::isinf(k.f) ? (k.f > 0 ? "Infinity" : "-Infinity") : float_repr(k.f);
    default:
      throw Error(std::string("tojson: keys must be str, int, float, bool or None, not ") + k.type_name());
  }
}

static void json_dump(std::string& out, const Value& v, const JsonOptions& opt, int depth) {
  WalkGuard guard;
  check_text_size(out);
  bool pretty = opt.indent >= 0 || !opt.indent_str.empty();
  std::string item_sep = opt.item_sep.empty() ? (pretty ? "," : ", ") : opt.item_sep;
  std::string key_sep = opt.key_sep.empty() ? ": " : opt.key_sep;
  std::string unit = !opt.indent_str.empty() ? opt.indent_str : std::string(std::max(opt.indent, 0), ' ');
  auto newline = [&](int d) {
    if (!pretty) return;
    out += '\n';
    for (int k = 0; k < d; ++k) out += unit;
  };
  switch (v.kind) {
    case Kind::None: out += "null"; return;
    case Kind::Bool: out += v.b ? "true" : "false"; return;
    case Kind::Int: out += std::to_string(v.i); return;
    case Kind::Float:
      out += std::isnan(v.f) ? "NaN" : std::isinf(v.f) ? (v.f > 0 ? "Infinity" : "-Infinity") : float_repr(v.f);
      return;
    case Kind::String: json_string(out, v.s, opt.ensure_ascii); return;
    case Kind::List: {
      if (v.is_generator) throw Error("tojson: Object of type generator is not JSON serializable");
      if (v.list->empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) out += item_sep;
        newline(depth + 1);
        json_dump(out, (*v.list)[k], opt, depth + 1);
      }
      newline(depth);
      out += ']';
      return;
    }
    case Kind::Dict: {
      if (v.is_namespace) throw Error("tojson: Object of type Namespace is not JSON serializable");
      if (v.dict->items.empty()) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<Value, Value>*> entries;
      for (const auto& e : v.dict->items) entries.push_back(&e);
      if (opt.sort_keys)  // Python sorts the keys themselves (mixed types raise)
        std::stable_sort(entries.begin(), entries.end(), [](auto* a, auto* b) { return less(a->first, b->first); });
      out += '{';
      for (size_t k = 0; k < entries.size(); ++k) {
        if (k) out += item_sep;
        newline(depth + 1);
        json_string(out, json_key(entries[k]->first), opt.ensure_ascii);
        out += key_sep;
        json_dump(out, entries[k]->second, opt, depth + 1);
      }
      newline(depth);
      out += '}';
      return;
    }
    default: throw Error(std::string("tojson: Object of type ") + v.type_name() + " is not JSON serializable");
  }
}

std::string to_json(const Value& v, const JsonOptions& opt) {
  std::string out;
  json_dump(out, v, opt, 0);
  return out;
}

// --- comparison

bool equals(const Value& a, const Value& b) {
  WalkGuard guard;
  if (a.is_numeric() && b.is_numeric()) {
    if (a.is_int_like() && b.is_int_like()) return a.as_int() == b.as_int();
    return a.as_double() == b.as_double();
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::Undefined:
    case Kind::None: return true;
    case Kind::String: return a.s == b.s;
    case Kind::List: {
      if (a.list == b.list) return true;
      if (a.is_generator || b.is_generator) return false;  // generators compare by identity
      if (a.is_tuple != b.is_tuple || a.list->size() != b.list->size()) return false;
      for (size_t k = 0; k < a.list->size(); ++k)
        if (!equals((*a.list)[k], (*b.list)[k])) return false;
      return true;
    }
    case Kind::Dict: {
      if (a.dict == b.dict) return true;
      if (a.is_namespace || b.is_namespace) return false;
      if (a.dict->items.size() != b.dict->items.size()) return false;
      for (const auto& [k, v] : a.dict->items) {
        const Value* o = b.dict->find(k);
        if (!o || !equals(v, *o)) return false;
      }
      return true;
    }
    case Kind::Function: return a.fn == b.fn;
    default: return false;
  }
}

bool less(const Value& a, const Value& b) {
  WalkGuard guard;
  if (a.is_numeric() && b.is_numeric()) {
    if (a.is_int_like() && b.is_int_like()) return a.as_int() < b.as_int();
    return a.as_double() < b.as_double();
  }
  if (a.is_string() && b.is_string()) return a.s < b.s;  // UTF-8 byte order is code point order
  if (a.is_list() && b.is_list()) {
    size_t n = std::min(a.list->size(), b.list->size());
    for (size_t k = 0; k < n; ++k) {
      if (!equals((*a.list)[k], (*b.list)[k])) return less((*a.list)[k], (*b.list)[k]);
    }
    return a.list->size() < b.list->size();
  }
  throw Error(std::string("'<' not supported between instances of '") + a.type_name() + "' and '" +
              b.type_name() + "'");
}

}  // namespace strata::jinja
