#include "runtime/grammar.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "runtime/grammar_regex.h"
#include "util/error.h"

namespace strata {

using ojson = nlohmann::ordered_json;

namespace {
[[noreturn]] void unsupported(const std::string& what) { throw Error("structured output: " + what); }
}  // namespace

// One compiled schema node. Nodes live in one vector shared by every copy of an acceptor.
struct SchemaNode {
  enum class Kind { any, any_object, object, array, string, number, integer, literals, one_of };
  Kind kind = Kind::any;
  std::vector<std::pair<std::string, const SchemaNode*>> properties;  // object: in emission order
  std::vector<std::vector<std::string>> keys;                         // object: {"\"name\""} per property (one literal)
  const SchemaNode* additional = nullptr;       // any_object: the schema of every value (nullptr: any)
  int min_properties = 0, max_properties = -1;  // any_object
  const SchemaNode* items = nullptr;            // array (nullptr: any)
  int min_items = 0, max_items = -1;
  int min_length = 0, max_length = -1;  // string, in characters
  std::unique_ptr<Regex> pattern;       // string: the value must match (nullptr: any)
  // number, integer: inclusive or exclusive bounds; multiple_of > 0 for integers; numbers with
  // bounds take no exponent, and at most max_fraction_digits decimals (-1: any).
  double minimum = -std::numeric_limits<double>::infinity(), maximum = std::numeric_limits<double>::infinity();
  bool exclusive_minimum = false, exclusive_maximum = false;
  double multiple_of = 0;
  int max_fraction_digits = -1;
  std::vector<std::string> literals;       // literals: serialized JSON values (enum, const, true...)
  std::vector<const SchemaNode*> members;  // one_of

  bool bounded() const { return std::isfinite(minimum) || std::isfinite(maximum); }
};

using Kind = SchemaNode::Kind;
using Nodes = std::vector<std::unique_ptr<SchemaNode>>;

struct JsonAcceptor::Frame {
  enum class Type { value, object, array, string, number, literal };
  Frame(Type t, const SchemaNode* n) : type(t), node(n) {}
  Type type;
  const SchemaNode* node;  // nullptr: any
  int phase = 0;
  int count = 0;     // object: property index; array: items; string: bytes; number: digits
  int ws = 0;        // whitespace characters in the current gap
  std::string text;  // literal: the prefix read so far; number: its text; string: a \u escape's digits
  const std::vector<std::string>* options = nullptr;  // literal
  std::vector<uint64_t> rx;                           // string with a pattern: the automaton's states (a bit set)
};

namespace {

using Frame = JsonAcceptor::Frame;
using Type = Frame::Type;

const std::vector<std::string> kTrue = {"true"}, kFalse = {"false"}, kNull = {"null"};

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// --- schema compilation

// Keywords that constrain a value in ways this grammar cannot: a schema using one is refused
// rather than silently producing output that may not validate.
// clang-format off
const char* const kUnsupportedKeywords[] = {
    "not", "if", "then", "else", "contains", "minContains", "maxContains", "prefixItems", "additionalItems",
    "patternProperties", "propertyNames", "dependentRequired", "dependentSchemas", "dependencies",
    "unevaluatedProperties", "unevaluatedItems"};
// clang-format on

// Regular expressions for the "format" values that have one; other formats are annotations.
const char* format_pattern(const std::string& format) {
  static const std::map<std::string, const char*> patterns = {
      {"date", R"(^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$)"},
      {"time", R"(^([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,9})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)?$)"},
      {"date-time",
       R"(^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,9})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$)"},
      {"uuid", R"(^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$)"},
      {"email", R"(^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}$)"},
      {"ipv4", R"(^((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$)"},
  };
  auto it = patterns.find(format);
  return it == patterns.end() ? nullptr : it->second;
}

// A non-negative integer keyword (minItems, maxLength, ...); def when absent.
int count_keyword(const ojson& s, const char* key, int def) {
  auto it = s.find(key);
  if (it == s.end()) return def;
  if (!it->is_number() || it->get<double>() < 0 || it->get<double>() != std::floor(it->get<double>()))
    unsupported(std::string("\"") + key + "\" must be a non-negative integer");
  return int(std::min(it->get<double>(), 1e9));
}

double number_keyword(const ojson& s, const char* key) {
  const ojson& v = s[key];
  if (!v.is_number()) unsupported(std::string("\"") + key + "\" must be a number");
  return v.get<double>();
}

class Compiler {
 public:
  Compiler(const ojson& root, Nodes& nodes) : root_(root), nodes_(nodes) {}

