#include "template/lexer.h"

#include <cctype>

#include "template/value.h"
#include "util/error.h"

namespace strata::jinja {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

class Lexer {
 public:
  explicit Lexer(std::string src) : src_(std::move(src)) {}

  std::vector<Token> run() {
    bool line_starting = true;  // jinja2: did the previous match end with a newline?
    while (pos_ < src_.size()) {
      size_t tag = find_tag(pos_);
      std::string text = src_.substr(pos_, (tag == std::string::npos ? src_.size() : tag) - pos_);
      if (tag == std::string::npos) {
        emit_text(text, pos_);
        pos_ = src_.size();
        break;
      }
      char kind = src_[tag + 1];  // '{', '%' or '#'
      char sign = tag + 2 < src_.size() ? src_[tag + 2] : 0;
      if (sign == '-') {
        size_t e = text.size();
        while (e > 0 && is_space(text[e - 1])) --e;
        text.resize(e);
      } else if (sign != '+' && kind != '{') {
        // lstrip_blocks: drop spaces between the line start and a block or comment tag.
        size_t nl = text.rfind('\n');
        size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
        if (l_pos > 0 || line_starting) {
          bool only_ws = l_pos < text.size();
          for (size_t k = l_pos; k < text.size(); ++k) only_ws = only_ws && is_space(text[k]);
          if (only_ws) text.resize(l_pos);
        }
      }
      emit_text(text, pos_);
      size_t body = tag + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
      if (kind == '#') {
        line_starting = lex_comment(tag, body);
      } else {
        line_starting = lex_tag(tag, body, kind == '{');
      }
    }
    tokens_.push_back({Tok::End, "", line_at(src_.size()), 1});
    return std::move(tokens_);
  }

 private:
  size_t find_tag(size_t from) const {
    for (size_t k = from; k + 1 < src_.size(); ++k)
      if (src_[k] == '{' && (src_[k + 1] == '{' || src_[k + 1] == '%' || src_[k + 1] == '#')) return k;
    return std::string::npos;
  }

  int line_at(size_t p) {
    for (; line_pos_ < p && line_pos_ < src_.size(); ++line_pos_)
      if (src_[line_pos_] == '\n') ++line_, line_start_ = line_pos_ + 1;
    return line_;
  }
  int column_at(size_t p) {
    line_at(p);
    return int(p - line_start_) + 1;
  }

  [[noreturn]] void fail(size_t p, const std::string& what) {
    int line = line_at(p);
    int col = column_at(p);
    throw Error("template syntax error at line " + std::to_string(line) + ", column " + std::to_string(col) + ": " +
                what);
  }

  void emit_text(const std::string& text, size_t at) {
    if (!text.empty()) tokens_.push_back({Tok::Text, text, line_at(at), column_at(at)});
  }

  // After a tag's closing delimiter at `close` (its first char) of length `len`, with `strip`
  // meaning a '-' preceded it: skip whitespace, or one newline under trim_blocks for blocks.
  bool finish_tag(size_t after, bool strip, bool plus, bool trim_newline) {
    pos_ = after;
    if (strip) {
      while (pos_ < src_.size() && is_space(src_[pos_])) ++pos_;
      return pos_ > after && src_[pos_ - 1] == '\n';
    }
    if (!plus && trim_newline && pos_ < src_.size() && src_[pos_] == '\n') {
      ++pos_;
      return true;
    }
    return false;
  }

  bool lex_comment(size_t tag, size_t body) {
    size_t end = src_.find("#}", body);
    if (end == std::string::npos) fail(tag, "unterminated comment");
    bool strip = end > body && src_[end - 1] == '-';
    bool plus = end > body && src_[end - 1] == '+';
    return finish_tag(end + 2, strip, plus, true);
  }

