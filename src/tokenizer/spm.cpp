// SentencePiece-style encoding (llama.cpp's llm_tokenizer_spm): start from UTF-8 characters,
// repeatedly merge the adjacent pair whose concatenation is the highest-scoring token, then
// spell every symbol that is not a token with byte-fallback tokens <0xXX>.
#include <map>
#include <queue>

#include "tokenizer/vocab.h"

namespace strata::tokenizer_detail {

namespace {

struct Symbol {
  int prev, next;
  const char* text;
  size_t n;
};

struct Bigram {
  int left, right;
  float score;
  size_t size;
};

struct BigramOrder {  // highest score first; ties: leftmost first
  bool operator()(const Bigram& l, const Bigram& r) const {
    return l.score < r.score || (l.score == r.score && l.left > r.left);
  }
};

}  // namespace

void Vocab::spm_tokenize(const std::string& text, std::vector<Token>& out) const {
  std::vector<Symbol> symbols;
  symbols.reserve(text.size());
  for (size_t offs = 0; offs < text.size();) {
    Symbol sym;
    sym.text = text.data() + offs;
    sym.n = std::min(utf8_len(text[offs]), text.size() - offs);
    offs += sym.n;
    sym.prev = int(symbols.size()) - 1;
    sym.next = offs == text.size() ? -1 : int(symbols.size()) + 1;
    symbols.push_back(sym);
  }

  std::priority_queue<Bigram, std::vector<Bigram>, BigramOrder> queue;
  std::map<std::string, std::pair<int, int>> rev_merge;  // merged text -> the pair that formed it
  const auto try_add = [&](int left, int right) {
    if (left == -1 || right == -1) return;
    std::string merged(symbols[left].text, symbols[left].n + symbols[right].n);
    const Token id = text_to_token(merged);
    if (id < 0) return;
    queue.push({left, right, scores_[id], merged.size()});
    rev_merge[std::move(merged)] = {left, right};
  };

  for (int i = 1; i < int(symbols.size()); ++i) try_add(i - 1, i);

  while (!queue.empty()) {
    const Bigram bigram = queue.top();
    queue.pop();
    Symbol& left = symbols[bigram.left];
    Symbol& right = symbols[bigram.right];
    if (left.n == 0 || right.n == 0 || left.n + right.n != bigram.size) continue;  // stale
    left.n += right.n;
    right.n = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = bigram.left;
    try_add(left.prev, bigram.left);
    try_add(bigram.left, left.next);
  }

  // A symbol that is no token is split back along the merges that formed it, down to bytes.
  const auto resegment = [&](auto&& self, const Symbol& symbol) -> void {
    const std::string piece(symbol.text, symbol.n);
    const Token id = text_to_token(piece);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
    const auto it = rev_merge.find(piece);
    if (it == rev_merge.end()) {
      for (size_t j = 0; j < symbol.n; ++j) out.push_back(byte_to_token(uint8_t(symbol.text[j])));
      return;
    }
    self(self, symbols[it->second.first]);
    self(self, symbols[it->second.second]);
  };
  if (symbols.empty()) return;
  for (int i = 0; i != -1; i = symbols[i].next) resegment(resegment, symbols[i]);
}

}  // namespace strata::tokenizer_detail