  const SchemaNode* compile(const ojson& s, int depth) {
    SchemaNode* n = make();
    if (depth > 32 || s.is_boolean() || !s.is_object()) return n;  // deep or recursive: any value
    if (auto ref = s.find("$ref"); ref != s.end() && ref->is_string()) return compile(resolve(*ref), depth + 1);
    for (const char* key : kUnsupportedKeywords)
      if (s.contains(key)) unsupported("the JSON schema keyword \"" + std::string(key) + "\" is not supported");
    if (auto u = s.find("uniqueItems"); u != s.end() && u->is_boolean() && u->get<bool>())
      unsupported("the JSON schema keyword \"uniqueItems\" is not supported");
    if (auto all = s.find("allOf"); all != s.end()) return compile(merge_all_of(s), depth + 1);
    if (auto e = s.find("enum"); e != s.end() && e->is_array() && !e->empty()) {
      n->kind = Kind::literals;
      for (const auto& v : *e) n->literals.push_back(v.dump());
      return n;
    }
    if (auto c = s.find("const"); c != s.end()) {
      n->kind = Kind::literals;
      n->literals.push_back(c->dump());
      return n;
    }
    for (const char* key : {"anyOf", "oneOf"})
      if (auto a = s.find(key); a != s.end() && a->is_array() && !a->empty()) {
        n->kind = Kind::one_of;
        for (const auto& m : *a) n->members.push_back(compile(m, depth + 1));
        return n;
      }
    if (auto t = s.find("type"); t != s.end() && t->is_array()) {
      n->kind = Kind::one_of;
      for (const auto& name : *t) {
        ojson one = s;
        one["type"] = name;
        n->members.push_back(compile(one, depth + 1));
      }
      return n;
    }
    if (auto t = s.find("type"); t != s.end() && !t->is_string())
      unsupported(std::string("\"type\" must be a string or an array of strings, not ") + t->type_name());
    std::string type = s.value("type", "");
    if (type.empty()) {  // untyped: what its keywords imply
      if (s.contains("properties") || s.contains("additionalProperties"))
        type = "object";
      else if (s.contains("items") || s.contains("minItems") || s.contains("maxItems"))
        type = "array";
      else if (s.contains("pattern") || s.contains("minLength") || s.contains("maxLength"))
        type = "string";
      else if (s.contains("minimum") || s.contains("maximum") || s.contains("exclusiveMinimum") ||
               s.contains("exclusiveMaximum") || s.contains("multipleOf"))
        type = "number";
    }
    if (type == "object") {
      compile_object(s, *n, depth);
    } else if (type == "array") {
      n->kind = Kind::array;
      if (auto items = s.find("items"); items != s.end()) {
        if (items->is_array()) unsupported("\"items\" as an array (tuple validation) is not supported");
        n->items = compile(*items, depth + 1);
      }
      n->min_items = count_keyword(s, "minItems", 0);
      n->max_items = count_keyword(s, "maxItems", -1);
      if (n->max_items >= 0 && n->max_items < n->min_items) unsupported("maxItems is below minItems");
    } else if (type == "string") {
      n->kind = Kind::string;
      n->min_length = count_keyword(s, "minLength", 0);
      n->max_length = count_keyword(s, "maxLength", -1);
      if (n->max_length >= 0 && n->max_length < n->min_length) unsupported("maxLength is below minLength");
      if (auto p = s.find("pattern"); p != s.end()) {
        if (!p->is_string()) unsupported("\"pattern\" must be a string");
        n->pattern = std::make_unique<Regex>(p->get<std::string>());
      } else if (auto f = s.find("format"); f != s.end() && f->is_string()) {
        if (const char* rx = format_pattern(f->get<std::string>())) n->pattern = std::make_unique<Regex>(rx);
      }
    } else if (type == "number" || type == "integer") {
      compile_number(s, *n, type == "integer");
    } else if (type == "boolean") {
      n->kind = Kind::literals;
      n->literals = {"true", "false"};
    } else if (type == "null") {
      n->kind = Kind::literals;
      n->literals = {"null"};
    } else if (!type.empty()) {
      unsupported("unknown JSON schema type \"" + type + "\"");
    }
    return n;
  }

