#include "template/builtins.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <ctime>
#include <map>

#include "template/render.h"
#include "util/error.h"

namespace strata::jinja {

namespace {

long long g_fixed_now = 0;

// A string a builtin is building has passed kMaxValueBytes (checked as it grows, so no single
// call can allocate without bound: 'x'.replace('', big), big|join(big), '{}'*n|format...).
void check_size(size_t n_bytes, const char* what) {
  if (n_bytes > kMaxValueBytes)
    throw Error(std::string(what) + ": the result would be larger than " + std::to_string(kMaxValueBytes >> 20) +
                " MiB (the template engine's limit)");
}

bool is_py_space(char32_t c) { return c == ' ' || (c >= '\t' && c <= '\r') || c == 0x1c || c == 0x1d || c == 0x1e || c == 0x1f || c == 0x85 || c == 0xa0 || c == 0x3000 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x1680; }

std::string ascii_upper(std::string s) {
  for (char& c : s) c = char(std::toupper(static_cast<unsigned char>(c)));
  return s;
}
std::string ascii_lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

const Value& need_string(const Value& v, const char* what) {
  if (!v.is_string()) throw Error(std::string(what) + ": expected a string, got '" + v.type_name() + "'");
  return v;
}

std::vector<std::string> py_split(const std::string& s, const Value& sep, int64_t maxsplit) {
  std::vector<std::string> out;
  if (sep.is_none() || sep.is_undefined()) {  // split on runs of whitespace
    std::u32string cs = utf8_decode(s);
    size_t k = 0;
    while (k < cs.size()) {
      while (k < cs.size() && is_py_space(cs[k])) ++k;
      if (k >= cs.size()) break;
      if (maxsplit >= 0 && int64_t(out.size()) == maxsplit) {
        size_t e = cs.size();
        while (e > k && is_py_space(cs[e - 1])) --e;
        out.push_back(utf8_encode(cs.substr(k, e - k)));
        break;
      }
      size_t st = k;
      while (k < cs.size() && !is_py_space(cs[k])) ++k;
      out.push_back(utf8_encode(cs.substr(st, k - st)));
    }
    return out;
  }
  const std::string& d = need_string(sep, "split").s;
  if (d.empty()) throw Error("empty separator");
  size_t st = 0;
  while (true) {
    size_t p = s.find(d, st);
    if (p == std::string::npos || (maxsplit >= 0 && int64_t(out.size()) == maxsplit)) {
      out.push_back(s.substr(st));
      return out;
    }
    out.push_back(s.substr(st, p - st));
    st = p + d.size();
  }
}

std::string py_replace(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  std::string out;
  if (from.empty()) {  // Python inserts `to` between every character
    std::u32string cs = utf8_decode(s);
    int64_t n = 0;
    for (char32_t c : cs) {
      if (count < 0 || n < count) out += to, ++n;
      out += utf8_encode(std::u32string(1, c));
      check_size(out.size(), "replace");
    }
    if (count < 0 || n < count) out += to;
    return out;
  }
  size_t st = 0;
  int64_t n = 0;
  while (true) {
    size_t p = s.find(from, st);
    if (p == std::string::npos || (count >= 0 && n >= count)) break;
    out += s.substr(st, p - st) + to;
    check_size(out.size(), "replace");
    st = p + from.size();
    ++n;
  }
  return out + s.substr(st);
}

std::string capitalize(const std::string& s) {
  std::string out = ascii_lower(s);
  if (!out.empty()) out[0] = char(std::toupper(static_cast<unsigned char>(out[0])));
  return out;
}

// jinja2's title: words begin after runs of [-\s({\[<].
std::string title(const std::string& s) {
  std::string out;
  bool boundary = true;
  for (char c : s) {
    bool sep = c == '-' || std::isspace(static_cast<unsigned char>(c)) || c == '(' || c == '{' || c == '[' || c == '<';
    if (sep) {
      out += c;
      boundary = true;
    } else {
      out += boundary ? char(std::toupper(static_cast<unsigned char>(c))) : char(std::tolower(static_cast<unsigned char>(c)));
      boundary = false;
    }
  }
  return out;
}

// Python's str.title (methods, not the filter): word = run of letters.
std::string str_title(const std::string& s) {
  std::string out;
  bool prev_letter = false;
  for (char c : s) {
    bool letter = std::isalpha(static_cast<unsigned char>(c)) || (static_cast<unsigned char>(c) >= 0x80);
    out += letter ? (prev_letter ? char(std::tolower(static_cast<unsigned char>(c)))
                                 : char(std::toupper(static_cast<unsigned char>(c))))
                  : c;
    prev_letter = letter;
  }
  return out;
}

bool starts_or_ends(const std::string& s, const Value& arg, bool start) {
  auto one = [&](const Value& p) {
    const std::string& x = need_string(p, start ? "startswith" : "endswith").s;
    if (x.size() > s.size()) return false;
    return start ? s.compare(0, x.size(), x) == 0 : s.compare(s.size() - x.size(), x.size(), x) == 0;
  };
  if (arg.is_list()) {
    for (const auto& p : *arg.list)
      if (one(p)) return true;
    return false;
  }
  return one(arg);
}

Value list_of_strings(const std::vector<std::string>& v) {
  List out;
  for (const auto& s : v) out.push_back(Value::string(s));
  return Value::new_list(out);
}

// Python str.format with positional `{}`/`{0}` and keyword `{name}` fields (no format specs).
std::string py_format(const std::string& fmt, CallArgs& a) {
  std::string out;
  size_t auto_idx = 0;
  for (size_t k = 0; k < fmt.size(); ++k) {
    char c = fmt[k];
    if (c == '{' && k + 1 < fmt.size() && fmt[k + 1] == '{') {
      out += '{';
      ++k;
    } else if (c == '}' && k + 1 < fmt.size() && fmt[k + 1] == '}') {
      out += '}';
      ++k;
    } else if (c == '{') {
      size_t e = fmt.find('}', k);
      if (e == std::string::npos) throw Error("format: single '{' encountered in format string");
      std::string field = fmt.substr(k + 1, e - k - 1);
      Value v;
      if (field.empty()) v = a.get(auto_idx++, "\x01");
      else if (std::isdigit(static_cast<unsigned char>(field[0]))) v = a.get(std::stoul(field), "\x01");
      else v = a.get(size_t(-1), field);
      out += to_str(v);
      check_size(out.size(), "format");
      k = e;
    } else {
      out += c;
    }
  }
  return out;
}

Value string_method(const Value& self, const std::string& name) {
  const std::string s = self.s;
  auto fn = [](auto f) { return Value::function(f); };
  if (name == "strip" || name == "lstrip" || name == "rstrip")
    return fn([s, name](CallArgs& a) {
      return Value::string(py_strip(s, a.get(0, "chars", Value::none()), name != "rstrip", name != "lstrip"));
    });
  if (name == "split" || name == "rsplit")
    return fn([s, name](CallArgs& a) {
      int64_t maxsplit = a.get(1, "maxsplit", Value::integer(-1)).as_int();
      if (name == "rsplit" && maxsplit >= 0) {  // only the rightmost splits
        Value sep = a.get(0, "sep", Value::none());
        std::vector<std::string> all = py_split(s, sep, -1);
        if (int64_t(all.size()) <= maxsplit + 1) return list_of_strings(all);
        const std::string& d = sep.is_string() ? sep.s : std::string(" ");
        std::string head;
        size_t n_head = all.size() - size_t(maxsplit);
        for (size_t k = 0; k < n_head; ++k) head += (k ? d : "") + all[k];
        std::vector<std::string> out{head};
        out.insert(out.end(), all.begin() + n_head, all.end());
        return list_of_strings(out);
      }
      return list_of_strings(py_split(s, a.get(0, "sep", Value::none()), maxsplit));
    });
  if (name == "splitlines")
    return fn([s](CallArgs&) {
      std::vector<std::string> out;
      size_t st = 0;
      for (size_t k = 0; k < s.size(); ++k) {
        if (s[k] == '\n' || s[k] == '\r') {
          out.push_back(s.substr(st, k - st));
          if (s[k] == '\r' && k + 1 < s.size() && s[k + 1] == '\n') ++k;
          st = k + 1;
        }
      }
      if (st < s.size()) out.push_back(s.substr(st));
      return list_of_strings(out);
    });
  if (name == "startswith" || name == "endswith")
    return fn([s, name](CallArgs& a) { return Value::boolean(starts_or_ends(s, a.get(0, "prefix"), name == "startswith")); });
  if (name == "upper") return fn([s](CallArgs&) { return Value::string(ascii_upper(s)); });
  if (name == "lower") return fn([s](CallArgs&) { return Value::string(ascii_lower(s)); });
  if (name == "title") return fn([s](CallArgs&) { return Value::string(str_title(s)); });
  if (name == "capitalize") return fn([s](CallArgs&) { return Value::string(capitalize(s)); });
  if (name == "replace")
    return fn([s](CallArgs& a) {
      return Value::string(py_replace(s, need_string(a.get(0, "old"), "replace").s,
                                      need_string(a.get(1, "new"), "replace").s,
                                      a.get(2, "count", Value::integer(-1)).as_int()));
    });
  if (name == "find" || name == "rfind" || name == "index" || name == "count")
    return fn([s, name](CallArgs& a) {
      const std::string& x = need_string(a.get(0, "sub"), name.c_str()).s;
      if (name == "count") {
        if (x.empty()) return Value::integer(int64_t(utf8_length(s)) + 1);
        int64_t n = 0;
        for (size_t p = s.find(x); p != std::string::npos; p = s.find(x, p + x.size())) ++n;
        return Value::integer(n);
      }
      size_t p = name == "rfind" ? s.rfind(x) : s.find(x);
      if (p == std::string::npos) {
        if (name == "index") throw Error("substring not found");
        return Value::integer(-1);
      }
      return Value::integer(int64_t(utf8_length(s.substr(0, p))));
    });
  if (name == "join")
    return fn([s](CallArgs& a) {
      std::string out;
      bool first = true;
      Value seq = a.get(0, "iterable");
      if (!seq.is_list()) throw Error("join: expected a list");
      for (const auto& v : *seq.list) {
        out += (first ? "" : s) + need_string(v, "join").s;
        check_size(out.size(), "join");
        first = false;
      }
      return Value::string(out);
    });
  if (name == "format") return fn([s](CallArgs& a) { return Value::string(py_format(s, a)); });
  if (name == "isdigit" || name == "isalpha" || name == "isalnum" || name == "isspace" || name == "isupper" ||
      name == "islower")
    return fn([s, name](CallArgs&) {
      if (s.empty()) return Value::boolean(false);
      bool ok = true, cased = false;
      for (unsigned char c : s) {
        if (name == "isdigit") ok &= bool(std::isdigit(c));
        else if (name == "isalpha") ok &= bool(std::isalpha(c));
        else if (name == "isalnum") ok &= bool(std::isalnum(c));
        else if (name == "isspace") ok &= bool(std::isspace(c));
        else if (name == "isupper") ok &= !std::islower(c), cased |= bool(std::isupper(c));
        else ok &= !std::isupper(c), cased |= bool(std::islower(c));
      }
      return Value::boolean(ok && (name != "isupper" && name != "islower" ? true : cased));
    });
  return Value::undefined(name);
}

Value dict_method(const Value& self, const std::string& name) {
  auto d = self.dict;
  if (name == "items")
    return Value::function([d](CallArgs&) {
      List out;
      for (const auto& [k, v] : d->items) out.push_back(Value::tuple({k, v}));
      return Value::new_list(out);
    });
  if (name == "keys")
    return Value::function([d](CallArgs&) {
      List out;
      for (const auto& [k, v] : d->items) out.push_back(k);
      return Value::new_list(out);
    });
  if (name == "values")
    return Value::function([d](CallArgs&) {
      List out;
      for (const auto& [k, v] : d->items) out.push_back(v);
      return Value::new_list(out);
    });
  if (name == "get")
    return Value::function([d](CallArgs& a) {
      Value key = a.get(0, "key");
      const Value* v = d->find(key);
      return v ? *v : a.get(1, "default", Value::none());
    });
  if (name == "copy")
    return Value::function([d](CallArgs&) {
      Value out = Value::new_dict();
      *out.dict = *d;
      return out;
    });
  if (name == "update" || name == "pop" || name == "setdefault" || name == "clear" || name == "popitem")
    return Value::function([name](CallArgs&) -> Value {
      throw Error("access to attribute '" + name + "' of 'dict' object is unsafe (immutable sandbox)");
    });
  return Value::undefined(name);
}

Value list_method(const Value& self, const std::string& name) {
  auto l = self.list;
  if (name == "index")
    return Value::function([l](CallArgs& a) {
      Value x = a.get(0, "value");
      for (size_t k = 0; k < l->size(); ++k)
        if (equals((*l)[k], x)) return Value::integer(int64_t(k));
      throw Error(to_repr(x) + " is not in list");
    });
  if (name == "count")
    return Value::function([l](CallArgs& a) {
      Value x = a.get(0, "value");
      int64_t n = 0;
      for (const auto& v : *l) n += equals(v, x);
      return Value::integer(n);
    });
  if (name == "copy") return Value::function([l](CallArgs&) { return Value::new_list(*l); });
  if (name == "append" || name == "extend" || name == "insert" || name == "pop" || name == "remove" ||
      name == "sort" || name == "reverse" || name == "clear")
    return Value::function([name](CallArgs&) -> Value {
      throw Error("access to attribute '" + name + "' of 'list' object is unsafe (immutable sandbox)");
    });
  return Value::undefined(name);
}

[[noreturn]] void undefined_error(const Value& v) {
  throw Error("'" + (v.s.empty() ? std::string("value") : v.s) + "' is undefined");
}

int64_t length_of(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined: return 0;
    case Kind::String: return int64_t(utf8_length(v.s));
    case Kind::List:
      if (v.is_generator) throw Error("object of type 'generator' has no len()");
      return int64_t(v.list->size());
    case Kind::Dict: return int64_t(v.dict->items.size());
    default: throw Error(std::string("object of type '") + v.type_name() + "' has no len()");
  }
}

List to_list(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined: return {};
    case Kind::List: return v.is_generator ? consume(v) : *v.list;
    case Kind::Dict: {
      List out;
      for (const auto& [k, e] : v.dict->items) out.push_back(k);
      return out;
    }
    case Kind::String: {
      List out;
      for (char32_t c : utf8_decode(v.s)) out.push_back(Value::string(utf8_encode(std::u32string(1, c))));
      return out;
    }
    default: throw Error(std::string("'") + v.type_name() + "' object is not iterable");
  }
}

