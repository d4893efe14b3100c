#pragma once
// Internal to src/tokenizer: the concrete tokenizer behind Tokenizer::from_gguf, a port of
// llama.cpp's llama_vocab (llama-vocab.cpp) and its text helpers (unicode.cpp).
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace strata::tokenizer_detail {

// llama_token_attr bits (llama.h); the GGUF token_type maps onto them one to one.
enum Attr : uint32_t {
  ATTR_UNDEFINED = 0,
  ATTR_UNKNOWN = 1u << 0,
  ATTR_UNUSED = 1u << 1,
  ATTR_NORMAL = 1u << 2,
  ATTR_CONTROL = 1u << 3,
  ATTR_USER_DEFINED = 1u << 4,
  ATTR_BYTE = 1u << 5,
  ATTR_NORMALIZED = 1u << 6,
  ATTR_LSTRIP = 1u << 7,
  ATTR_RSTRIP = 1u << 8,
};

// GGUF tokenizer.ggml.token_type values.
enum TokenType : int32_t {
  TYPE_UNDEFINED = 0, TYPE_NORMAL = 1, TYPE_UNKNOWN = 2, TYPE_CONTROL = 3,
  TYPE_USER_DEFINED = 4, TYPE_UNUSED = 5, TYPE_BYTE = 6,
};

// --- UTF-8 with llama.cpp's exact leniency (unicode.cpp) ---

// Length of the sequence a lead byte announces (1 for continuation/invalid bytes).
size_t utf8_len(char lead);
// Codepoints; an invalid sequence yields U+FFFD and consumes one byte.
std::vector<uint32_t> utf8_to_cpts(std::string_view text);
// Throws strata::Error for cpt > 0x10FFFF.
void append_utf8(std::string& out, uint32_t cpt);
// GPT-2 bytes_to_unicode(): the printable codepoint that stands for each byte.
const std::string& byte_to_unicode(uint8_t byte);
// The inverse; -1 when the codepoint stands for no byte.
int unicode_to_byte(uint32_t cpt);

// Splits text into words with a pre-tokenizer's regex list (PCRE2, UTF + UCP). Each regex
// further splits the pieces of the previous one; unmatched gaps stay pieces of their own.
class PreTokenizer {
 public:
  explicit PreTokenizer(const std::vector<std::string>& llama_cpp_regexes);
  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;
  // Words of `text` after llama.cpp's UTF-8 clean-up, each already mapped through
  // byte_to_unicode when byte_encode is set.
  std::vector<std::string> split(std::string_view text, bool byte_encode) const;

 private:
  struct Regex;
  std::vector<std::unique_ptr<Regex>> regexes_;
};

// Regex list of a tokenizer.ggml.pre name, as in llama_vocab::impl::load / llm_tokenizer_bpe.
struct PreTokenizerConfig {
  std::vector<std::string> regexes;
  bool ignore_merges = false;
  bool clean_spaces = true;
  int add_bos = -1;     // -1: leave the default
  bool no_bos = false;  // the vocabulary has no BOS unless the metadata names one
  bool byte_encode = true;          // GPT-2 byte-level symbols; false: raw UTF-8 with <0xXX> fallback
  bool escape_whitespaces = false;  // spaces become U+2581 before splitting (SentencePiece-style BPE)
  bool force_add_bos = false;       // add BOS even where the metadata says not to (llama.cpp's Gemma 4 fix-up)
  bool newline_runs_whole = false;  // a word of newlines that is a token stays whole (llama.cpp's Gemma 4 fix)
};
// Throws strata::Error naming the supported names for an unknown one.
PreTokenizerConfig pre_tokenizer_config(const std::string& pre);

class Vocab final : public Tokenizer {
 public:
  enum class Kind { SPM, BPE };

  explicit Vocab(const gguf::File& file);

  std::vector<Token> encode(std::string_view text, bool add_special, bool parse_special) const override;
  std::string token_to_piece(Token id, bool special = true) const override;
  std::string detokenize(const std::vector<Token>& ids, bool remove_special, bool unparse_special) const override;

 private:
  struct Fragment {
    Token token;  // -1: raw text [offset, offset + length)
    size_t offset, length;
  };

  void load(const gguf::File& file);
  void mark_special_tokens(const gguf::File& file);
  void build_caches();
  std::string piece_uncached(Token id) const;
  std::vector<Fragment> partition(std::string_view text, bool parse_special) const;
  Token text_to_token(std::string_view text) const;
  Token byte_to_token(uint8_t byte) const;
  int merge_rank(const std::string& left, const std::string& right) const;
  void spm_tokenize(const std::string& text, std::vector<Token>& out) const;
  void bpe_tokenize(std::string_view text, std::vector<Token>& out) const;
  bool has(uint32_t id, uint32_t attr) const { return (attrs_[id] & attr) != 0; }

  std::string path_;
  Kind kind_ = Kind::SPM;
  std::vector<float> scores_;
  std::vector<uint32_t> attrs_;
  std::vector<std::string> pieces_;         // token_to_piece(id, special=true)
  std::vector<Token> special_by_length_;    // control/user-defined/unknown, longest text first
  std::unordered_map<std::string, int> merge_ranks_;  // "left right" -> rank
  std::unique_ptr<PreTokenizer> pre_;
  bool add_space_prefix_ = false;
  bool clean_spaces_ = false;
  bool ignore_merges_ = false;
  bool byte_encode_ = true;
  bool escape_whitespaces_ = false;
  bool newline_runs_whole_ = false;
};

}  // namespace strata::tokenizer_detail