 private:
  // Objects emit every listed property in the schema's order, and only those: that output is
  // valid whatever "required" and "additionalProperties" say. Without listed properties, keys
  // are free and additionalProperties (a schema, or false for none) constrains the values.
  void compile_object(const ojson& s, SchemaNode& n, int depth) {
    auto props = s.find("properties");
    const auto extra = s.find("additionalProperties");
    const bool no_extra = extra != s.end() && extra->is_boolean() && !extra->get<bool>();
    const int min_props = count_keyword(s, "minProperties", 0), max_props = count_keyword(s, "maxProperties", -1);
    if (props != s.end() && props->is_object() && !props->empty()) {
      n.kind = Kind::object;
      for (const auto& item : props->items()) {
        n.properties.emplace_back(item.key(), compile(item.value(), depth + 1));
        n.keys.push_back({ojson(item.key()).dump()});
      }
      const int n_props = int(n.properties.size());
      if (max_props >= 0 && max_props < n_props)
        unsupported("maxProperties below the number of listed properties is not supported");
      if (min_props > n_props) unsupported("minProperties above the number of listed properties is not supported");
      return;
    }
    if (no_extra) {  // only {}
      n.kind = Kind::object;
      if (min_props > 0) unsupported("minProperties with additionalProperties false and no properties");
      return;
    }
    n.kind = Kind::any_object;
    if (extra != s.end() && extra->is_object()) n.additional = compile(*extra, depth + 1);
    n.min_properties = min_props;
    n.max_properties = max_props;
    if (max_props >= 0 && max_props < min_props) unsupported("maxProperties is below minProperties");
  }

  void compile_number(const ojson& s, SchemaNode& n, bool integer) {
    n.kind = integer ? Kind::integer : Kind::number;
    if (s.contains("minimum")) n.minimum = number_keyword(s, "minimum");
    if (s.contains("maximum")) n.maximum = number_keyword(s, "maximum");
    // Draft 4 spells exclusive bounds as booleans beside minimum/maximum; later drafts as numbers.
    for (const bool lower : {true, false}) {
      const char* key = lower ? "exclusiveMinimum" : "exclusiveMaximum";
      auto it = s.find(key);
      if (it == s.end()) continue;
      double& bound = lower ? n.minimum : n.maximum;
      bool& exclusive = lower ? n.exclusive_minimum : n.exclusive_maximum;
      if (it->is_boolean()) {
        exclusive = it->get<bool>();
      } else {
        const double v = number_keyword(s, key);
        if (lower ? v >= bound : v <= bound) bound = v, exclusive = true;
      }
    }
    if (s.contains("multipleOf")) {
      const double m = number_keyword(s, "multipleOf");
      if (!(m > 0)) unsupported("\"multipleOf\" must be positive");
      if (m == std::floor(m)) {
        n.kind = Kind::integer;  // multiples of an integer are integers
        n.multiple_of = m;
      } else if (const double digits = -std::log10(m); std::fabs(digits - std::round(digits)) < 1e-9) {
        if (!integer) n.max_fraction_digits = int(std::round(digits));  // 0.1, 0.01, ...: a limit on decimals
      } else {
        unsupported("\"multipleOf\" " + ojson(m).dump() + " is not supported (use an integer or a power of ten)");
      }
    }
    if (n.kind == Kind::integer) {  // integer bounds, inclusive
      if (std::isfinite(n.minimum)) n.minimum = n.exclusive_minimum ? std::floor(n.minimum) + 1 : std::ceil(n.minimum);
      if (std::isfinite(n.maximum)) n.maximum = n.exclusive_maximum ? std::ceil(n.maximum) - 1 : std::floor(n.maximum);
      n.exclusive_minimum = n.exclusive_maximum = false;
    }
    if (n.minimum > n.maximum || (n.minimum == n.maximum && (n.exclusive_minimum || n.exclusive_maximum)))
      unsupported("no number lies within the schema's minimum and maximum");
  }