// jinja2's attribute= argument: dotted path, integer parts index lists.
Value attr_path(const Value& v, const Value& attribute) {
  if (attribute.is_int_like()) return get_item(v, attribute);
  Value cur = v;
  std::string path = to_str(attribute);
  size_t st = 0;
  while (true) {
    size_t dot = path.find('.', st);
    std::string part = path.substr(st, dot == std::string::npos ? std::string::npos : dot - st);
    bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
    cur = numeric ? get_item(cur, Value::integer(std::stoll(part))) : get_item(cur, Value::string(part));
    if (dot == std::string::npos) return cur;
    st = dot + 1;
  }
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// Arguments after the first (the test name) for select/reject/selectattr/rejectattr.
CallArgs rest_args(const CallArgs& a, size_t from) {
  CallArgs r;
  for (size_t k = from; k < a.pos.size(); ++k) r.pos.push_back(a.pos[k]);
  return r;
}

Value sort_key(const Value& v, const Value& attribute, bool case_sensitive) {
  Value k = attribute.is_undefined() || attribute.is_none() ? v : attr_path(v, attribute);
  if (!case_sensitive && k.is_string()) return Value::string(ascii_lower(k.s));
  return k;
}

std::string strftime_now(const std::string& fmt) {
  std::time_t t = g_fixed_now ? std::time_t(g_fixed_now) : std::time(nullptr);
  std::tm tm{};
  if (g_fixed_now) gmtime_r(&t, &tm);
  else localtime_r(&t, &tm);
  char buf[512];
  size_t n = std::strftime(buf, sizeof buf, fmt.c_str(), &tm);
  return std::string(buf, n);
}

}  // namespace

