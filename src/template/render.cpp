#include "template/render.h"

#include <cmath>
#include <stdexcept>
#include <unordered_set>

#include "template/builtins.h"
#include "template/lexer.h"
#include "template/parser.h"
#include "template/template.h"
#include "util/error.h"

namespace strata::jinja {

namespace {

// An error that already names its template line; raised once, passed through unchanged.
class LocatedError : public Error {
 public:
  using Error::Error;
};

[[noreturn]] void type_error(const std::string& op, const Value& a, const Value& b) {
  if (a.is_undefined() || b.is_undefined()) {
    const Value& u = a.is_undefined() ? a : b;
    throw Error("'" + (u.s.empty() ? std::string("value") : u.s) + "' is undefined");
  }
  if (op == "+" && a.is_string())
    throw Error(std::string("can only concatenate str (not \"") + b.type_name() + "\") to str");
  if (op == "+" && a.is_list() && !a.is_tuple)
    throw Error(std::string("can only concatenate list (not \"") + b.type_name() + "\") to list");
  throw Error("unsupported operand type(s) for " + op + ": '" + a.type_name() + "' and '" + b.type_name() + "'");
}

int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

[[noreturn]] void limit_error(const std::string& what) {
  throw Error(what + " (the template engine's limit)");
}

// 'x' * n and [..] * n, checked before anything is allocated.
Value repeat(const Value& seq, int64_t n) {
  n = std::max<int64_t>(n, 0);
  if (seq.is_string() && !seq.s.empty() && uint64_t(n) > kMaxValueBytes / seq.s.size())
    limit_error("string repetition: the result would be larger than " + std::to_string(kMaxValueBytes >> 20) + " MiB");
  if (seq.is_list() && !seq.list->empty()) {
    size_t item_bytes = 0;
    for (const Value& v : *seq.list) item_bytes += v.is_string() ? v.s.size() : 0;
    if (uint64_t(n) > kMaxListItems / seq.list->size() || (item_bytes && uint64_t(n) > kMaxValueBytes / item_bytes))
      limit_error("list repetition: the result would hold more than " + std::to_string(kMaxListItems) +
                  " items or " + std::to_string(kMaxValueBytes >> 20) + " MiB");
  }
  if (seq.is_string()) {
    std::string out;
    for (int64_t k = 0; k < n; ++k) out += seq.s;
    return Value::string(out);
  }
  List out;
  for (int64_t k = 0; k < n; ++k) out.insert(out.end(), seq.list->begin(), seq.list->end());
  return seq.is_tuple ? Value::tuple(out) : Value::new_list(out);
}

}  // namespace

Renderer::Renderer(const Dict& variables) {
  Value globals = make_globals();
  for (const auto& [k, v] : variables.items) globals.dict->set(k, v);
  push_frame(globals.dict);
  push_frame(std::make_shared<Dict>());  // top-level `set`s
}

void Renderer::push_frame(Frame frame) {
  made_frames_.push_back(frame);
  frames_.push_back(std::move(frame));
}

// A macro holds the scopes it was defined in, one of which holds the macro; a namespace can hold
// itself. Those cycles of shared pointers would outlive the render, leaking on every request:
// emptying every frame and namespace the render made breaks them. (The caller's lists and dicts
// are left as they were.)
Renderer::~Renderer() {
  std::unordered_set<const void*> seen;
  std::vector<std::shared_ptr<Dict>> to_clear;
  std::vector<const Value*> pending;
  for (const auto& weak : made_frames_)
    if (auto frame = weak.lock(); frame && seen.insert(frame.get()).second) {
      for (const auto& [k, v] : frame->items) pending.push_back(&v);
      to_clear.push_back(std::move(frame));
    }
  while (!pending.empty()) {
    const Value* v = pending.back();
    pending.pop_back();
    if (v->list && seen.insert(v->list.get()).second)
      for (const Value& e : *v->list) pending.push_back(&e);
    if (v->dict && seen.insert(v->dict.get()).second) {
      for (const auto& [k, e] : v->dict->items) pending.push_back(&e);
      if (v->is_namespace) to_clear.push_back(v->dict);
    }
  }
  for (const auto& d : to_clear) d->items.clear();
}

std::string Renderer::render(const Body& body) {
  std::string out;
  exec(body, out);
  return out;
}

Value Renderer::lookup(const std::string& name) const {
  for (auto it = frames_.rbegin(); it != frames_.rend(); ++it)
    if (const Value* v = (*it)->find(name)) return *v;
  return Value::undefined(name);
}

void Renderer::assign(const std::string& name, Value v) { frames_.back()->set(name, std::move(v)); }

void Renderer::count_step() {
  if (++steps_ > kMaxRenderSteps)
    limit_error("the template ran more than " + std::to_string(kMaxRenderSteps) + " steps");
}

Renderer::Flow Renderer::exec(const Body& body, std::string& out) {
  for (const auto& s : body) {
    count_step();
    Flow f = exec_stmt(*s, out);
    if (out.size() > kMaxRenderOutputBytes)
      limit_error("the template's output is larger than " + std::to_string(kMaxRenderOutputBytes >> 20) + " MiB");
    if (f != Flow::Normal) return f;
  }
  return Flow::Normal;
}

Renderer::Flow Renderer::exec_stmt(const Stmt& s, std::string& out) {
  line_ = s.line;
  try {
    switch (s.kind) {
      case StmtKind::Text: out += s.text; break;
      case StmtKind::Output: out += to_str(eval(*s.expr)); break;
      case StmtKind::If:
        for (const auto& [cond, body] : s.branches) {
          if (eval(*cond).truthy()) return exec(body, out);
        }
        return exec(s.else_body, out);
      case StmtKind::For: return exec_for(s, out);
      case StmtKind::Set:
        if (s.expr) {
          exec_set(s, eval(*s.expr));
        } else {
          std::string captured;
          exec(s.body, captured);
          exec_set(s, Value::string(captured));
        }
        break;
      case StmtKind::Macro: assign(s.text, make_macro(s)); break;
      case StmtKind::CallBlock: {
        Stmt caller_def;  // the call block's body as an anonymous macro named `caller`
        const Expr& call_expr = *s.expr;
        Value callee = eval(*call_expr.a);
        CallArgs args;
        eval_args(call_expr.args, args);
        std::vector<Frame> scope = frames_;
        const Stmt* block = &s;
        args.kw.emplace_back("caller", Value::function([this, scope, block](CallArgs& a) {
          auto saved = frames_;
          frames_ = scope;
          push_frame(std::make_shared<Dict>());
          for (size_t k = 0; k < block->params.size(); ++k) {
            Value v = a.get(k, block->params[k].name);
            if (v.is_undefined() && block->params[k].fallback) v = eval(*block->params[k].fallback);
            assign(block->params[k].name, v);
          }
          std::string body_out;
          try {
            exec(block->body, body_out);
          } catch (...) {
            frames_ = saved;
            throw;
          }
          frames_ = saved;
          return Value::string(body_out);
        }));
        line_ = s.line;
        out += to_str(call(callee, args));
        break;
      }
      case StmtKind::FilterBlock: {
        std::string captured;
        exec(s.body, captured);
        const Expr& f = *s.expr;
        CallArgs args;
        eval_args(f.args, args);
        out += to_str(apply_filter(*this, f.name, Value::string(captured), args));
        break;
      }
      case StmtKind::Break:
        if (loop_depth_ == 0) throw Error("'break' outside of a loop");
        return Flow::Break;
      case StmtKind::Continue:
        if (loop_depth_ == 0) throw Error("'continue' outside of a loop");
        return Flow::Continue;
    }
  } catch (const LocatedError&) {
    throw;
  } catch (const Error& e) {
    throw LocatedError("template error at line " + std::to_string(line_) + ": " + e.what());
  }
  return Flow::Normal;
}

void Renderer::exec_set(const Stmt& s, Value v) {
  if (!s.text.empty()) {  // {% set ns.attr = v %}
    Value ns = lookup(s.targets[0]);
    if (!(ns.is_dict() && ns.is_namespace))
      throw Error("cannot assign attribute on non-namespace object '" + s.targets[0] + "'");
    ns.dict->set(s.text, std::move(v));
    return;
  }
  if (s.targets.size() == 1) {
    assign(s.targets[0], std::move(v));
    return;
  }
  if (!v.is_list() || v.list->size() != s.targets.size())
    throw Error("cannot unpack " + std::string(v.type_name()) + " into " + std::to_string(s.targets.size()) +
                " names");
  for (size_t k = 0; k < s.targets.size(); ++k) assign(s.targets[k], (*v.list)[k]);
}

static List iterate(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined: return {};
    case Kind::List: return v.is_generator ? consume(v) : *v.list;
    case Kind::Dict: {
      if (v.is_namespace) break;
      List keys;
      for (const auto& [k, e] : v.dict->items) keys.push_back(k);
      return keys;
    }
    case Kind::String: {
      List chars;
      for (char32_t c : utf8_decode(v.s)) chars.push_back(Value::string(utf8_encode(std::u32string(1, c))));
      return chars;
    }
    default: break;
  }
  throw Error(std::string("'") + v.type_name() + "' object is not iterable");
}

