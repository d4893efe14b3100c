#pragma once
// Recursive-descent parser over lexer tokens, following jinja2's grammar and operator precedence.
#include <string>
#include <vector>

#include "template/ast.h"
#include "template/lexer.h"

namespace strata::jinja {

// Blocks and expressions nested inside each other (parentheses, lists, `not not ...`): deeper is
// a syntax error, so neither parsing nor rendering a template can overflow the stack.
constexpr int kMaxParseDepth = 200;

// Throws strata::Error with the line and column of the first syntax error (unknown tag,
// unclosed block, unexpected token).
Body parse_template(const std::vector<Token>& tokens);

}  // namespace strata::jinja