Value add_strings(const Value& a, const Value& b) {
  if (!a.is_markup && !b.is_markup) return Value::string(a.s + b.s);
  return Value::markup((a.is_markup ? a.s : html_escape(a.s)) + (b.is_markup ? b.s : html_escape(b.s)));
}

void set_fixed_now(long long unix_seconds) { g_fixed_now = unix_seconds; }

std::string py_strip(const std::string& s, const Value& chars, bool left, bool right) {
  std::u32string cs = utf8_decode(s);
  std::u32string set;
  bool ws = chars.is_none() || chars.is_undefined();
  if (!ws) set = utf8_decode(need_string(chars, "strip").s);
  auto strip_it = [&](char32_t c) { return ws ? is_py_space(c) : set.find(c) != std::u32string::npos; };
  size_t b = 0, e = cs.size();
  if (left)
    while (b < e && strip_it(cs[b])) ++b;
  if (right)
    while (e > b && strip_it(cs[e - 1])) --e;
  if (b == 0 && e == cs.size()) return s;
  return utf8_encode(cs.substr(b, e - b));
}

bool contains(const Value& container, const Value& item) {
  switch (container.kind) {
    case Kind::Undefined: return false;
    case Kind::String:
      if (!item.is_string())
        throw Error(std::string("'in <string>' requires string as left operand, not ") + item.type_name());
      return container.s.find(item.s) != std::string::npos;
    case Kind::List:
      for (const auto& v : *container.list)
        if (equals(v, item)) return true;
      return false;
    case Kind::Dict:
      if (container.is_namespace) break;
      return container.dict->find(item) != nullptr;
    default: break;
  }
  throw Error(std::string("argument of type '") + container.type_name() + "' is not iterable");
}