Renderer::Flow Renderer::exec_for(const Stmt& s, std::string& out) {
  List all = iterate(eval(*s.expr));
  auto bind_targets = [&](const Value& item) {
    if (s.targets.size() == 1) {
      assign(s.targets[0], item);
      return;
    }
    List parts = iterate(item);
    if (parts.size() != s.targets.size())
      throw Error("cannot unpack " + std::to_string(parts.size()) + " values into " +
                  std::to_string(s.targets.size()) + " loop variables");
    for (size_t k = 0; k < parts.size(); ++k) assign(s.targets[k], parts[k]);
  };
  List items;
  if (s.cond) {  // `for x in xs if cond`: filtered before loop.length is known
    for (const auto& item : all) {
      count_step();
      push_frame(std::make_shared<Dict>());
      bind_targets(item);
      bool keep = eval(*s.cond).truthy();
      frames_.pop_back();
      if (keep) items.push_back(item);
    }
  } else {
    items = std::move(all);
  }
  if (items.empty()) return exec(s.else_body, out);

  ++loop_depth_;
  const int64_t n = int64_t(items.size());
  for (int64_t k = 0; k < n; ++k) {
    count_step();  // an iteration is a step even when its body is empty
    Value loop = Value::new_dict();
    Dict& d = *loop.dict;
    d.set("index", Value::integer(k + 1));
    d.set("index0", Value::integer(k));
    d.set("revindex", Value::integer(n - k));
    d.set("revindex0", Value::integer(n - k - 1));
    d.set("first", Value::boolean(k == 0));
    d.set("last", Value::boolean(k == n - 1));
    d.set("length", Value::integer(n));
    d.set("depth", Value::integer(1));
    d.set("depth0", Value::integer(0));
    d.set("previtem", k > 0 ? items[k - 1] : Value::undefined("previtem"));
    d.set("nextitem", k + 1 < n ? items[k + 1] : Value::undefined("nextitem"));
    d.set("cycle", Value::function([k](CallArgs& a) {
      if (a.pos.empty()) throw Error("no items for cycling given");
      return a.pos[size_t(k) % a.pos.size()];
    }));
    push_frame(std::make_shared<Dict>());
    assign("loop", loop);
    Flow f;
    try {
      bind_targets(items[k]);
      f = exec(s.body, out);
    } catch (...) {
      frames_.pop_back();
      --loop_depth_;
      throw;
    }
    frames_.pop_back();
    if (f == Flow::Break) break;
  }
  --loop_depth_;
  return Flow::Normal;
}

