#include "template/parser.h"

#include <set>

#include "util/error.h"

namespace strata::jinja {

namespace {

class Parser {
 public:
  explicit Parser(const std::vector<Token>& tokens) : t_(tokens) {}

  Body parse_all() {
    Body body = parse_body({});
    if (cur().type != Tok::End) fail("unexpected tag");
    return body;
  }

 private:
  const Token& cur() const { return t_[pos_]; }
  const Token& peek(size_t n = 1) const { return t_[std::min(pos_ + n, t_.size() - 1)]; }
  bool is_op(const char* op) const { return cur().type == Tok::Op && cur().text == op; }
  bool is_name(const char* n) const { return cur().type == Tok::Name && cur().text == n; }

  [[noreturn]] void fail(const std::string& what) const {
    const Token& tk = cur();
    throw Error("template syntax error at line " + std::to_string(tk.line) + ", column " +
                std::to_string(tk.column) + ": " + what);
  }
  std::string describe(const Token& tk) const {
    switch (tk.type) {
      case Tok::End: return "end of template";
      case Tok::BlockEnd: return "'%}'";
      case Tok::VarEnd: return "'}}'";
      case Tok::String: return "string";
      default: return "'" + tk.text + "'";
    }
  }
  void expect_op(const char* op) {
    if (!is_op(op)) fail(std::string("expected '") + op + "', got " + describe(cur()));
    ++pos_;
  }
  std::string expect_name() {
    if (cur().type != Tok::Name) fail("expected a name, got " + describe(cur()));
    return t_[pos_++].text;
  }
  void expect_block_end() {
    if (cur().type != Tok::BlockEnd) fail("expected end of statement '%}', got " + describe(cur()));
    ++pos_;
  }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    ++pos_;
    return true;
  }
  bool skip_name(const char* n) {
    if (!is_name(n)) return false;
    ++pos_;
    return true;
  }

  // --- statements

  // Parses until a block tag whose name is in `ends` (left unconsumed, positioned at its name)
  // or the end of input (an error when `ends` is non-empty).
  Body parse_body(const std::set<std::string>& ends) {
    const Nest nest(*this);
    Body body;
    while (true) {
      const Token& tk = cur();
      if (tk.type == Tok::End) {
        if (!ends.empty()) {
          std::string list;
          for (const auto& e : ends) list += (list.empty() ? "" : "' or '") + e;
          fail("unexpected end of template: block '" + open_blocks_.back().first + "' opened at line " +
               std::to_string(open_blocks_.back().second) + " was never closed (expected '" + list + "')");
        }
        return body;
      }
      if (tk.type == Tok::Text) {
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::Text;
        s->line = tk.line;
        s->text = tk.text;
        body.push_back(std::move(s));
        ++pos_;
      } else if (tk.type == Tok::VarBegin) {
        ++pos_;
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::Output;
        s->line = tk.line;
        s->expr = parse_tuple_or_expr();
        if (cur().type != Tok::VarEnd) fail("expected end of print statement '}}', got " + describe(cur()));
        ++pos_;
        body.push_back(std::move(s));
      } else if (tk.type == Tok::BlockBegin) {
        const Token& name = peek();
        if (name.type != Tok::Name) {
          ++pos_;
          fail("expected a statement name after '{%'");
        }
        if (ends.count(name.text)) {
          ++pos_;  // leave positioned at the name
          return body;
        }
        ++pos_;
        body.push_back(parse_statement(ends));
      } else {
        fail("unexpected " + describe(tk));
      }
    }
  }