  // allOf: the members' keywords merged into one schema (properties and required united);
  // members that disagree on a keyword are refused.
  ojson merge_all_of(const ojson& s) {
    const ojson& all = s["allOf"];
    if (!all.is_array() || all.empty()) unsupported("\"allOf\" must be a non-empty array");
    ojson out = s;
    out.erase("allOf");
    for (const ojson& member_ref : all) {
      const ojson* member = &member_ref;
      for (int hops = 0; member->is_object() && member->contains("$ref") && hops < 8; ++hops) {
        if (!(*member)["$ref"].is_string()) unsupported("\"$ref\" must be a string");
        member = &resolve((*member)["$ref"].get<std::string>());
      }
      if (!member->is_object()) unsupported("each of \"allOf\" must be a schema object");
      for (const auto& item : member->items()) {
        const std::string& key = item.key();
        if (key == "$ref") continue;
        if (!out.contains(key)) {
          out[key] = item.value();
        } else if (key == "properties" && out[key].is_object() && item.value().is_object()) {
          for (const auto& p : item.value().items())
            if (!out[key].contains(p.key())) out[key][p.key()] = p.value();
        } else if (key == "required" && out[key].is_array() && item.value().is_array()) {
          for (const auto& r : item.value()) out[key].push_back(r);
        } else if (out[key] != item.value() && key != "title" && key != "description") {
          unsupported("\"allOf\" members that disagree on \"" + key + "\" are not supported");
        }
      }
    }
    return out;
  }

