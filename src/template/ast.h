#pragma once
// Syntax tree of a parsed template: expressions and statements, each with its source line.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "template/value.h"

namespace strata::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Arg {  // one call argument; `name` empty for positional
  std::string name;
  ExprPtr value;
};

enum class ExprKind {
  Literal,    // value
  Name,       // name
  List,       // items
  Tuple,      // items
  Dict,       // keys[k]: items[k]
  Attr,       // a.name
  Item,       // a[b]
  Slice,      // a[b:c:d]  (items: start, stop, step; null when omitted)
  Call,       // a(args)
  Filter,     // a | name(args)
  Test,       // a is [not] name(args)
  Unary,      // op a  ("not", "-", "+")
  Binary,     // a op b
  Cond,       // b if a else c   (a = condition)
};

struct Expr {
  ExprKind kind;
  int line = 0;
  Value value;                  // Literal
  std::string name;             // Name, Attr, Filter, Test; operator for Unary/Binary
  ExprPtr a, b, c;              // operands
  std::vector<ExprPtr> items;   // List, Tuple, Dict values, Slice parts
  std::vector<ExprPtr> keys;    // Dict keys
  std::vector<Arg> args;        // Call, Filter, Test
  bool negated = false;         // Test: `is not`
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

enum class StmtKind {
  Text,      // text
  Output,    // {{ expr }}
  If,        // branches: (cond, body)...; else_body
  For,       // targets in expr [if cond]: body [else else_body]
  Set,       // targets = expr   |  target_attr (ns.x = expr)  |  block set (body)
  Macro,     // name(params) body
  CallBlock, // {% call [(params)] expr %} body
  Break,
  Continue,
  FilterBlock,  // {% filter name(args) %} body
};

struct Param {  // macro parameter with optional default
  std::string name;
  ExprPtr fallback;
};

struct Stmt {
  StmtKind kind;
  int line = 0;
  std::string text;                               // Text; Macro name; Set attribute name (ns.attr)
  ExprPtr expr;                                   // Output, For iterable, Set value, CallBlock call, FilterBlock filter
  ExprPtr cond;                                   // For filter condition
  std::vector<std::string> targets;               // For / Set names
  std::vector<std::pair<ExprPtr, Body>> branches; // If
  Body body, else_body;
  std::vector<Param> params;                      // Macro, CallBlock
};

}  // namespace strata::jinja