  StmtPtr parse_statement(const std::set<std::string>& outer_ends) {
    const Token& tk = cur();
    std::string name = tk.text;
    int line = tk.line;
    auto s = std::make_unique<Stmt>();
    s->line = line;
    ++pos_;
    if (name == "if") {
      s->kind = StmtKind::If;
      open_blocks_.push_back({"if", line});
      ExprPtr cond = parse_tuple_or_expr();
      expect_block_end();
      while (true) {
        Body b = parse_body({"elif", "else", "endif"});
        s->branches.emplace_back(std::move(cond), std::move(b));
        std::string which = expect_name();
        if (which == "elif") {
          cond = parse_tuple_or_expr();
          expect_block_end();
          continue;
        }
        if (which == "else") {
          expect_block_end();
          s->else_body = parse_body({"endif"});
          expect_name();
        }
        expect_block_end();
        break;
      }
      open_blocks_.pop_back();
    } else if (name == "for") {
      s->kind = StmtKind::For;
      open_blocks_.push_back({"for", line});
      do {
        if (skip_op("(")) {
          do s->targets.push_back(expect_name());
          while (skip_op(","));
          expect_op(")");
        } else {
          s->targets.push_back(expect_name());
        }
      } while (skip_op(","));
      if (!skip_name("in")) fail("expected 'in' in for loop, got " + describe(cur()));
      s->expr = parse_tuple_or_expr(/*stop_at_if=*/true);
      if (skip_name("if")) s->cond = parse_expression();
      if (skip_name("recursive")) fail("recursive for loops are not supported");
      expect_block_end();
      s->body = parse_body({"else", "endfor"});
      if (expect_name() == "else") {
        expect_block_end();
        s->else_body = parse_body({"endfor"});
        expect_name();
      }
      expect_block_end();
      open_blocks_.pop_back();
    } else if (name == "set") {
      s->kind = StmtKind::Set;
      std::string target = expect_name();
      if (skip_op(".")) {  // namespace attribute: {% set ns.x = ... %}
        s->targets.push_back(target);
        s->text = expect_name();
      } else {
        s->targets.push_back(target);
        while (skip_op(",")) s->targets.push_back(expect_name());
      }
      if (skip_op("=")) {
        s->expr = parse_tuple_or_expr();
        expect_block_end();
      } else {
        if (cur().type != Tok::BlockEnd) fail("expected '=' or '%}' in set, got " + describe(cur()));
        ++pos_;
        open_blocks_.push_back({"set", line});
        s->body = parse_body({"endset"});
        expect_name();
        expect_block_end();
        open_blocks_.pop_back();
      }
    } else if (name == "macro") {
      s->kind = StmtKind::Macro;
      s->text = expect_name();
      parse_params(s->params);
      expect_block_end();
      open_blocks_.push_back({"macro", line});
      s->body = parse_body({"endmacro"});
      expect_name();
      expect_block_end();
      open_blocks_.pop_back();
    } else if (name == "call") {
      s->kind = StmtKind::CallBlock;
      if (is_op("(")) parse_params(s->params);
      s->expr = parse_expression();
      if (s->expr->kind != ExprKind::Call) fail("expected a macro call in call block");
      expect_block_end();
      open_blocks_.push_back({"call", line});
      s->body = parse_body({"endcall"});
      expect_name();
      expect_block_end();
      open_blocks_.pop_back();
    } else if (name == "filter") {
      s->kind = StmtKind::FilterBlock;
      auto subject = std::make_unique<Expr>();
      subject->kind = ExprKind::Literal;
      s->expr = parse_filter(std::move(subject));
      expect_block_end();
      open_blocks_.push_back({"filter", line});
      s->body = parse_body({"endfilter"});
      expect_name();
      expect_block_end();
      open_blocks_.pop_back();
    } else if (name == "generation") {  // transformers' assistant-mask tag: renders its body
      s->kind = StmtKind::If;
      auto always = std::make_unique<Expr>();
      always->kind = ExprKind::Literal;
      always->value = Value::boolean(true);
      expect_block_end();
      open_blocks_.push_back({"generation", line});
      s->branches.emplace_back(std::move(always), parse_body({"endgeneration"}));
      expect_name();
      expect_block_end();
      open_blocks_.pop_back();
    } else if (name == "break" || name == "continue") {
      s->kind = name == "break" ? StmtKind::Break : StmtKind::Continue;
      expect_block_end();
    } else {
      --pos_;
      if (!open_blocks_.empty() && name.rfind("end", 0) == 0)
        fail("unexpected '" + name + "': the innermost open block is '" + open_blocks_.back().first +
             "' (line " + std::to_string(open_blocks_.back().second) + ")");
      fail("unknown tag '" + name + "'");
    }
    (void)outer_ends;
    return s;
  }

