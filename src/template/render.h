#pragma once
// The evaluator: runs a parsed template against variables, with jinja2's scoping (a for loop
// body gets a fresh scope each iteration; `if` does not open one; macros see their definition's
// scopes).
#include <memory>
#include <string>
#include <vector>

#include "template/ast.h"
#include "template/value.h"

namespace strata::jinja {

class Renderer {
 public:
  explicit Renderer(const Dict& variables);
  std::string render(const Body& body);

  Value eval(const Expr& e);
  // Calls a function value (global, macro, bound method) with evaluated arguments.
  Value call(const Value& fn, CallArgs& args);

 private:
  enum class Flow { Normal, Break, Continue };
  Flow exec(const Body& body, std::string& out);
  Flow exec_stmt(const Stmt& s, std::string& out);
  Flow exec_for(const Stmt& s, std::string& out);
  void exec_set(const Stmt& s, Value v);
  Value make_macro(const Stmt& s);
  Value lookup(const std::string& name) const;
  void assign(const std::string& name, Value v);
  void eval_args(const std::vector<Arg>& args, CallArgs& out);
  Value binary(const Expr& e);
  Value slice(const Value& subject, const Expr& e);

  using Frame = std::shared_ptr<Dict>;
  std::vector<Frame> frames_;
  int line_ = 0;  // line of the expression or statement being evaluated, for error messages
  int loop_depth_ = 0;
};

}  // namespace strata::jinja
