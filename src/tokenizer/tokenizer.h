#pragma once
// Tokenizers built from GGUF metadata (tokenizer.ggml.*): SentencePiece-style ("llama": llama,
// gemma; byte fallback) and GPT-2-style byte-level BPE ("gpt2", pre-tokenizer from
// tokenizer.ggml.pre). Behaviour matches llama.cpp's llama_tokenize / llama_token_to_piece.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace strata::gguf { class File; }

namespace strata {

using Token = int32_t;

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Throws strata::Error naming the problem for an unknown tokenizer model / pre-tokenizer.
  static std::unique_ptr<Tokenizer> from_gguf(const gguf::File& file);

  // add_special: add BOS (and EOS) as the model's metadata asks (tokenizer.ggml.add_bos_token...).
  // parse_special: text of special/control tokens in the input becomes those tokens; otherwise
  // it is tokenized as plain text.
  virtual std::vector<Token> encode(std::string_view text, bool add_special, bool parse_special) const = 0;
  // The bytes of one token. special=false renders control tokens as "" (llama.cpp's special flag).
  virtual std::string token_to_piece(Token id, bool special = true) const = 0;
  std::string decode(const std::vector<Token>& ids, bool special = true) const;
  // llama_detokenize: remove_special drops a leading BOS / trailing EOS the model adds itself;
  // unparse_special renders control tokens. Applies the leading-space and clean-up rules of the
  // vocabulary. decode(ids, special) is detokenize(ids, false, special).
  virtual std::string detokenize(const std::vector<Token>& ids, bool remove_special, bool unparse_special) const;

  int32_t n_vocab() const { return int32_t(texts_.size()); }
  const std::string& token_text(Token id) const { return texts_.at(size_t(id)); }
  Token bos() const { return bos_; }
  Token eos() const { return eos_; }
  Token eot() const { return eot_; }
  Token unk() const { return unk_; }
  Token pad() const { return pad_; }
  bool add_bos() const { return add_bos_; }
  bool add_eos() const { return add_eos_; }
  bool is_control(Token id) const;
  // End of generation: eos, eot, eom and other tokens the vocabulary marks as ending a turn.
  bool is_eog(Token id) const;
  // Token id of an exact token text, or -1.
  Token find_token(std::string_view text) const;

 protected:
  std::vector<std::string> texts_;
  std::vector<int32_t> types_;  // tokenizer.ggml.token_type (1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte)
                                // after llama.cpp's fix-ups by token text (e.g. "<|im_end|>" becomes control)
  std::vector<Token> eog_ids_;  // sorted
  std::unordered_map<std::string_view, Token> ids_by_text_;  // views into texts_
  Token bos_ = -1, eos_ = -1, eot_ = -1, unk_ = -1, pad_ = -1;
  bool add_bos_ = false, add_eos_ = false;
};

// Turns a stream of tokens into text without ever emitting half a UTF-8 character.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, bool special = false) : tok_(tok), special_(special) {}
  std::string push(Token id);  // complete characters so far (may be empty)
  std::string flush();         // whatever is left, even if incomplete
 private:
  const Tokenizer& tok_;
  bool special_;
  std::string pending_;
};

}  // namespace strata
