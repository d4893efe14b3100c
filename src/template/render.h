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

// What one render may do (besides value.h's bounds on one value): templates come from model files and from clients (/api/create), and
// each bound is an error naming it rather than a stalled or crashed server.
constexpr int64_t kMaxRenderSteps = 1'000'000;  // statements run, expressions evaluated, loop iterations
constexpr size_t kMaxRenderOutputBytes = size_t(64) << 20;  // the rendered text
constexpr size_t kMaxListItems = size_t(1) << 20;           // one list (range, repetition, concatenation)
constexpr int kMaxCallDepth = 64;                           // macro calls inside macro calls

class Renderer {
 public:
  explicit Renderer(const Dict& variables);
  ~Renderer();
  Renderer(const Renderer&) = delete;
  Renderer& operator=(const Renderer&) = delete;
  std::string render(const Body& body);

  Value eval(const Expr& e);  // counts a step; a string past kMaxValueBytes is an error
  // Calls a function value (global, macro, bound method) with evaluated arguments.
  Value call(const Value& fn, CallArgs& args);

 private:
  enum class Flow { Normal, Break, Continue };
  Flow exec(const Body& body, std::string& out);
  Flow exec_stmt(const Stmt& s, std::string& out);
  Value eval_expr(const Expr& e);
  void count_step();
  Flow exec_for(const Stmt& s, std::string& out);
  void exec_set(const Stmt& s, Value v);
  Value make_macro(const Stmt& s);
  Value lookup(const std::string& name) const;
  void assign(const std::string& name, Value v);
  void eval_args(const std::vector<Arg>& args, CallArgs& out);
  Value binary(const Expr& e);
  Value slice(const Value& subject, const Expr& e);

  using Frame = std::shared_ptr<Dict>;
  void push_frame(Frame frame);
  std::vector<Frame> frames_;
  std::vector<std::weak_ptr<Dict>> made_frames_;  // every frame pushed, emptied when the render ends
  int line_ = 0;  // line of the expression or statement being evaluated, for error messages
  int loop_depth_ = 0;
  int64_t steps_ = 0;   // against kMaxRenderSteps
  int call_depth_ = 0;  // against kMaxCallDepth
};

}  // namespace strata::jinja
