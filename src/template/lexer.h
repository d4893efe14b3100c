#pragma once
// Splits template source into text and tag tokens the way jinja2's lexer does under transformers'
// settings (trim_blocks, lstrip_blocks, no trailing newline kept): whitespace control is applied
// here, so the parser sees text exactly as it will be printed.
#include <string>
#include <vector>

namespace strata::jinja {

enum class Tok {
  Text,        // literal output
  VarBegin,    // {{
  VarEnd,      // }}
  BlockBegin,  // {%
  BlockEnd,    // %}
  Name,
  String,      // value already unescaped
  Int,
  Float,
  Op,          // punctuation/operator: + - * / // % ** ~ == != < > <= >= = . , : | ( ) [ ] { }
  End,
};

struct Token {
  Tok type;
  std::string text;
  int line = 1;
  int column = 1;
};

// Throws strata::Error naming the line and column of malformed source (unterminated tag, string).
std::vector<Token> tokenize(const std::string& source);

}  // namespace strata::jinja