  bool lex_tag(size_t tag, size_t p, bool variable) {
    tokens_.push_back({variable ? Tok::VarBegin : Tok::BlockBegin, "", line_at(tag), column_at(tag)});
    const char close = variable ? '}' : '%';
    int depth = 0;  // brackets, so `}}` inside a dict literal does not close a variable tag
    while (true) {
      while (p < src_.size() && is_space(src_[p])) ++p;
      if (p >= src_.size()) fail(tag, variable ? "unclosed '{{' (missing '}}')" : "unclosed '{%' (missing '%}')");
      char c = src_[p];
      // Closing delimiter, optionally with '-' or '+' before it.
      if (depth == 0) {
        size_t q = p;
        bool strip = false, plus = false;
        if ((c == '-' || c == '+') && q + 2 < src_.size() && src_[q + 1] == close && src_[q + 2] == '}') {
          strip = c == '-';
          plus = c == '+';
          ++q;
        }
        if (q + 1 < src_.size() && src_[q] == close && src_[q + 1] == '}') {
          tokens_.push_back({variable ? Tok::VarEnd : Tok::BlockEnd, "", line_at(p), column_at(p)});
          return finish_tag(q + 2, strip, plus, !variable);
        }
      }
      int line = line_at(p), col = column_at(p);
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t s = p;
        while (p < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[p])) || src_[p] == '_')) ++p;
        tokens_.push_back({Tok::Name, src_.substr(s, p - s), line, col});
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        size_t s = p;
        bool is_float = false;
        while (p < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[p])) || src_[p] == '_')) ++p;
        if (p + 1 < src_.size() && src_[p] == '.' && std::isdigit(static_cast<unsigned char>(src_[p + 1]))) {
          is_float = true;
          ++p;
          while (p < src_.size() && std::isdigit(static_cast<unsigned char>(src_[p]))) ++p;
        }
        if (p < src_.size() && (src_[p] == 'e' || src_[p] == 'E')) {
          size_t q = p + 1;
          if (q < src_.size() && (src_[q] == '+' || src_[q] == '-')) ++q;
          if (q < src_.size() && std::isdigit(static_cast<unsigned char>(src_[q]))) {
            is_float = true;
            p = q;
            while (p < src_.size() && std::isdigit(static_cast<unsigned char>(src_[p]))) ++p;
          }
        }
        std::string num;
        for (size_t k = s; k < p; ++k)
          if (src_[k] != '_') num += src_[k];
        tokens_.push_back({is_float ? Tok::Float : Tok::Int, num, line, col});
      } else if (c == '"' || c == '\'') {
        tokens_.push_back({Tok::String, lex_string(p), line, col});
      } else {
        static const char* ops[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">",
                                    "=", ".", ",", ":", "|", "(", ")", "[", "]", "{", "}"};
        std::string op;
        for (const char* o : ops) {
          size_t n = std::char_traits<char>::length(o);
          if (src_.compare(p, n, o) == 0) {
            op = o;
            break;
          }
        }
        if (op.empty()) fail(p, std::string("unexpected character '") + c + "'");
        if (op == "(" || op == "[" || op == "{") ++depth;
        if (op == ")" || op == "]" || op == "}") {
          if (depth == 0) fail(p, "unexpected '" + op + "'");
          --depth;
        }
        p += op.size();
        tokens_.push_back({Tok::Op, op, line, col});
      }
    }
  }

  // A Python string literal starting at the quote at `p`; leaves `p` after the closing quote.
  std::string lex_string(size_t& p) {
    size_t start = p;
    char quote = src_[p++];
    std::string out;
    while (true) {
      if (p >= src_.size()) fail(start, "unterminated string literal");
      char c = src_[p++];
      if (c == quote) break;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (p >= src_.size()) fail(start, "unterminated string literal");
      char e = src_[p++];
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'v': out += '\v'; break;
        case 'a': out += '\a'; break;
        case '0': out += '\0'; break;
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case '\n': break;  // line continuation
        case 'x':
        case 'u':
        case 'U': {
          int n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          if (p + n > src_.size()) fail(start, "truncated \\" + std::string(1, e) + " escape");
          char32_t cp = char32_t(std::stoul(src_.substr(p, n), nullptr, 16));
          p += n;
          out += utf8_encode(std::u32string_view(&cp, 1));
          break;
        }
        default: out += '\\'; out += e;  // Python keeps unknown escapes verbatim
      }
    }
    return out;
  }

  std::string src_;
  size_t pos_ = 0;
  std::vector<Token> tokens_;
  int line_ = 1;
  size_t line_pos_ = 0, line_start_ = 0;
};

// jinja2 normalizes \r\n and \r to \n and drops one trailing newline (keep_trailing_newline=False).
std::string normalize_newlines(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t k = 0; k < s.size(); ++k) {
    if (s[k] == '\r') {
      out += '\n';
      if (k + 1 < s.size() && s[k + 1] == '\n') ++k;
    } else {
      out += s[k];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

}  // namespace

std::vector<Token> tokenize(const std::string& source) { return Lexer(normalize_newlines(source)).run(); }

}  // namespace strata::jinja
