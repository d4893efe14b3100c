// Byte-level BPE encoding (llama.cpp's llm_tokenizer_bpe_session): pre-tokenize into words,
// map bytes to GPT-2's printable codepoints, then merge adjacent symbols by merge rank.
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
  std::string text;
  int rank;
};

struct BigramOrder {  // lowest rank first; ties: leftmost first
  bool operator()(const Bigram& l, const Bigram& r) const {
    return l.rank > r.rank || (l.rank == r.rank && l.left > r.left);
  }
};

}  // namespace

void Vocab::bpe_tokenize(std::string_view text, std::vector<Token>& out) const {
  std::string escaped;
  if (escape_whitespaces_) {
    escaped.reserve(text.size());
    for (char c : text) {
      if (c == ' ') escaped += "\xE2\x96\x81";
      else escaped.push_back(c);
    }
    text = escaped;
  }
  const std::vector<std::string> words = pre_->split(text, byte_encode_);
  std::vector<Symbol> symbols;
  for (const std::string& word : words) {
    symbols.clear();
    size_t offset = 0;
    const bool whole_word =
        ignore_merges_ || (newline_runs_whole_ && word.find_first_not_of('\n') == std::string::npos);
    if (whole_word && text_to_token(word) >= 0) {
      symbols.push_back({-1, -1, word.data(), word.size()});
      offset = word.size();
    }
    while (offset < word.size()) {
      Symbol sym;
      sym.text = word.data() + offset;
      sym.n = std::min(word.size() - offset, utf8_len(word[offset]));
      offset += sym.n;
      sym.prev = int(symbols.size()) - 1;
      sym.next = offset == word.size() ? -1 : int(symbols.size()) + 1;
      symbols.push_back(sym);
    }

    std::priority_queue<Bigram, std::vector<Bigram>, BigramOrder> queue;
    const auto try_add = [&](int left, int right) {
      if (left == -1 || right == -1) return;
      std::string l(symbols[left].text, symbols[left].n), r(symbols[right].text, symbols[right].n);
      const int rank = merge_rank(l, r);
      if (rank < 0) return;
      queue.push({left, right, l + r, rank});
    };
    for (int i = 1; i < int(symbols.size()); ++i) try_add(i - 1, i);

    while (!queue.empty()) {
      const Bigram bigram = queue.top();
      queue.pop();
      Symbol& left = symbols[bigram.left];
      Symbol& right = symbols[bigram.right];
      if (left.n == 0 || right.n == 0) continue;
      if (left.n + right.n != bigram.text.size() ||
          std::string_view(left.text, left.n + right.n) != bigram.text)  // stale
        continue;
      left.n += right.n;
      right.n = 0;
      left.next = right.next;
      if (right.next >= 0) symbols[right.next].prev = bigram.left;
      try_add(left.prev, bigram.left);
      try_add(bigram.left, left.next);
    }

    for (const Symbol& sym : symbols) {
      if (sym.n == 0) continue;
      const std::string_view piece(sym.text, sym.n);
      const Token id = text_to_token(piece);
      if (id >= 0) {
        out.push_back(id);
        continue;
      }
      // llama.cpp looks each byte up as a one-byte token (byte-level) or as <0xXX> (raw UTF-8),
      // and drops misses.
      static const char* hex = "0123456789ABCDEF";
      for (char c : piece) {
        const uint8_t b = uint8_t(c);
        const char fallback[6] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
        const Token byte_id = byte_encode_ ? text_to_token(std::string_view(&c, 1)) : text_to_token({fallback, 6});
        if (byte_id >= 0) out.push_back(byte_id);
      }
    }
  }
}

}  // namespace strata::tokenizer_detail