Value get_attribute(const Value& subject, const std::string& name) {
  switch (subject.kind) {
    case Kind::Undefined: undefined_error(subject);
    case Kind::String: {
      Value m = string_method(subject, name);
      return m.is_undefined() ? Value::undefined(name) : m;
    }
    case Kind::Dict: {
      if (!subject.is_namespace) {
        Value m = dict_method(subject, name);
        if (!m.is_undefined()) return m;
      }
      const Value* v = subject.dict->find(name);
      return v ? *v : Value::undefined(name);
    }
    case Kind::List: {
      Value m = list_method(subject, name);
      return m.is_undefined() ? Value::undefined(name) : m;
    }
    default: return Value::undefined(name);
  }
}

Value get_item(const Value& subject, const Value& key) {
  switch (subject.kind) {
    case Kind::Undefined: undefined_error(subject);
    case Kind::Dict:
      if (const Value* v = subject.dict->find(key)) return *v;
      return key.is_string() ? get_attribute(subject, key.s) : Value::undefined();
    case Kind::List:
    case Kind::String:
      if (subject.is_generator) return Value::undefined();  // jinja2: a generator has no items
      if (key.is_int_like()) {
        int64_t n = length_of(subject);
        int64_t k = key.as_int();
        if (k < 0) k += n;
        if (k < 0 || k >= n) return Value::undefined();
        if (subject.is_list()) return (*subject.list)[size_t(k)];
        return Value::string(utf8_encode(std::u32string(1, utf8_decode(subject.s)[size_t(k)])));
      }
      if (key.is_string()) return get_attribute(subject, key.s);
      return Value::undefined();
    default: return Value::undefined();
  }
}

