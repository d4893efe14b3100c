#pragma once
// Template values with Python semantics: what jinja2 sees when transformers hands it JSON-like
// messages. Lists and dicts are shared (reference semantics, as in Python), which is what makes
// `namespace()` attribute assignment and loop objects work.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace strata::jinja {

// Bounds on one value (the renderer's own bounds are in render.h).
constexpr size_t kMaxValueBytes = size_t(64) << 20;  // one string, or a value's printed text
constexpr int kMaxValueDepth = 256;                   // lists and dicts inside each other, when walked

struct Value;
struct CallArgs;
using List = std::vector<Value>;
using Function = std::function<Value(CallArgs&)>;

// Insertion-ordered dict (Python dicts keep insertion order; JSON objects are small). Keys are
// strings but for dict literals such as `{0: 0, 512: 128}`; a key matches as Python's == does
// (1, 1.0 and True are one key).
struct Dict {
  std::vector<std::pair<Value, Value>> items;
  const Value* find(std::string_view key) const;
  Value* find(std::string_view key);
  const Value* find(const Value& key) const;
  Value* find(const Value& key);
  void set(const std::string& key, Value v);
  void set(const Value& key, Value v);  // throws strata::Error for an unhashable key (list, dict)
};

enum class Kind { Undefined, None, Bool, Int, Float, String, List, Dict, Function };

struct Value {
  Kind kind = Kind::Undefined;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;  // String payload; for Undefined, the name that was missing (for errors)
  std::shared_ptr<List> list;
  std::shared_ptr<Dict> dict;
  std::shared_ptr<Function> fn;
  bool is_tuple = false;      // a List written as a Python tuple: repr "(a, b)"
  bool is_markup = false;     // a String that is a markupsafe.Markup (from the safe / escape filters):
                              // `+` html-escapes a plain string joined to it (see add_strings)
  bool is_generator = false;  // a List standing for a Python generator (what map/select/reject return):
                              // always true, no len(), not JSON; iterating it empties it (see consume)
  bool is_namespace = false;  // a Dict made by namespace(): attributes assignable, not a mapping

  Value() = default;
  static Value undefined(std::string name = {});
  static Value none();
  static Value boolean(bool v);
  static Value integer(int64_t v);
  static Value number(double v);
  static Value string(std::string v);
  static Value new_list(List items = {});
  static Value tuple(List items);
  static Value generator(List items);
  static Value markup(std::string s);
  static Value new_dict();
  static Value function(Function f);
  static Value from_json(const nlohmann::ordered_json& j);  // keeps key order

  bool is_undefined() const { return kind == Kind::Undefined; }
  bool is_none() const { return kind == Kind::None; }
  bool is_string() const { return kind == Kind::String; }
  bool is_list() const { return kind == Kind::List; }
  bool is_dict() const { return kind == Kind::Dict; }
  bool is_mapping() const { return kind == Kind::Dict && !is_namespace; }
  bool is_int_like() const { return kind == Kind::Int || kind == Kind::Bool; }  // Python: bool is an int
  bool is_numeric() const { return is_int_like() || kind == Kind::Float; }
  int64_t as_int() const { return kind == Kind::Bool ? int64_t(b) : i; }
  double as_double() const { return kind == Kind::Float ? f : double(as_int()); }

  bool truthy() const;
  const char* type_name() const;  // Python's type name, for error messages
};

// Positional and keyword arguments of a call, filter or test (after the subject).
struct CallArgs {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
  // The argument at position `index` or named `name`; `fallback` when neither was given.
  Value get(size_t index, std::string_view name, Value fallback = Value::undefined()) const;
  bool has(size_t index, std::string_view name) const;
};

// The items of a generator, which is exhausted afterwards (Python iterates a generator once).
List consume(const Value& generator);

// Python's str() and repr() of a value; str(undefined) is "".
std::string to_str(const Value& v);
std::string to_repr(const Value& v);
std::string float_repr(double d);  // Python's float.__repr__

// json.dumps(v, ensure_ascii, indent, separators, sort_keys) as transformers' tojson calls it;
// indent < 0 means None.
struct JsonOptions {
  bool ensure_ascii = false;
  int indent = -1;
  std::string indent_str;  // used instead of spaces when indent was given as a string
  std::string item_sep, key_sep;  // empty: Python's defaults for the indent setting
  bool sort_keys = false;
};
std::string to_json(const Value& v, const JsonOptions& opt = {});

// Python ==, and < for sorting/comparison (throws strata::Error on unorderable types).
bool equals(const Value& a, const Value& b);
bool less(const Value& a, const Value& b);

// Strings are UTF-8; Python indexes them by code point.
std::u32string utf8_decode(std::string_view s);
std::string utf8_encode(std::u32string_view s);
size_t utf8_length(std::string_view s);

}  // namespace strata::jinja
