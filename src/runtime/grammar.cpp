#include "runtime/grammar.h"

#include <algorithm>

#include "util/error.h"

namespace strata {

using ojson = nlohmann::ordered_json;

// One compiled schema node. Nodes live in one vector shared by every copy of an acceptor.
struct SchemaNode {
  enum class Kind { any, any_object, object, array, string, number, integer, literals, one_of };
  Kind kind = Kind::any;
  std::vector<std::pair<std::string, const SchemaNode*>> properties;  // object: in emission order
  std::vector<std::vector<std::string>> keys;                         // object: {"\"name\""} per property (one literal)
  const SchemaNode* items = nullptr;                                  // array (nullptr: any)
  int min_items = 0, max_items = -1;
  int min_length = 0, max_length = -1;     // string, in bytes
  std::vector<std::string> literals;       // literals: serialized JSON values (enum, const, true...)
  std::vector<const SchemaNode*> members;  // one_of
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
  std::string text;  // literal: the prefix read so far
  const std::vector<std::string>* options = nullptr;  // literal
};

namespace {

using Frame = JsonAcceptor::Frame;
using Type = Frame::Type;

const std::vector<std::string> kTrue = {"true"}, kFalse = {"false"}, kNull = {"null"};

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// --- schema compilation

class Compiler {
 public:
  Compiler(const ojson& root, Nodes& nodes) : root_(root), nodes_(nodes) {}

  const SchemaNode* compile(const ojson& s, int depth) {
    SchemaNode* n = make();
    if (depth > 32 || !s.is_object()) return n;  // deep or recursive: any value
    if (auto ref = s.find("$ref"); ref != s.end() && ref->is_string()) return compile(resolve(*ref), depth + 1);
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
    std::string type = s.value("type", "");
    if (type.empty() && s.contains("properties")) type = "object";
    if (type == "object") {
      auto props = s.find("properties");
      if (props == s.end() || !props->is_object() || props->empty()) {
        n->kind = Kind::any_object;
        return n;
      }
      n->kind = Kind::object;
      for (const auto& item : props->items()) {
        n->properties.emplace_back(item.key(), compile(item.value(), depth + 1));
        n->keys.push_back({ojson(item.key()).dump()});
      }
    } else if (type == "array") {
      n->kind = Kind::array;
      if (auto items = s.find("items"); items != s.end() && items->is_object()) n->items = compile(*items, depth + 1);
      n->min_items = s.value("minItems", 0);
      n->max_items = s.value("maxItems", -1);
    } else if (type == "string") {
      n->kind = Kind::string;
      n->min_length = s.value("minLength", 0);
      n->max_length = s.value("maxLength", -1);
    } else if (type == "number") {
      n->kind = Kind::number;
    } else if (type == "integer") {
      n->kind = Kind::integer;
    } else if (type == "boolean") {
      n->kind = Kind::literals;
      n->literals = {"true", "false"};
    } else if (type == "null") {
      n->kind = Kind::literals;
      n->literals = {"null"};
    }
    return n;
  }

 private:
  SchemaNode* make() {
    nodes_.push_back(std::make_unique<SchemaNode>());
    return nodes_.back().get();
  }
  const ojson& resolve(const std::string& ref) {
    static const ojson empty = ojson::object();
    for (const char* prefix : {"#/$defs/", "#/definitions/"}) {
      const std::string p = prefix;
      if (ref.compare(0, p.size(), p) != 0) continue;
      const auto defs = root_.find(p.substr(2, p.size() - 3));
      if (defs == root_.end() || !defs->is_object()) return empty;
      const auto def = defs->find(ref.substr(p.size()));
      return def == defs->end() ? empty : *def;
    }
    return ref == "#" ? root_ : empty;
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
      if (c != '{') return false;
      out = Frame{Type::object, nullptr};
      return true;
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
        const bool any = node == nullptr;
        const size_t n_props = any ? 0 : node->properties.size();
        switch (f.phase) {
          case 0:  // '{'
            if (c != '{') return false;
            f.phase = 1;
            return true;
          case 1:  // after '{': first key or '}'
            if (take_ws(f, c)) return true;
            if (any && c == '}') return stack_.pop_back(), true;
            if (c != '"') return false;
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
            stack_.push_back(value_frame(any ? nullptr : node->properties[size_t(f.count)].second));
            return true;
          case 3:  // after a value: ',' or '}'
            if (take_ws(f, c)) return true;
            if (c == ',' && (any || size_t(f.count) + 1 < n_props)) {
              f.ws = 0;
              f.count++;
              f.phase = 4;
              return true;
            }
            if (c == '}' && (any || size_t(f.count) + 1 == n_props)) return stack_.pop_back(), true;
            return false;
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
        switch (f.phase) {
          case 0:
            if (c != '"') return false;
            f.phase = 1;
            return true;
          case 1:
            if (c == '"') {
              if (f.count < min_len) return false;
              return stack_.pop_back(), true;
            }
            if ((unsigned char)c < 0x20) return false;
            if (max_len >= 0 && f.count >= max_len && ((unsigned char)c & 0xC0) != 0x80) return false;
            if (((unsigned char)c & 0xC0) != 0x80) f.count++;  // count characters, not bytes
            if (c == '\\') f.phase = 2;
            return true;
          case 2:
            if (c == 'u') {
              f.phase = 3;
              f.ws = 0;  // counts hex digits here
              return true;
            }
            if (std::string("\"\\/bfnrt").find(c) == std::string::npos) return false;
            f.phase = 1;
            return true;
          case 3:
            if (!is_hex(c)) return false;
            if (++f.ws == 4) f.phase = 1, f.ws = 0;
            return true;
        }
        return false;
      }
      case Type::number: {
        const bool integer = node && node->kind == Kind::integer;
        const bool digit = is_digit(c);
        if (digit && ++f.count > kMaxNumberDigits) return false;
        // Near the digit limit nothing may start that needs another digit to end.
        const bool room = f.count + 2 <= kMaxNumberDigits;
        // phases: 0 start, 1 after '-', 2 integer digits, 3 a leading 0, 4 after '.', 5 fraction
        // digits, 6 after 'e', 7 after the exponent's sign, 8 exponent digits.
        switch (f.phase) {
          case 0:
            if (c == '-') return f.phase = 1, true;
            [[fallthrough]];
          case 1:
            if (!digit) return false;
            f.phase = c == '0' ? 3 : 2;
            return true;
          case 2:
          case 3:
            if (digit && f.phase == 2) return true;
            if (digit) return false;  // no leading zeros
            if (!integer && room && c == '.') return f.phase = 4, true;
            if (!integer && room && (c == 'e' || c == 'E')) return f.phase = 6, true;
            break;  // the number ended before c
          case 4:
            if (!digit) return false;
            return f.phase = 5, true;
          case 5:
            if (digit) return true;
            if (room && (c == 'e' || c == 'E')) return f.phase = 6, true;
            break;
          case 6:
            if (c == '+' || c == '-') return f.phase = 7, true;
            [[fallthrough]];
          case 7:
            if (!digit) return false;
            return f.phase = 8, true;
          case 8:
            if (digit) return true;
            break;
        }
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
    : tokenizer_(tokenizer), acceptor_(std::move(acceptor)) {
  pieces_.resize(size_t(tokenizer.n_vocab()));
  have_piece_.assign(size_t(tokenizer.n_vocab()), false);
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
  JsonAcceptor trial = acceptor_;
  return trial.feed(text);
}

void JsonConstraint::accept(Token token) {
  if (token >= 0 && token < tokenizer_.n_vocab()) acceptor_.feed(piece(token));
}

}  // namespace strata