bool has_test(const std::string& name) {
  static const char* names[] = {"defined", "undefined", "none", "string", "mapping", "iterable", "sequence",
                                "number", "integer", "float", "boolean", "true", "false", "equalto", "eq",
                                "==", "ne", "!=", "lt", "<", "le", "<=", "gt", ">", "ge", ">=", "lessthan",
                                "greaterthan", "in", "odd", "even", "divisibleby", "callable", "sameas",
                                "lower", "upper", "escaped", "filter", "test"};
  return std::find(std::begin(names), std::end(names), name) != std::end(names);
}

bool apply_test(Renderer& r, const std::string& name, const Value& v, CallArgs& a) {
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_mapping();
  if (name == "iterable") return v.is_undefined() || v.is_string() || v.is_list() || v.is_mapping();
  if (name == "sequence") return v.is_undefined() || v.is_string() || (v.is_list() && !v.is_generator) || v.is_mapping();
  if (name == "number") return v.is_numeric();
  if (name == "integer") return v.kind == Kind::Int;
  if (name == "float") return v.kind == Kind::Float;
  if (name == "boolean") return v.kind == Kind::Bool;
  if (name == "true") return v.kind == Kind::Bool && v.b;
  if (name == "false") return v.kind == Kind::Bool && !v.b;
  if (name == "callable") return v.kind == Kind::Function;
  if (name == "escaped") return false;
  if (name == "lower") return v.is_string() && ascii_lower(v.s) == v.s;
  if (name == "upper") return v.is_string() && ascii_upper(v.s) == v.s;
  Value other = a.get(0, "other");
  if (name == "equalto" || name == "eq" || name == "==") return equals(v, other);
  if (name == "ne" || name == "!=") return !equals(v, other);
  if (name == "lt" || name == "<" || name == "lessthan") return less(v, other);
  if (name == "gt" || name == ">" || name == "greaterthan") return less(other, v);
  if (name == "le" || name == "<=") return !less(other, v);
  if (name == "ge" || name == ">=") return !less(v, other);
  if (name == "sameas") return equals(v, other) && v.kind == other.kind;
  if (name == "in") return contains(a.get(0, "seq"), v);
  if (name == "odd" || name == "even" || name == "divisibleby") {
    if (!v.is_int_like()) throw Error("test '" + name + "' needs an integer, got '" + v.type_name() + "'");
    int64_t x = v.as_int();
    if (name == "odd") return x % 2 != 0;
    if (name == "even") return x % 2 == 0;
    int64_t d = a.get(0, "num").as_int();
    if (d == 0) throw Error("integer division or modulo by zero");
    return x % d == 0;
  }
  if (name == "filter") return has_filter(to_str(v));
  if (name == "test") return has_test(to_str(v));
  throw Error("no test named '" + name + "'");
}

bool has_filter(const std::string& name) {
  static const char* names[] = {
      "trim", "upper", "lower", "length", "count", "first", "last", "join", "default", "d", "tojson", "string",
      "int", "float", "list", "items", "selectattr", "rejectattr", "select", "reject", "map", "replace", "safe",
      "capitalize", "title", "reverse", "sort", "unique", "escape", "e", "abs", "round", "indent", "wordcount",
      "dictsort", "sum", "min", "max", "attr", "batch", "center", "truncate", "format", "forceescape", "striptags",
      "pprint"};
  return std::find(std::begin(names), std::end(names), name) != std::end(names);
}