Value Renderer::make_macro(const Stmt& s) {
  std::vector<Frame> scope = frames_;
  const Stmt* def = &s;
  return Value::function([this, scope, def](CallArgs& a) {
    if (call_depth_ >= kMaxCallDepth)
      limit_error("macro '" + def->text + "' called more than " + std::to_string(kMaxCallDepth) + " deep");
    ++call_depth_;
    struct Leave {
      int& depth;
      ~Leave() { --depth; }
    } leave{call_depth_};
    auto saved = frames_;
    int saved_depth = loop_depth_;
    frames_ = scope;
    push_frame(std::make_shared<Dict>());
    loop_depth_ = 0;
    std::string body_out;
    try {
      if (a.pos.size() > def->params.size())
        throw Error("macro '" + def->text + "' takes not more than " + std::to_string(def->params.size()) +
                    " argument(s)");
      for (size_t k = 0; k < def->params.size(); ++k) {
        const Param& p = def->params[k];
        Value v = a.get(k, p.name);
        if (!a.has(k, p.name)) v = p.fallback ? eval(*p.fallback) : Value::undefined(p.name);
        assign(p.name, v);
      }
      for (const auto& [k, v] : a.kw) {
        if (k == "caller") assign("caller", v);
      }
      exec(def->body, body_out);
    } catch (...) {
      frames_ = saved;
      loop_depth_ = saved_depth;
      throw;
    }
    frames_ = saved;
    loop_depth_ = saved_depth;
    return Value::string(body_out);
  });
}