  void parse_params(std::vector<Param>& params) {
    expect_op("(");
    while (!is_op(")")) {
      if (!params.empty()) expect_op(",");
      if (is_op(")")) break;
      Param p;
      p.name = expect_name();
      if (skip_op("=")) p.fallback = parse_expression();
      params.push_back(std::move(p));
    }
    expect_op(")");
  }

  // --- expressions

  ExprPtr make(ExprKind k, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->line = line;
    return e;
  }

  // `a, b` without brackets is a tuple in {{ }}, for iterables and set values.
  ExprPtr parse_tuple_or_expr(bool stop_at_if = false) {
    int line = cur().line;
    ExprPtr first = stop_at_if ? parse_or() : parse_expression();
    if (!is_op(",")) return first;
    auto t = make(ExprKind::Tuple, line);
    t->items.push_back(std::move(first));
    while (skip_op(",")) {
      if (cur().type == Tok::BlockEnd || cur().type == Tok::VarEnd || is_name("if")) break;
      t->items.push_back(stop_at_if ? parse_or() : parse_expression());
    }
    return t;
  }

  ExprPtr parse_expression() {
    const Nest nest(*this);
    ExprPtr e = parse_or();
    while (is_name("if")) {
      int line = cur().line;
      ++pos_;
      auto c = make(ExprKind::Cond, line);
      c->a = parse_or();
      c->b = std::move(e);
      if (skip_name("else")) c->c = parse_expression();
      e = std::move(c);
    }
    return e;
  }

  ExprPtr binary(const std::string& op, ExprPtr l, ExprPtr r, int line) {
    auto e = make(ExprKind::Binary, line);
    e->name = op;
    e->a = std::move(l);
    e->b = std::move(r);
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr l = parse_and();
    while (is_name("or")) {
      int line = cur().line;
      ++pos_;
      l = binary("or", std::move(l), parse_and(), line);
    }
    return l;
  }
  ExprPtr parse_and() {
    ExprPtr l = parse_not();
    while (is_name("and")) {
      int line = cur().line;
      ++pos_;
      l = binary("and", std::move(l), parse_not(), line);
    }
    return l;
  }
  ExprPtr parse_not() {
    if (is_name("not")) {
      auto e = make(ExprKind::Unary, cur().line);
      ++pos_;
      e->name = "not";
      e->a = parse_not();
      return e;
    }
    return parse_compare();
  }
  ExprPtr parse_compare() {
    ExprPtr l = parse_math1();
    while (true) {
      int line = cur().line;
      std::string op;
      if (cur().type == Tok::Op &&
          (cur().text == "==" || cur().text == "!=" || cur().text == "<" || cur().text == ">" ||
           cur().text == "<=" || cur().text == ">=")) {
        op = cur().text;
        ++pos_;
      } else if (is_name("in")) {
        op = "in";
        ++pos_;
      } else if (is_name("not") && peek().type == Tok::Name && peek().text == "in") {
        op = "not in";
        pos_ += 2;
      } else {
        return l;
      }
      l = binary(op, std::move(l), parse_math1(), line);
    }
  }
  ExprPtr parse_math1() {
    ExprPtr l = parse_concat();
    while (is_op("+") || is_op("-")) {
      std::string op = cur().text;
      int line = cur().line;
      ++pos_;
      l = binary(op, std::move(l), parse_concat(), line);
    }
    return l;
  }
  ExprPtr parse_concat() {
    ExprPtr l = parse_math2();
    while (is_op("~")) {
      int line = cur().line;
      ++pos_;
      l = binary("~", std::move(l), parse_math2(), line);
    }
    return l;
  }
  ExprPtr parse_math2() {
    ExprPtr l = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      std::string op = cur().text;
      int line = cur().line;
      ++pos_;
      l = binary(op, std::move(l), parse_pow(), line);
    }
    return l;
  }
  ExprPtr parse_pow() {
    ExprPtr l = parse_unary(true);
    while (is_op("**")) {
      int line = cur().line;
      ++pos_;
      l = binary("**", std::move(l), parse_unary(true), line);
    }
    return l;
  }
  ExprPtr parse_unary(bool with_filter) {
    const Nest nest(*this);
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      e = make(ExprKind::Unary, cur().line);
      e->name = cur().text;
      ++pos_;
      e->a = parse_unary(false);
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    if (with_filter) e = parse_filter_expr(std::move(e));
    return e;
  }