  SchemaNode* make() {
    if (nodes_.size() >= JsonAcceptor::kMaxSchemaNodes)
      unsupported("the JSON schema expands to more than " + std::to_string(JsonAcceptor::kMaxSchemaNodes) +
                  " parts after \"$ref\" expansion (the server's limit); refer to fewer definitions recursively");
    nodes_.push_back(std::make_unique<SchemaNode>());
    return nodes_.back().get();
  }
  const ojson& resolve(const std::string& ref) {
    for (const char* prefix : {"#/$defs/", "#/definitions/"}) {
      const std::string p = prefix;
      if (ref.compare(0, p.size(), p) != 0) continue;
      const auto defs = root_.find(p.substr(2, p.size() - 3));
      if (defs == root_.end() || !defs->is_object()) unsupported("unresolvable \"$ref\" \"" + ref + "\"");
      const auto def = defs->find(ref.substr(p.size()));
      if (def == defs->end()) unsupported("unresolvable \"$ref\" \"" + ref + "\"");
      return *def;
    }
    if (ref == "#") return root_;
    unsupported("\"$ref\" \"" + ref + "\" is not supported (only #, #/$defs/... and #/definitions/...)");
  }
  const ojson& root_;
  Nodes& nodes_;
};

Frame value_frame(const SchemaNode* node) { return Frame{Type::value, node}; }

Frame literal_frame(const std::vector<std::string>* options) {
  Frame f{Type::literal, nullptr};
  f.options = options;
  return f;
}

// The concrete frame a value of `node` starting with c becomes; false when none can.
bool start_value(const SchemaNode* node, char c, Frame& out) {
  const Kind k = node ? node->kind : Kind::any;
  switch (k) {
    case Kind::any:
      if (c == '{')
        out = Frame{Type::object, nullptr};
      else if (c == '[')
        out = Frame{Type::array, nullptr};
      else if (c == '"')
        out = Frame{Type::string, nullptr};
      else if (c == '-' || is_digit(c))
        out = Frame{Type::number, nullptr};
      else if (c == 't')
        out = literal_frame(&kTrue);
      else if (c == 'f')
        out = literal_frame(&kFalse);
      else if (c == 'n')
        out = literal_frame(&kNull);
      else
        return false;
      return true;
    case Kind::any_object:
    case Kind::object:
      if (c != '{') return false;
      out = Frame{Type::object, node};
      return true;
    case Kind::array:
      if (c != '[') return false;
      out = Frame{Type::array, node};
      return true;
    case Kind::string:
      if (c != '"') return false;
      out = Frame{Type::string, node};
      return true;
    case Kind::number:
    case Kind::integer:
      if (c != '-' && !is_digit(c)) return false;
      out = Frame{Type::number, node};
      return true;
    case Kind::literals:
      for (const auto& l : node->literals)
        if (!l.empty() && l[0] == c) {
          out = literal_frame(&node->literals);
          return true;
        }
      return false;
    case Kind::one_of:
      for (const SchemaNode* m : node->members)
        if (start_value(m, c, out)) return true;
      return false;
  }
  return false;
}

// Whitespace in a gap, as llama.cpp's JSON grammars allow it: nothing, one space, or a newline
// and up to kMaxWhitespace spaces or tabs of indentation. f.ws: 0 none yet, 1 a space, 2 + n
// a newline and n indents.
bool take_ws(Frame& f, char c) {
  if (f.ws == 0) {
    if (c == ' ') return f.ws = 1, true;
    if (c == '\n') return f.ws = 2, true;
    return false;
  }
  if (f.ws >= 2 && (c == ' ' || c == '\t') && f.ws - 2 < JsonAcceptor::kMaxWhitespace) return ++f.ws, true;
  return false;
}

// --- numeric bounds

// Whether some value in the interval [lo, hi] (each end open or closed) meets node's bounds.
bool overlaps(const SchemaNode& n, double lo, bool lo_closed, double hi, bool hi_closed) {
  double a = lo, b = hi;
  bool a_closed = lo_closed, b_closed = hi_closed;
  if (n.minimum > a || (n.minimum == a && n.exclusive_minimum)) a = n.minimum, a_closed = !n.exclusive_minimum;
  if (n.maximum < b || (n.maximum == b && n.exclusive_maximum)) b = n.maximum, b_closed = !n.exclusive_maximum;
  return a < b || (a == b && a_closed && b_closed);
}

// Whether the number text read so far (no exponent) can still become a value within node's
// bounds: the values it may become are the prefix's decimal extensions.
bool number_prefix_feasible(const SchemaNode& n, const std::string& text) {
  if (const size_t dot = text.find('.');
      dot != std::string::npos && n.max_fraction_digits >= 0 && int(text.size() - dot - 1) > n.max_fraction_digits)
    return false;
  if (!n.bounded()) return true;
  const bool neg = !text.empty() && text[0] == '-';
  const std::string body = text.substr(neg ? 1 : 0);
  const size_t dot = body.find('.');
  const std::string int_part = body.substr(0, dot);
  const bool integer = n.kind == Kind::integer;
  const double inf = std::numeric_limits<double>::infinity();
  // Magnitudes reachable, as intervals [a, b) (integers: [a, b - 1]).
  auto check = [&](double a, double b) {
    if (integer) {
      if (b - 1 < a) return false;
      return neg ? overlaps(n, -(b - 1), true, -a, true) : overlaps(n, a, true, b - 1, true);
    }
    return neg ? overlaps(n, -b, false, -a, true) : overlaps(n, a, true, b, false);
  };
  if (int_part.empty()) return check(0, inf);
  const double ip = std::stod(int_part);
  if (dot != std::string::npos) {
    const std::string frac = body.substr(dot + 1);
    const double scale = std::pow(10.0, -double(frac.size()));
    const double v = ip + (frac.empty() ? 0 : std::stod("0." + frac));
    return check(v, v + (frac.empty() ? 1 : scale));
  }
  if (int_part == "0") return check(0, 1);
  for (int k = 0; k + int(int_part.size()) <= JsonAcceptor::kMaxNumberDigits; ++k) {
    const double p = std::pow(10.0, k);
    if (check(ip * p, (ip + 1) * p)) return true;
  }
  return false;
}

// Whether the whole number text meets node's bounds, multipleOf and decimal limit.
bool number_within(const SchemaNode& n, const std::string& text) {
  if (n.max_fraction_digits >= 0) {
    const size_t dot = text.find('.');
    if (dot != std::string::npos && int(text.size() - dot - 1) > n.max_fraction_digits) return false;
  }
  if (!n.bounded() && n.multiple_of == 0) return true;
  const double v = std::strtod(text.c_str(), nullptr);
  if (v < n.minimum || (v == n.minimum && n.exclusive_minimum)) return false;
  if (v > n.maximum || (v == n.maximum && n.exclusive_maximum)) return false;
  return n.multiple_of == 0 || std::fmod(v, n.multiple_of) == 0;
}

}  // namespace

JsonAcceptor::JsonAcceptor() : JsonAcceptor(ojson{{"type", "object"}}) {}

JsonAcceptor::JsonAcceptor(const ojson& schema) {
  if (!schema.is_object()) throw Error("structured output: a JSON schema must be an object");
  auto nodes = std::make_shared<Nodes>();
  Compiler compiler(schema, *nodes);
  const SchemaNode* root = compiler.compile(schema, 0);
  nodes_ = nodes;
  stack_.push_back(value_frame(root));
}

JsonAcceptor::~JsonAcceptor() = default;
JsonAcceptor::JsonAcceptor(const JsonAcceptor&) = default;
JsonAcceptor::JsonAcceptor(JsonAcceptor&&) noexcept = default;
JsonAcceptor& JsonAcceptor::operator=(const JsonAcceptor&) = default;
JsonAcceptor& JsonAcceptor::operator=(JsonAcceptor&&) noexcept = default;

bool JsonAcceptor::feed(const std::string& text) {
  for (char c : text)
    if (!feed(c)) return false;
  return true;
}

bool JsonAcceptor::feed(char c) {
  // Each pass either consumes c (return) or finishes the top frame without consuming it (a
  // number or literal ended by the character after it) and offers c to the frame below.
  while (!stack_.empty()) {
    Frame& f = stack_.back();
    const SchemaNode* node = f.node;
    switch (f.type) {
      case Type::value: {
        if (take_ws(f, c)) return true;
        Frame next{Type::value, nullptr};
        if (!start_value(node, c, next)) return false;
        f = next;  // re-offer c to the concrete frame, whose phase 0 takes the opening character
        continue;
      }
      case Type::object: {
        // any: free keys (node nullptr or any_object); otherwise the listed properties in order.
        const bool any = node == nullptr || node->kind == Kind::any_object;
        const size_t n_props = any ? 0 : node->properties.size();
        const int min_props = any && node ? node->min_properties : 0;
        const int max_props = any && node ? node->max_properties : -1;
        switch (f.phase) {
          case 0:  // '{'
            if (c != '{') return false;
            f.phase = 1;
            return true;
          case 1:  // after '{': first key or '}'
            if (take_ws(f, c)) return true;
            if (c == '}' && (any ? min_props == 0 : n_props == 0)) return stack_.pop_back(), true;
            if (c != '"' || (any ? max_props == 0 : n_props == 0)) return false;
            f.ws = 0;
            f.phase = 2;
            if (any) {
              stack_.push_back(Frame{Type::string, nullptr});
            } else {
              stack_.push_back(literal_frame(&node->keys[size_t(f.count)]));
            }
            continue;  // the key frame takes the opening quote
          case 2:      // after a key: ':'
            if (take_ws(f, c)) return true;
            if (c != ':') return false;
            f.ws = 0;
            f.phase = 3;
            stack_.push_back(
                value_frame(any ? (node ? node->additional : nullptr) : node->properties[size_t(f.count)].second));
            return true;
          case 3: {  // after a value: ',' or '}'
            if (take_ws(f, c)) return true;
            const int n_done = f.count + 1;  // properties written
            if (c == ',' && (any ? max_props < 0 || n_done < max_props : size_t(n_done) < n_props)) {
              f.ws = 0;
              f.count++;
              f.phase = 4;
              return true;
            }
            if (c == '}' && (any ? n_done >= min_props : size_t(n_done) == n_props)) return stack_.pop_back(), true;
            return false;
          }
          case 4:  // after ',': the next key
            if (take_ws(f, c)) return true;
            if (c != '"') return false;
            f.ws = 0;
            f.phase = 2;
            if (any)
              stack_.push_back(Frame{Type::string, nullptr});
            else
              stack_.push_back(literal_frame(&node->keys[size_t(f.count)]));
            continue;
        }
        return false;
      }
      case Type::array: {
        const SchemaNode* items = node ? node->items : nullptr;
        const int min_items = node ? node->min_items : 0;
        const int max_items = node ? node->max_items : -1;
        switch (f.phase) {
          case 0:
            if (c != '[') return false;
            f.phase = 1;
            return true;
          case 1:  // after '[': an item or ']'
          case 3:  // after ',': an item
            if (take_ws(f, c)) return true;
            if (f.phase == 1 && c == ']' && min_items == 0) return stack_.pop_back(), true;
            if (f.phase == 1 && max_items == 0) return false;
            f.ws = 0;
            f.phase = 2;
            f.count++;
            stack_.push_back(value_frame(items));
            continue;
          case 2:  // after an item
            if (take_ws(f, c)) return true;
            if (c == ',' && (max_items < 0 || f.count < max_items)) {
              f.ws = 0;
              f.phase = 3;
              return true;
            }
            if (c == ']' && f.count >= min_items) return stack_.pop_back(), true;
            return false;
        }
        return false;
      }
      case Type::string: {
        const int max_len = node ? node->max_length : -1;
        const int min_len = node ? node->min_length : 0;
        const Regex* rx = node ? node->pattern.get() : nullptr;
        // The pattern sees the value's bytes: raw ones, and escapes decoded.
        auto to_pattern = [&](uint8_t b) { return !rx || rx->step(f.rx, b); };
        // Whether the pattern can take some byte in [lo, hi] next (so an escape may begin).
        const auto any_byte = [&](int lo, int hi) {
          for (int b = lo; b <= hi; ++b) {
            std::vector<uint64_t> trial = f.rx;
            if (rx->step(trial, uint8_t(b))) return true;
          }
          return false;
        };
        switch (f.phase) {
          case 0:
            if (c != '"') return false;
            if (rx) f.rx = rx->initial();
            f.phase = 1;
            return true;
          case 1:
            if (c == '"') {
              if (f.count < min_len) return false;
              if (rx && !rx->accepts(f.rx, /*at_start=*/f.count == 0)) return false;
              return stack_.pop_back(), true;
            }
            if ((unsigned char)c < 0x20) return false;
            if (max_len >= 0 && f.count >= max_len && ((unsigned char)c & 0xC0) != 0x80) return false;
            if (((unsigned char)c & 0xC0) != 0x80) f.count++;  // count characters, not bytes
            if (c == '\\') return f.phase = 2, !rx || any_byte(0, 0x7F);
            return to_pattern(uint8_t(c));
          case 2: {
            if (c == 'u') {
              f.phase = 3;
              f.text.clear();
              return !rx || any_byte(0, 0x7F);
            }
            static const std::string escapes = "\"\\/bfnrt", decoded = "\"\\/\b\f\n\r\t";
            const size_t e = escapes.find(c);
            if (e == std::string::npos) return false;
            f.phase = 1;
            return to_pattern(uint8_t(decoded[e]));
          }
          case 3: {
            if (!is_hex(c)) return false;
            f.text += c;
            if (!rx) {
              if (f.text.size() == 4) f.phase = 1;
              return true;
            }
            // Under a pattern only ASCII escapes (\u0000-\u007f), and only those it can take: each
            // digit must leave a byte the automaton steps on.
            const int v = int(std::stoul(f.text, nullptr, 16));
            if (f.text.size() < 3) return v == 0 && any_byte(0, 0x7F);
            if (f.text.size() == 3) return v <= 7 && any_byte(v << 4, v << 4 | 15);
            f.phase = 1;
            return to_pattern(uint8_t(v));
          }
        }
        return false;
      }
      case Type::number: {
        const bool integer = node && node->kind == Kind::integer;
        // Bounded numbers take no exponent (a prefix could never be judged); the end is checked.
        const bool exponent_ok = !(node && (node->bounded() || node->max_fraction_digits >= 0));
        const bool digit = is_digit(c);
        if (digit && ++f.count > kMaxNumberDigits) return false;
        // Near the digit limit nothing may start that needs another digit to end.
        const bool room = f.count + 2 <= kMaxNumberDigits;
        auto extend = [&](int phase) {
          f.text += c;
          if (node && !number_prefix_feasible(*node, f.text)) return false;
          f.phase = phase;
          return true;
        };
        // phases: 0 start, 1 after '-', 2 integer digits, 3 a leading 0, 4 after '.', 5 fraction
        // digits, 6 after 'e', 7 after the exponent's sign, 8 exponent digits.
        switch (f.phase) {
          case 0:
            if (c == '-') return extend(1);
            [[fallthrough]];
          case 1:
            if (!digit) return false;
            return extend(c == '0' ? 3 : 2);
          case 2:
          case 3:
            if (digit && f.phase == 2) return extend(2);
            if (digit) return false;  // no leading zeros
            if (!integer && room && c == '.' && (!node || node->max_fraction_digits != 0)) return extend(4);
            if (!integer && exponent_ok && room && (c == 'e' || c == 'E')) return extend(6);
            break;  // the number ended before c
          case 4:
            if (!digit) return false;
            return extend(5);
          case 5:
            if (digit) return extend(5);
            if (exponent_ok && room && (c == 'e' || c == 'E')) return extend(6);
            break;
          case 6:
            if (c == '+' || c == '-') return extend(7);
            [[fallthrough]];
          case 7:
            if (!digit) return false;
            return extend(8);
          case 8:
            if (digit) return extend(8);
            break;
        }
        if (node && !number_within(*node, f.text)) return false;
        stack_.pop_back();
        continue;
      }
      case Type::literal: {
        const std::string next = f.text + c;
        bool extends = false, longer = false;
        for (const auto& o : *f.options)
          if (o.compare(0, next.size(), next) == 0) {
            extends = true;
            if (o.size() > next.size()) longer = true;
          }
        if (extends) {
          f.text = next;
          if (!longer) stack_.pop_back();  // exactly one option, whole
          return true;
        }
        const bool whole = std::find(f.options->begin(), f.options->end(), f.text) != f.options->end();
        if (!whole) return false;
        stack_.pop_back();  // e.g. enum [1, 10] read "1" then ','
        continue;
      }
    }
  }
  return false;  // complete: nothing may follow
}

// --- JsonConstraint

JsonConstraint::JsonConstraint(const Tokenizer& tokenizer, JsonAcceptor acceptor)
    : JsonConstraint(tokenizer, std::vector<JsonAcceptor>{std::move(acceptor)}) {}

JsonConstraint::JsonConstraint(const Tokenizer& tokenizer, std::vector<JsonAcceptor> alternatives)
    : tokenizer_(tokenizer), alive_(std::move(alternatives)) {
  if (alive_.empty()) throw Error("structured output: a constraint needs at least one alternative");
  pieces_.resize(size_t(tokenizer.n_vocab()));
  have_piece_.assign(size_t(tokenizer.n_vocab()), false);
}

bool JsonConstraint::complete() const {
  return std::any_of(alive_.begin(), alive_.end(), [](const JsonAcceptor& a) { return a.complete(); });
}

const std::string& JsonConstraint::piece(Token token) {
  if (!have_piece_[size_t(token)]) {
    pieces_[size_t(token)] = tokenizer_.token_to_piece(token, /*special=*/false);
    have_piece_[size_t(token)] = true;
  }
  return pieces_[size_t(token)];
}

bool JsonConstraint::allows(Token token) {
  if (token < 0 || token >= tokenizer_.n_vocab()) return false;
  const std::string& text = piece(token);
  if (text.empty()) return false;
  for (const JsonAcceptor& a : alive_) {
    JsonAcceptor trial = a;
    if (trial.feed(text)) return true;
  }
  return false;
}

void JsonConstraint::accept(Token token) {
  if (token < 0 || token >= tokenizer_.n_vocab()) return;
  const std::string& text = piece(token);
  std::vector<JsonAcceptor> still;
  for (JsonAcceptor& a : alive_)
    if (a.feed(text)) still.push_back(std::move(a));
  if (!still.empty()) alive_ = std::move(still);  // a token no alternative takes was never allowed
}

}  // namespace strata