void Renderer::eval_args(const std::vector<Arg>& args, CallArgs& out) {
  for (const auto& a : args) {
    if (a.name.empty()) out.pos.push_back(eval(*a.value));
    else out.kw.emplace_back(a.name, eval(*a.value));
  }
}

Value Renderer::call(const Value& fn, CallArgs& args) {
  if (fn.kind != Kind::Function) {
    if (fn.is_undefined()) throw Error("'" + (fn.s.empty() ? std::string("value") : fn.s) + "' is undefined");
    throw Error(std::string("'") + fn.type_name() + "' object is not callable");
  }
  return (*fn.fn)(args);
}

Value Renderer::eval(const Expr& e) {
  count_step();
  Value v = eval_expr(e);
  if (v.is_string() && v.s.size() > kMaxValueBytes)
    limit_error("a string is larger than " + std::to_string(kMaxValueBytes >> 20) + " MiB");
  return v;
}

Value Renderer::eval_expr(const Expr& e) {
  if (e.line > 0) line_ = e.line;
  switch (e.kind) {
    case ExprKind::Literal: return e.value;
    case ExprKind::Name: return lookup(e.name);
    case ExprKind::List:
    case ExprKind::Tuple: {
      List items;
      for (const auto& it : e.items) items.push_back(eval(*it));
      return e.kind == ExprKind::Tuple ? Value::tuple(std::move(items)) : Value::new_list(std::move(items));
    }
    case ExprKind::Dict: {
      Value d = Value::new_dict();
      for (size_t k = 0; k < e.keys.size(); ++k) {
        Value key = eval(*e.keys[k]);
        d.dict->set(key, eval(*e.items[k]));
      }
      return d;
    }
    case ExprKind::Attr: return get_attribute(eval(*e.a), e.name);
    case ExprKind::Item: {
      Value subject = eval(*e.a);
      Value key = eval(*e.b);
      line_ = e.line;
      return get_item(subject, key);
    }
    case ExprKind::Slice: return slice(eval(*e.a), e);
    case ExprKind::Call: {
      Value callee = eval(*e.a);
      CallArgs args;
      eval_args(e.args, args);
      line_ = e.line;
      return call(callee, args);
    }
    case ExprKind::Filter: {
      Value subject = eval(*e.a);
      CallArgs args;
      eval_args(e.args, args);
      line_ = e.line;
      return apply_filter(*this, e.name, subject, args);
    }
    case ExprKind::Test: {
      Value subject = eval(*e.a);
      CallArgs args;
      eval_args(e.args, args);
      line_ = e.line;
      return Value::boolean(apply_test(*this, e.name, subject, args) != e.negated);
    }
    case ExprKind::Unary: {
      Value v = eval(*e.a);
      if (e.name == "not") return Value::boolean(!v.truthy());
      if (v.kind == Kind::Float) return Value::number(e.name == "-" ? -v.f : v.f);
      if (v.is_int_like()) return Value::integer(e.name == "-" ? -v.as_int() : v.as_int());
      if (v.is_undefined()) throw Error("'" + v.s + "' is undefined");
      throw Error("bad operand type for unary " + e.name + ": '" + v.type_name() + "'");
    }
    case ExprKind::Binary: return binary(e);
    case ExprKind::Cond:
      if (eval(*e.a).truthy()) return eval(*e.b);
      return e.c ? eval(*e.c) : Value::undefined();
  }
  return Value::undefined();
}