Value apply_filter(Renderer& r, const std::string& name, const Value& v, CallArgs& a) {
  if (name == "default" || name == "d") {
    bool use = a.get(1, "boolean", Value::boolean(false)).truthy() ? !v.truthy() : v.is_undefined();
    return use ? a.get(0, "default_value", Value::string("")) : v;
  }
  if (name == "safe") return v.is_markup ? v : Value::markup(to_str(v));
  if (name == "string") return v.is_string() ? v : Value::string(to_str(v));
  // Markup's own str methods return Markup.
  const auto same_kind = [&](std::string s) { return v.is_markup ? Value::markup(std::move(s)) : Value::string(std::move(s)); };
  if (name == "trim") return same_kind(py_strip(to_str(v), a.get(0, "chars", Value::none()), true, true));
  if (name == "upper") return same_kind(ascii_upper(to_str(v)));
  if (name == "lower") return same_kind(ascii_lower(to_str(v)));
  if (name == "capitalize") return Value::string(capitalize(to_str(v)));
  if (name == "title") return Value::string(title(to_str(v)));
  if ((name == "escape" || name == "e") && v.is_markup) return v;
  if (name == "escape" || name == "e" || name == "forceescape") return Value::markup(html_escape(to_str(v)));
  if (name == "length" || name == "count") return Value::integer(length_of(v));
  if (name == "wordcount") {
    int64_t n = 0;
    bool in_word = false;
    for (unsigned char c : to_str(v)) {
      bool w = std::isalnum(c) || c == '_' || c >= 0x80;
      if (w && !in_word) ++n;
      in_word = w;
    }
    return Value::integer(n);
  }
  if (name == "tojson") {
    JsonOptions opt;
    opt.ensure_ascii = a.get(size_t(-1), "ensure_ascii", Value::boolean(false)).truthy();
    Value indent = a.get(size_t(-1), "indent", Value::none());
    if (indent.is_string()) opt.indent_str = indent.s, opt.indent = 0;
    else if (!indent.is_none()) opt.indent = int(indent.as_int());
    opt.sort_keys = a.get(size_t(-1), "sort_keys", Value::boolean(false)).truthy();
    Value seps = a.get(size_t(-1), "separators", Value::none());
    if (seps.is_list() && seps.list->size() == 2) {
      opt.item_sep = to_str((*seps.list)[0]);
      opt.key_sep = to_str((*seps.list)[1]);
    }
    if (!a.pos.empty()) throw Error("tojson: pass options by keyword (indent=...)");
    return Value::string(to_json(v, opt));
  }
  if (name == "int") {
    Value fallback = a.get(0, "default", Value::integer(0));
    if (v.is_int_like()) return Value::integer(v.as_int());
    if (v.kind == Kind::Float) return Value::integer(int64_t(v.f));
    if (v.is_string()) {
      std::string s = py_strip(v.s, Value::none(), true, true);
      try {
        size_t used = 0;
        int64_t x = std::stoll(s, &used, int(a.get(1, "base", Value::integer(10)).as_int()));
        if (used == s.size()) return Value::integer(x);
      } catch (const std::exception&) {
      }
      try {
        size_t used = 0;
        double x = std::stod(s, &used);
        if (used == s.size()) return Value::integer(int64_t(x));
      } catch (const std::exception&) {
      }
    }
    return fallback;
  }
  if (name == "float") {
    Value fallback = a.get(0, "default", Value::number(0.0));
    if (v.is_numeric()) return Value::number(v.as_double());
    if (v.is_string()) {
      try {
        std::string s = py_strip(v.s, Value::none(), true, true);
        size_t used = 0;
        double x = std::stod(s, &used);
        if (used == s.size()) return Value::number(x);
      } catch (const std::exception&) {
      }
    }
    return fallback;
  }
  if (name == "abs") {
    if (v.kind == Kind::Float) return Value::number(std::fabs(v.f));
    if (v.is_int_like()) return Value::integer(std::llabs(v.as_int()));
    throw Error(std::string("bad operand type for abs(): '") + v.type_name() + "'");
  }
  if (name == "round") {
    int64_t precision = a.get(0, "precision", Value::integer(0)).as_int();
    std::string method = to_str(a.get(1, "method", Value::string("common")));
    double scale = std::pow(10.0, double(precision));
    double x = v.as_double() * scale;
    double rounded = method == "ceil" ? std::ceil(x) : method == "floor" ? std::floor(x) : std::nearbyint(x);
    return Value::number(rounded / scale);
  }
  if (name == "list") return Value::new_list(to_list(v));
  if (name == "first" && v.is_generator) {  // next(iter(gen)): takes one item
    if (v.list->empty()) return Value::undefined(name);
    Value item = v.list->front();
    v.list->erase(v.list->begin());
    return item;
  }
  if (name == "last" && v.is_generator) throw Error("last: 'generator' object is not reversible");
  if (name == "first" || name == "last") {
    List items = to_list(v);
    if (items.empty()) return Value::undefined(name);
    return name == "first" ? items.front() : items.back();
  }
  if (name == "reverse") {
    if (v.is_string()) {
      std::u32string cs = utf8_decode(v.s);
      std::reverse(cs.begin(), cs.end());
      return Value::string(utf8_encode(cs));
    }
    List items = to_list(v);
    std::reverse(items.begin(), items.end());
    return Value::new_list(items);
  }
  if (name == "join") {
    std::string sep = to_str(a.get(0, "d", Value::string("")));
    Value attribute = a.get(1, "attribute", Value::none());
    std::string out;
    bool first = true;
    for (const auto& item : to_list(v)) {
      out += (first ? "" : sep) + to_str(attribute.is_none() ? item : attr_path(item, attribute));
      check_size(out.size(), "join");
      first = false;
    }
    return Value::string(out);
  }
  if (name == "items") {
    if (v.is_undefined()) return Value::new_list();
    if (!v.is_mapping()) throw Error("items: can only get item pairs from a mapping");
    List out;
    for (const auto& [k, e] : v.dict->items) out.push_back(Value::tuple({k, e}));
    return Value::new_list(out);
  }
  if (name == "dictsort") {
    if (!v.is_mapping()) throw Error("dictsort: expected a mapping");
    bool case_sensitive = a.get(0, "case_sensitive", Value::boolean(false)).truthy();
    std::string by = to_str(a.get(1, "by", Value::string("key")));
    bool rev = a.get(2, "reverse", Value::boolean(false)).truthy();
    List out;
    for (const auto& [k, e] : v.dict->items) out.push_back(Value::tuple({k, e}));
    size_t pos = by == "value" ? 1 : 0;
    std::stable_sort(out.begin(), out.end(), [&](const Value& x, const Value& y) {
      Value kx = sort_key((*x.list)[pos], Value::none(), case_sensitive);
      Value ky = sort_key((*y.list)[pos], Value::none(), case_sensitive);
      return rev ? less(ky, kx) : less(kx, ky);
    });
    return Value::new_list(out);
  }
  if (name == "replace") {
    return Value::string(py_replace(to_str(v), to_str(a.get(0, "old")), to_str(a.get(1, "new")),
                                    a.get(2, "count", Value::none()).is_none() ? -1 : a.get(2, "count").as_int()));
  }
  if (name == "sort" || name == "unique" || name == "min" || name == "max") {
    bool case_sensitive = a.get(name == "sort" ? 1 : 0, "case_sensitive", Value::boolean(false)).truthy();
    Value attribute = a.get(name == "sort" ? 2 : 1, "attribute", Value::none());
    List items = to_list(v);
    if (name == "unique") {
      List out, seen;
      for (const auto& item : items) {
        Value k = sort_key(item, attribute, case_sensitive);
        if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return equals(s, k); })) {
          seen.push_back(k);
          out.push_back(item);
        }
      }
      return Value::new_list(out);
    }
    if (name == "min" || name == "max") {
      if (items.empty()) return Value::undefined(name);
      auto cmp = [&](const Value& x, const Value& y) {
        return less(sort_key(x, attribute, case_sensitive), sort_key(y, attribute, case_sensitive));
      };
      return name == "min" ? *std::min_element(items.begin(), items.end(), cmp)
                           : *std::max_element(items.begin(), items.end(), cmp);
    }
    bool rev = a.get(0, "reverse", Value::boolean(false)).truthy();
    std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
      Value kx = sort_key(x, attribute, case_sensitive), ky = sort_key(y, attribute, case_sensitive);
      return rev ? less(ky, kx) : less(kx, ky);
    });
    return Value::new_list(items);
  }
  if (name == "sum") {
    Value attribute = a.get(0, "attribute", Value::none());
    Value total = a.get(1, "start", Value::integer(0));
    for (const auto& item : to_list(v)) {
      Value x = attribute.is_none() ? item : attr_path(item, attribute);
      if (!x.is_numeric() || !total.is_numeric()) throw Error("sum: values must be numbers");
      total = total.is_int_like() && x.is_int_like() ? Value::integer(total.as_int() + x.as_int())
                                                     : Value::number(total.as_double() + x.as_double());
    }
    return total;
  }
  if (name == "attr") return get_attribute(v, to_str(a.get(0, "name")));
  if (name == "selectattr" || name == "rejectattr" || name == "select" || name == "reject") {
    bool by_attr = name == "selectattr" || name == "rejectattr";
    bool keep_match = name == "selectattr" || name == "select";
    size_t test_pos = by_attr ? 1 : 0;
    List out;
    if (!v.truthy()) return Value::generator({});  // jinja2: `if value:` before iterating (none, "", 0)
    for (const auto& item : to_list(v)) {
      Value subject = by_attr ? attr_path(item, a.get(0, "attribute")) : item;
      bool ok;
      if (a.pos.size() > test_pos) {
        CallArgs targs = rest_args(a, test_pos + 1);
        ok = apply_test(r, to_str(a.pos[test_pos]), subject, targs);
      } else {
        ok = subject.truthy();
      }
      if (ok == keep_match) out.push_back(item);
    }
    return Value::generator(std::move(out));
  }
  if (name == "map") {
    List out;
    if (!v.truthy()) return Value::generator({});  // jinja2: `if value:` before iterating
    if (a.has(size_t(-1), "attribute")) {
      Value attribute = a.get(size_t(-1), "attribute");
      Value fallback = a.get(size_t(-1), "default");
      for (const auto& item : to_list(v)) {
        Value x = attr_path(item, attribute);
        out.push_back(x.is_undefined() && !fallback.is_undefined() ? fallback : x);
      }
      return Value::generator(std::move(out));
    }
    if (a.pos.empty()) throw Error("map: expected a filter name or attribute=");
    std::string filter = to_str(a.pos[0]);
    CallArgs fargs = rest_args(a, 1);
    fargs.kw = a.kw;
    for (const auto& item : to_list(v)) out.push_back(apply_filter(r, filter, item, fargs));
    return Value::generator(std::move(out));
  }
  if (name == "indent") {
    Value width = a.get(0, "width", Value::integer(4));
    if (!width.is_string()) check_size(size_t(std::max<int64_t>(0, width.as_int())), "indent");
    std::string unit = width.is_string() ? width.s : std::string(size_t(width.as_int()), ' ');
    bool first = a.get(1, "first", Value::boolean(false)).truthy();
    bool blank = a.get(2, "blank", Value::boolean(false)).truthy();
    std::string s = to_str(v) + "\n";
    std::vector<std::string> lines;
    size_t st = 0;
    for (size_t k = 0; k < s.size(); ++k) {
      if (s[k] == '\n' || s[k] == '\r') {
        lines.push_back(s.substr(st, k - st));
        if (s[k] == '\r' && k + 1 < s.size() && s[k + 1] == '\n') ++k;
        st = k + 1;
      }
    }
    std::string out = lines.empty() ? "" : lines[0];
    for (size_t k = 1; k < lines.size(); ++k) {
      out += "\n" + ((blank || !lines[k].empty()) ? unit : "") + lines[k];
      check_size(out.size(), "indent");
    }
    return Value::string(first ? unit + out : out);
  }
  if (name == "center") {
    int64_t width = a.get(0, "width", Value::integer(80)).as_int();
    std::string s = to_str(v);
    int64_t n = int64_t(utf8_length(s));
    if (n >= width) return Value::string(s);
    check_size(size_t(width), "center");
    int64_t total = width - n, left = total / 2 + (total & width & 1);
    return Value::string(std::string(size_t(left), ' ') + s + std::string(size_t(total - left), ' '));
  }
  if (name == "format") {
    CallArgs fa = a;
    return Value::string(py_format(to_str(v), fa));
  }
  if (name == "pprint") return Value::string(to_repr(v));
  throw Error("no filter named '" + name + "'");
}