  ExprPtr parse_primary() {
    const Token& tk = cur();
    int line = tk.line;
    if (tk.type == Tok::Name) {
      ++pos_;
      auto e = make(ExprKind::Literal, line);
      if (tk.text == "true" || tk.text == "True") e->value = Value::boolean(true);
      else if (tk.text == "false" || tk.text == "False") e->value = Value::boolean(false);
      else if (tk.text == "none" || tk.text == "None") e->value = Value::none();
      else {
        e->kind = ExprKind::Name;
        e->name = tk.text;
      }
      return e;
    }
    if (tk.type == Tok::String) {
      auto e = make(ExprKind::Literal, line);
      std::string s;
      while (cur().type == Tok::String) s += t_[pos_++].text;  // adjacent literals concatenate
      e->value = Value::string(s);
      return e;
    }
    if (tk.type == Tok::Int || tk.type == Tok::Float) {
      ++pos_;
      auto e = make(ExprKind::Literal, line);
      try {
        e->value = tk.type == Tok::Int ? Value::integer(std::stoll(tk.text)) : Value::number(std::stod(tk.text));
      } catch (const std::exception&) {
        fail("number literal out of range: " + tk.text);
      }
      return e;
    }
    if (is_op("(")) {
      ++pos_;
      if (skip_op(")")) {
        auto e = make(ExprKind::Tuple, line);
        return e;
      }
      ExprPtr first = parse_expression();
      if (skip_op(")")) return first;
      auto t = make(ExprKind::Tuple, line);
      t->items.push_back(std::move(first));
      while (skip_op(",")) {
        if (is_op(")")) break;
        t->items.push_back(parse_expression());
      }
      expect_op(")");
      return t;
    }
    if (is_op("[")) {
      ++pos_;
      auto e = make(ExprKind::List, line);
      while (!is_op("]")) {
        if (!e->items.empty()) expect_op(",");
        if (is_op("]")) break;
        e->items.push_back(parse_expression());
      }
      expect_op("]");
      return e;
    }
    if (is_op("{")) {
      ++pos_;
      auto e = make(ExprKind::Dict, line);
      while (!is_op("}")) {
        if (!e->items.empty()) expect_op(",");
        if (is_op("}")) break;
        e->keys.push_back(parse_expression());
        expect_op(":");
        e->items.push_back(parse_expression());
      }
      expect_op("}");
      return e;
    }
    fail("unexpected " + describe(tk) + " in expression");
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      int line = cur().line;
      if (is_op(".")) {
        ++pos_;
        auto a = make(ExprKind::Attr, line);
        if (cur().type == Tok::Int) {  // foo.0 is foo[0]
          a->kind = ExprKind::Item;
          a->b = make(ExprKind::Literal, line);
          a->b->value = Value::integer(std::stoll(t_[pos_++].text));
        } else {
          a->name = expect_name();
        }
        a->a = std::move(e);
        e = std::move(a);
      } else if (is_op("[")) {
        ++pos_;
        e = parse_subscript(std::move(e), line);
      } else if (is_op("(")) {
        auto c = make(ExprKind::Call, line);
        parse_call_args(c->args);
        c->a = std::move(e);
        e = std::move(c);
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr subject, int line) {
    ExprPtr parts[3];
    int n_colons = 0;
    while (!is_op("]")) {
      if (skip_op(":")) {
        if (++n_colons > 2) fail("too many ':' in slice");
        continue;
      }
      if (parts[n_colons]) fail("expected ']' or ':' in subscript, got " + describe(cur()));
      parts[n_colons] = parse_expression();
    }
    expect_op("]");
    if (n_colons == 0) {
      if (!parts[0]) fail("empty subscript");
      auto e = make(ExprKind::Item, line);
      e->a = std::move(subject);
      e->b = std::move(parts[0]);
      return e;
    }
    auto e = make(ExprKind::Slice, line);
    e->a = std::move(subject);
    for (auto& p : parts) e->items.push_back(std::move(p));
    return e;
  }

  void parse_call_args(std::vector<Arg>& args) {
    expect_op("(");
    while (!is_op(")")) {
      if (!args.empty()) expect_op(",");
      if (is_op(")")) break;
      Arg a;
      if (cur().type == Tok::Name && peek().type == Tok::Op && peek().text == "=") {
        a.name = cur().text;
        pos_ += 2;
      }
      a.value = parse_expression();
      args.push_back(std::move(a));
    }
    expect_op(")");
  }

  ExprPtr parse_filter(ExprPtr subject) {
    int line = cur().line;
    auto f = make(ExprKind::Filter, line);
    f->name = expect_name();
    while (skip_op(".")) f->name += "." + expect_name();
    if (is_op("(")) parse_call_args(f->args);
    f->a = std::move(subject);
    return f;
  }

  ExprPtr parse_filter_expr(ExprPtr e) {
    while (true) {
      if (is_op("|")) {
        ++pos_;
        e = parse_filter(std::move(e));
      } else if (is_name("is")) {
        int line = cur().line;
        ++pos_;
        auto t = make(ExprKind::Test, line);
        t->negated = skip_name("not");
        t->name = expect_name();
        while (skip_op(".")) t->name += "." + expect_name();
        if (is_op("(")) {
          parse_call_args(t->args);
        } else if ((cur().type == Tok::Name || cur().type == Tok::String || cur().type == Tok::Int ||
                    cur().type == Tok::Float || is_op("[") || is_op("{")) &&
                   !is_name("else") && !is_name("or") && !is_name("and") && !is_name("if")) {
          // `is divisibleby 3`, `is equalto 'x'`: one argument without parentheses.
          Arg a;
          a.value = parse_postfix(parse_primary());
          t->args.push_back(std::move(a));
        }
        t->a = std::move(e);
        e = std::move(t);
      } else if (is_op("(")) {
        int line = cur().line;
        auto c = make(ExprKind::Call, line);
        parse_call_args(c->args);
        c->a = std::move(e);
        e = std::move(c);
      } else {
        return e;
      }
    }
  }

  const std::vector<Token>& t_;
  size_t pos_ = 0;
  int depth_ = 0;  // against kMaxParseDepth
  struct Nest {
    explicit Nest(Parser& p) : p(p) {
      if (++p.depth_ > kMaxParseDepth) {
        --p.depth_;
        p.fail("blocks or expressions nest more than " + std::to_string(kMaxParseDepth) +
               " deep (the template engine's limit)");
      }
    }
    ~Nest() { --p.depth_; }
    Parser& p;
  };
  std::vector<std::pair<std::string, int>> open_blocks_;  // for "never closed" errors
};

}  // namespace

Body parse_template(const std::vector<Token>& tokens) { return Parser(tokens).parse_all(); }

}  // namespace strata::jinja