Value Renderer::binary(const Expr& e) {
  const std::string& op = e.name;
  if (op == "and") {
    Value l = eval(*e.a);
    return l.truthy() ? eval(*e.b) : l;
  }
  if (op == "or") {
    Value l = eval(*e.a);
    return l.truthy() ? l : eval(*e.b);
  }
  Value a = eval(*e.a);
  Value b = eval(*e.b);
  line_ = e.line;
  if (op == "==") return Value::boolean(equals(a, b));
  if (op == "!=") return Value::boolean(!equals(a, b));
  if (op == "<") return Value::boolean(less(a, b));
  if (op == ">") return Value::boolean(less(b, a));
  if (op == "<=") return Value::boolean(!less(b, a));
  if (op == ">=") return Value::boolean(!less(a, b));
  if (op == "in") return Value::boolean(contains(b, a));
  if (op == "not in") return Value::boolean(!contains(b, a));
  if (op == "~") return Value::string(to_str(a) + to_str(b));
  if (a.is_numeric() && b.is_numeric()) {
    bool ints = a.is_int_like() && b.is_int_like();
    if (op == "+") return ints ? Value::integer(a.as_int() + b.as_int()) : Value::number(a.as_double() + b.as_double());
    if (op == "-") return ints ? Value::integer(a.as_int() - b.as_int()) : Value::number(a.as_double() - b.as_double());
    if (op == "*") return ints ? Value::integer(a.as_int() * b.as_int()) : Value::number(a.as_double() * b.as_double());
    if (op == "/") {
      if (b.as_double() == 0) throw Error("division by zero");
      return Value::number(a.as_double() / b.as_double());
    }
    if (op == "//" || op == "%") {
      if (b.as_double() == 0) throw Error(op == "//" ? "integer division or modulo by zero" : "modulo by zero");
      if (ints) {
        int64_t q = floor_div(a.as_int(), b.as_int());
        return Value::integer(op == "//" ? q : a.as_int() - q * b.as_int());
      }
      double q = std::floor(a.as_double() / b.as_double());
      return Value::number(op == "//" ? q : a.as_double() - q * b.as_double());
    }
    if (op == "**") {
      if (ints && b.as_int() >= 0) {
        int64_t r = 1;
        for (int64_t k = 0; k < b.as_int(); ++k) r *= a.as_int();
        return Value::integer(r);
      }
      return Value::number(std::pow(a.as_double(), b.as_double()));
    }
  }
  if (op == "+") {
    if (a.is_string() && b.is_string()) {
      if (a.s.size() + b.s.size() > kMaxValueBytes)
        limit_error("string concatenation: the result would be larger than " + std::to_string(kMaxValueBytes >> 20) +
                    " MiB");
      return add_strings(a, b);
    }
    if (a.is_list() && b.is_list() && a.is_tuple == b.is_tuple) {
      size_t item_bytes = 0;
      for (const Value* l : {&a, &b})
        for (const Value& v : *l->list) item_bytes += v.is_string() ? v.s.size() : 0;
      if (a.list->size() + b.list->size() > kMaxListItems || item_bytes > kMaxValueBytes)
        limit_error("list concatenation: the result would hold more than " + std::to_string(kMaxListItems) +
                    " items or " + std::to_string(kMaxValueBytes >> 20) + " MiB");
      List items = *a.list;
      items.insert(items.end(), b.list->begin(), b.list->end());
      return a.is_tuple ? Value::tuple(items) : Value::new_list(items);
    }
  }
  if (op == "*") {
    if ((a.is_string() || a.is_list()) && b.is_int_like()) return repeat(a, b.as_int());
    if ((b.is_string() || b.is_list()) && a.is_int_like()) return repeat(b, a.as_int());
  }
  type_error(op, a, b);
}