Value make_globals() {
  Value g = Value::new_dict();
  g.dict->set("range", Value::function([](CallArgs& a) {
    int64_t start = 0, stop, step = 1;
    if (a.pos.size() == 1) {
      stop = a.pos[0].as_int();
    } else if (a.pos.size() >= 2) {
      start = a.pos[0].as_int();
      stop = a.pos[1].as_int();
      if (a.pos.size() > 2) step = a.pos[2].as_int();
    } else {
      throw Error("range expected at least 1 argument, got 0");
    }
    if (step == 0) throw Error("range() arg 3 must not be zero");
    List out;
    for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) {
      out.push_back(Value::integer(k));
      if (out.size() >= kMaxListItems)
        throw Error("range: more than " + std::to_string(kMaxListItems) + " items (the template engine's limit)");
    }
    return Value::new_list(out);
  }));
  g.dict->set("namespace", Value::function([](CallArgs& a) {
    Value ns = Value::new_dict();
    ns.is_namespace = true;
    for (const auto& v : a.pos) {
      if (!v.is_mapping()) throw Error("namespace() positional argument must be a mapping");
      for (const auto& [k, e] : v.dict->items) ns.dict->set(k, e);
    }
    for (const auto& [k, v] : a.kw) ns.dict->set(k, v);
    return ns;
  }));
  g.dict->set("dict", Value::function([](CallArgs& a) {
    Value d = Value::new_dict();
    for (const auto& [k, v] : a.kw) d.dict->set(k, v);
    return d;
  }));
  g.dict->set("raise_exception", Value::function([](CallArgs& a) -> Value {
    throw Error(to_str(a.get(0, "message")));
  }));
  g.dict->set("strftime_now", Value::function([](CallArgs& a) {
    return Value::string(strftime_now(to_str(a.get(0, "format"))));
  }));
  return g;
}

}  // namespace strata::jinja
