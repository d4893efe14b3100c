// The Tokenizer facade and StreamDecoder. The vocabulary itself lives in vocab.cpp.
#include "tokenizer/tokenizer.h"

#include <algorithm>

#include "tokenizer/vocab.h"

namespace strata {

std::unique_ptr<Tokenizer> Tokenizer::from_gguf(const gguf::File& file) {
  return std::make_unique<tokenizer_detail::Vocab>(file);
}

std::string Tokenizer::decode(const std::vector<Token>& ids, bool special) const {
  return detokenize(ids, /*remove_special=*/false, special);
}

std::string Tokenizer::detokenize(const std::vector<Token>& ids, bool remove_special, bool unparse_special) const {
  std::string out;
  size_t begin = 0, end = ids.size();
  if (remove_special && add_bos_ && end > 0 && ids[0] == bos_) begin = 1;
  if (remove_special && add_eos_ && end > begin && ids[end - 1] == eos_) --end;
  for (size_t i = begin; i < end; ++i) out += token_to_piece(ids[i], unparse_special);
  return out;
}

bool Tokenizer::is_control(Token id) const {
  return id >= 0 && size_t(id) < types_.size() && types_[size_t(id)] == tokenizer_detail::TYPE_CONTROL;
}

bool Tokenizer::is_eog(Token id) const { return id >= 0 && std::binary_search(eog_ids_.begin(), eog_ids_.end(), id); }

Token Tokenizer::find_token(std::string_view text) const {
  const auto it = ids_by_text_.find(text);
  return it == ids_by_text_.end() ? -1 : it->second;
}

// --- StreamDecoder ---

namespace {

// Length of the prefix of `s` that does not end inside an incomplete UTF-8 sequence. Bytes that
// can never complete (stray continuation bytes, bad leads) are passed through, not held.
size_t complete_prefix(const std::string& s) {
  const size_t n = s.size();
  for (size_t back = 1; back <= std::min<size_t>(n, 4); ++back) {
    const auto c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    size_t need = 1;
    if ((c & 0xE0) == 0xC0) need = 2;
    else if ((c & 0xF0) == 0xE0) need = 3;
    else if ((c & 0xF8) == 0xF0) need = 4;
    return need > back ? n - back : n;
  }
  return n;
}

}  // namespace

std::string StreamDecoder::push(Token id) {
  pending_ += tok_.token_to_piece(id, special_);
  const size_t ready = complete_prefix(pending_);
  std::string out = pending_.substr(0, ready);
  pending_.erase(0, ready);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out;
  out.swap(pending_);
  return out;
}

}  // namespace strata