Value Renderer::slice(const Value& subject, const Expr& e) {
  auto bound = [&](size_t k) -> Value { return e.items[k] ? eval(*e.items[k]) : Value::none(); };
  Value start_v = bound(0), stop_v = bound(1), step_v = bound(2);
  line_ = e.line;
  if (subject.is_undefined()) throw Error("'" + subject.s + "' is undefined");
  if (!subject.is_list() && !subject.is_string())
    throw Error(std::string("'") + subject.type_name() + "' object is not subscriptable");
  std::u32string chars;
  int64_t n;
  if (subject.is_string()) {
    chars = utf8_decode(subject.s);
    n = int64_t(chars.size());
  } else {
    n = int64_t(subject.list->size());
  }
  int64_t step = step_v.is_none() ? 1 : step_v.as_int();
  if (step == 0) throw Error("slice step cannot be zero");
  // Python's slice.indices()
  auto clamp = [&](const Value& v, int64_t dflt) {
    if (v.is_none()) return dflt;
    int64_t x = v.as_int();
    if (x < 0) x += n;
    if (step > 0) return std::min(std::max<int64_t>(x, 0), n);
    return std::min(std::max<int64_t>(x, -1), n - 1);
  };
  int64_t start = clamp(start_v, step > 0 ? 0 : n - 1);
  int64_t stop = clamp(stop_v, step > 0 ? n : -1);
  std::vector<int64_t> idx;
  for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) idx.push_back(k);
  if (subject.is_string()) {
    std::u32string out;
    for (int64_t k : idx) out += chars[size_t(k)];
    return Value::string(utf8_encode(out));
  }
  List out;
  for (int64_t k : idx) out.push_back((*subject.list)[size_t(k)]);
  return subject.is_tuple ? Value::tuple(out) : Value::new_list(out);
}

// --- Template

// A number literal or argument the standard library cannot convert (stoll of 1e30 digits, a
// negative width) is the template's error, not an exception the caller does not expect.
Template Template::parse(const std::string& source) {
  Template t;
  try {
    t.body_ = std::make_shared<const Body>(parse_template(tokenize(source)));
  } catch (const std::logic_error& e) {
    throw Error(std::string("template syntax error: a value is out of range (") + e.what() + ")");
  }
  return t;
}

std::string Template::render(const Dict& variables) const {
  Renderer r(variables);
  try {
    return r.render(*body_);
  } catch (const LocatedError& e) {
    throw Error(e.what());
  } catch (const std::logic_error& e) {
    throw Error(std::string("template error: a value is out of range (") + e.what() + ")");
  }
}

std::string Template::render(const nlohmann::ordered_json& variables) const {
  Value v = Value::from_json(variables.is_null() ? nlohmann::ordered_json::object() : variables);
  if (!v.is_dict()) throw Error("template variables must be a JSON object");
  return render(*v.dict);
}

}  // namespace strata::jinja
