// Loading a vocabulary from GGUF metadata the way llama.cpp's llama_vocab::impl::load does,
// including its fix-ups by token text (EOT/EOG/FIM detection), then the special-token
// partition, encode dispatch and detokenize.
#include <algorithm>
#include <cctype>
#include <cstdlib>

#include "gguf/gguf.h"
#include "tokenizer/vocab.h"
#include "util/error.h"

namespace strata::tokenizer_detail {

namespace {

const std::string kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's escaped space

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  for (size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
    out.append(s, pos, hit - pos);
    out += to;
  }
  out.append(s, pos, std::string::npos);
  s = std::move(out);
}

uint32_t attr_of_type(int64_t type) {
  switch (type) {
    case TYPE_UNKNOWN: return ATTR_UNKNOWN;
    case TYPE_UNUSED: return ATTR_UNUSED;
    case TYPE_NORMAL: return ATTR_NORMAL;
    case TYPE_CONTROL: return ATTR_CONTROL;
    case TYPE_USER_DEFINED: return ATTR_USER_DEFINED;
    case TYPE_BYTE: return ATTR_BYTE;
    default: return ATTR_UNDEFINED;
  }
}

// What a refused tokenizer type is, for the error message.
std::string unsupported_model_note(const std::string& model) {
  if (model == "bert") return " (BERT WordPiece)";
  if (model == "t5") return " (T5 Unigram)";
  if (model == "rwkv") return " (RWKV world)";
  if (model == "plamo2") return " (PLaMo-2)";
  return "";
}

bool in(std::string_view s, std::initializer_list<std::string_view> list) {
  return std::find(list.begin(), list.end(), s) != list.end();
}

}  // namespace

Vocab::Vocab(const gguf::File& file) : path_(file.path()) {
  load(file);
  mark_special_tokens(file);
  build_caches();
}

void Vocab::load(const gguf::File& file) {
  const auto where = [&](const std::string& what) { return "tokenizer: " + path_ + ": " + what; };

  const gguf::Value* model_v = file.find("tokenizer.ggml.model");
  if (!model_v) throw Error(where("no tokenizer.ggml.model (the file carries no vocabulary)"));
  const std::string model = model_v->as_string();
  const std::string pre = file.get_string("tokenizer.ggml.pre", "");
  bool force_add_bos = false;

  if (model == "llama") {
    kind_ = Kind::SPM;
    bos_ = 1, eos_ = 2, unk_ = 0;
    add_space_prefix_ = true;
    clean_spaces_ = false;
    add_bos_ = true;
    add_eos_ = false;
  } else if (model == "gpt2" || model == "gemma4") {
    kind_ = Kind::BPE;
    if (model == "gpt2") bos_ = 11, eos_ = 11;  // gemma4 has no default special ids
    unk_ = -1;
    const gguf::Value* merges = file.find("tokenizer.ggml.merges");
    if (!merges)
      throw Error(where("tokenizer.ggml.model is '" + model + "' but tokenizer.ggml.merges is missing"));
    const auto& items = merges->as_array().items;
    merge_ranks_.reserve(items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      const std::string& line = items[i].as_string();
      // llama.cpp splits at the first space after the first byte; a line without one maps ("", "").
      const size_t pos = line.find(' ', 1);
      std::string key = pos == std::string::npos ? std::string(" ") : line;
      merge_ranks_.emplace(std::move(key), int(i));
    }
    // llama.cpp ignores tokenizer.ggml.pre for gemma4 vocabularies.
    PreTokenizerConfig cfg = pre_tokenizer_config(model == "gemma4" ? "gemma4" : pre);  // throws for unknown names
    add_space_prefix_ = false;
    clean_spaces_ = cfg.clean_spaces;
    ignore_merges_ = cfg.ignore_merges;
    byte_encode_ = cfg.byte_encode;
    escape_whitespaces_ = cfg.escape_whitespaces;
    newline_runs_whole_ = cfg.newline_runs_whole;
    force_add_bos = cfg.force_add_bos;
    if (cfg.add_bos >= 0) add_bos_ = cfg.add_bos != 0;
    if (cfg.no_bos) bos_ = -1;
    pre_ = std::make_unique<PreTokenizer>(cfg.regexes);
  } else {
    throw Error(where("unsupported tokenizer.ggml.model '" + model + "'" + unsupported_model_note(model) +
                      " (supported: llama, gpt2, gemma4)"));
  }
  add_space_prefix_ = file.get_bool("tokenizer.ggml.add_space_prefix", add_space_prefix_);

  const gguf::Value* tokens_v = file.find("tokenizer.ggml.tokens");
  if (!tokens_v) throw Error(where("no tokenizer.ggml.tokens"));
  if (tokens_v->type != gguf::ValueType::ARRAY || tokens_v->as_array().elem_type != gguf::ValueType::STRING)
    throw Error(where("tokenizer.ggml.tokens is not an array of strings"));
  const auto& tokens = tokens_v->as_array().items;
  const size_t n = tokens.size();

  const auto optional_array = [&](const char* key) -> const std::vector<gguf::Value>* {
    const gguf::Value* v = file.find(key);
    if (!v) return nullptr;
    if (v->type != gguf::ValueType::ARRAY) throw Error(where(std::string(key) + " is not an array"));
    const auto& items = v->as_array().items;
    if (items.size() < n)
      throw Error(where(std::string(key) + " has " + std::to_string(items.size()) + " entries for " +
                        std::to_string(n) + " tokens"));
    return &items;
  };
  const auto* scores = optional_array("tokenizer.ggml.scores");
  const auto* types = optional_array("tokenizer.ggml.token_type");

  texts_.resize(n);
  scores_.assign(n, 0.0f);
  types_.assign(n, TYPE_NORMAL);
  attrs_.assign(n, ATTR_NORMAL);
  for (size_t i = 0; i < n; ++i) {
    texts_[i] = tokens[i].as_string();
    if (texts_[i].empty()) texts_[i] = "[EMPTY_" + std::to_string(i) + "]";
    if (scores) scores_[i] = float((*scores)[i].as_float());
    if (types) {
      types_[i] = int32_t((*types)[i].as_int());
      attrs_[i] = attr_of_type(types_[i]);
    }
  }
  // Filled in id order without reserving, like llama.cpp's token_to_id: the same libstdc++ hash of
  // the same bytes and the same growth give the same iteration order (mark_special_tokens needs it).
  for (size_t i = 0; i < n; ++i) {
    const auto [it, inserted] = ids_by_text_.emplace(texts_[i], Token(i));
    if (!inserted)
      throw Error(where("duplicate token '" + texts_[i] + "' at ids " + std::to_string(it->second) + " and " +
                        std::to_string(i)));
  }

  // Special ids: metadata overrides the defaults above when in range; defaults out of range are dropped.
  const auto special_id = [&](const char* key, Token& id) {
    if (id >= 0 && size_t(id) >= n) id = -1;
    const gguf::Value* v = file.find(key);
    if (!v || !v->is_integer()) return;
    const int64_t value = v->as_int();
    if (value >= 0 && uint64_t(value) < n) id = Token(value);
  };
  special_id("tokenizer.ggml.bos_token_id", bos_);
  special_id("tokenizer.ggml.eos_token_id", eos_);
  special_id("tokenizer.ggml.eot_token_id", eot_);
  special_id("tokenizer.ggml.unknown_token_id", unk_);
  special_id("tokenizer.ggml.padding_token_id", pad_);

  add_bos_ = file.get_bool("tokenizer.ggml.add_bos_token", add_bos_);
  add_eos_ = file.get_bool("tokenizer.ggml.add_eos_token", add_eos_);
  if (force_add_bos) add_bos_ = true;
  if (add_bos_ && bos_ < 0) throw Error(where("tokenizer.ggml.add_bos_token is true, but tokenizer.ggml.bos_token_id is not set"));
  if (add_eos_ && eos_ < 0) throw Error(where("tokenizer.ggml.add_eos_token is true, but tokenizer.ggml.eos_token_id is not set"));
}

// llama.cpp finds EOT/EOM/FIM/EOG tokens by their text and forces them to be control tokens.
void Vocab::mark_special_tokens(const gguf::File& file) {
  const Token n = n_vocab();
  Token eom = -1, fim_pre = -1, fim_suf = -1, fim_mid = -1, fim_pad = -1, fim_rep = -1, fim_sep = -1;
  if (const gguf::Value* v = file.find("tokenizer.ggml.eom_token_id"); v && v->is_integer() && v->as_int() >= 0 && v->as_int() < n)
    eom = Token(v->as_int());
  const auto meta_id = [&](std::initializer_list<const char*> keys, Token& id) {
    for (const char* key : keys)
      if (const gguf::Value* v = file.find(key); v && v->is_integer() && v->as_int() >= 0 && v->as_int() < n)
        id = Token(v->as_int());
  };
  meta_id({"tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.prefix_token_id"}, fim_pre);
  meta_id({"tokenizer.ggml.fim_suf_token_id", "tokenizer.ggml.suffix_token_id"}, fim_suf);
  meta_id({"tokenizer.ggml.fim_mid_token_id", "tokenizer.ggml.middle_token_id"}, fim_mid);
  meta_id({"tokenizer.ggml.fim_pad_token_id"}, fim_pad);
  meta_id({"tokenizer.ggml.fim_rep_token_id"}, fim_rep);
  meta_id({"tokenizer.ggml.fim_sep_token_id"}, fim_sep);

  const auto force_control = [&](Token id) {
    if (!(attrs_[id] & ATTR_CONTROL)) {
      attrs_[id] |= ATTR_CONTROL;
      types_[id] = TYPE_CONTROL;
    }
  };
  const auto detect = [&](Token& slot, Token id, std::initializer_list<std::string_view> names) {
    if (slot < 0 && in(texts_[id], names)) {
      slot = id;
      force_control(id);
    }
  };
  // llama.cpp walks its token_to_id; where a vocabulary holds two candidates (<|eot_id|> and
  // <|end_of_text|>, <|im_end|> and <|endoftext|>) the first in that walk wins. ids_by_text_ is
  // filled as token_to_id is (see load), so it walks in the same order.
  for (const auto& [text, id] : ids_by_text_) {
    detect(eot_, id, {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
                      "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>"});
    detect(eom, id, {"<|eom_id|>"});
    detect(fim_pre, id, {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
                         "<|code_prefix|>", "<|prefix|>"});
    detect(fim_suf, id, {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
                         "<|code_suffix|>", "<|suffix|>"});
    detect(fim_mid, id, {"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
                         "<|code_middle|>", "<|middle|>"});
    detect(fim_pad, id, {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"});
    detect(fim_rep, id, {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"});
    detect(fim_sep, id, {"<|file_sep|>"});
  }

  std::vector<Token> eog;
  for (Token id : {fim_pad, fim_rep, fim_sep})
    if (id >= 0) eog.push_back(id);
  for (Token id = 0; id < n; ++id) {
    if (in(texts_[id], {"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
                        "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
                        "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
                        "<｜end▁of▁sentence｜>", "[e~["})) {
      eog.push_back(id);
      force_control(id);
    }
  }
  // gpt-oss: these always render.
  for (Token id = 0; id < n; ++id) {
    if (in(texts_[id], {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"})) {
      attrs_[id] = ATTR_USER_DEFINED;
      types_[id] = TYPE_USER_DEFINED;
    }
  }
  for (Token id : {eos_, eot_, eom})
    if (id >= 0) eog.push_back(id);
  std::sort(eog.begin(), eog.end());
  eog.erase(std::unique(eog.begin(), eog.end()), eog.end());

  const auto has_text = [&](std::string_view t) {
    return std::any_of(eog.begin(), eog.end(), [&](Token id) { return texts_[id] == t; });
  };
  const auto drop = [&](std::string_view t, uint32_t attr, int32_t type) {
    for (auto it = eog.begin(); it != eog.end(); ++it) {
      if (texts_[*it] == t) {
        attrs_[*it] = attr;
        types_[*it] = type;
        eog.erase(it);
        return;
      }
    }
  };
  // o200k_harmony / solar-open: "<|end|>" does not end generation there.
  const bool has_call = has_text("<|call|>") || has_text("<|calls|>");
  if (has_call && has_text("<|end|>") && (has_text("<|return|>") || has_text("<|flush|>")))
    drop("<|end|>", ATTR_USER_DEFINED, TYPE_USER_DEFINED);
  // gemma4 / paddleocr: "</s>" is ordinary text there.
  if (has_text("<|tool_response>") && has_text("</s>")) drop("</s>", ATTR_NORMAL, TYPE_NORMAL);
  eog_ids_ = std::move(eog);

  // Per-model strip attributes (llama.cpp keys them on names).
  std::string name = file.get_string("general.name", "");
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  const std::string pre = file.get_string("tokenizer.ggml.pre", "");
  const std::string arch = file.architecture();
  const auto set_attr = [&](std::string_view text, uint32_t attr, bool on) {
    const Token id = find_token(text);
    if (id >= 0) attrs_[id] = on ? (attrs_[id] | attr) : (attrs_[id] & ~attr);
  };
  const auto contains = [](const std::string& s, std::initializer_list<std::string_view> subs) {
    return std::any_of(subs.begin(), subs.end(), [&](std::string_view sub) { return s.find(sub) != std::string::npos; });
  };
  if (contains(pre, {"jina-v2-de", "jina-v2-es", "jina-v2-code"}) || contains(arch, {"nomic-bert-moe", "jina-bert-v3"})) {
    set_attr("<mask>", ATTR_LSTRIP, true);
  } else if (contains(name, {"phi-3", "phi3"})) {
    for (Token id = 0; id < n; ++id)
      if (has(id, ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)) attrs_[id] |= ATTR_RSTRIP;
    set_attr("</s>", ATTR_RSTRIP, true);
    for (const char* t : {"<unk>", "<s>", "<|endoftext|>"}) set_attr(t, ATTR_RSTRIP, false);
  } else if (contains(name, {"modern-bert"})) {
    set_attr("[MASK]", ATTR_LSTRIP, true);
  }
}

void Vocab::build_caches() {
  const Token n = n_vocab();
  for (Token id = 0; id < n; ++id)
    if (has(id, ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)) special_by_length_.push_back(id);
  // std::sort as llama.cpp does (ties between equal lengths keep whatever order it leaves).
  std::sort(special_by_length_.begin(), special_by_length_.end(),
            [&](Token a, Token b) { return texts_[a].size() > texts_[b].size(); });

  pieces_.resize(size_t(n));
  for (Token id = 0; id < n; ++id) pieces_[id] = piece_uncached(id);
}

// llama_vocab::impl::token_to_piece with special=true, lstrip=0 (what llama.cpp caches).
std::string Vocab::piece_uncached(Token id) const {
  const std::string& text = texts_[id];
  if (has(id, ATTR_UNKNOWN | ATTR_CONTROL | ATTR_USER_DEFINED)) return text;
  if (has(id, ATTR_NORMAL)) {
    if (kind_ == Kind::SPM || escape_whitespaces_) {
      std::string out = text;
      replace_all(out, kSpace, " ");
      return out;
    }
    // Byte-level BPE: every codepoint stands for one byte.
    std::string out;
    for (uint32_t cpt : utf8_to_cpts(text)) {
      const int byte = unicode_to_byte(cpt);
      if (byte >= 0) {
        out.push_back(char(byte));
        continue;
      }
      std::string utf8;
      append_utf8(utf8, cpt);
      out += "[UNK_BYTE_0x";
      static const char* hex = "0123456789abcdef";
      for (unsigned char c : utf8) {
        out.push_back(hex[c >> 4]);
        out.push_back(hex[c & 15]);
      }
      out += text + "]";
    }
    return out;
  }
  if (has(id, ATTR_BYTE)) {
    const std::string hex = text.size() >= 5 ? text.substr(3, 2) : std::string();
    return std::string(1, char(std::strtol(hex.c_str(), nullptr, 16)));
  }
  return {};
}

std::string Vocab::token_to_piece(Token id, bool special) const {
  if (id < 0 || id >= n_vocab())
    throw Error("tokenizer: token id " + std::to_string(id) + " out of range (vocabulary of " +
                std::to_string(n_vocab()) + ")");
  if (!special && has(id, ATTR_UNKNOWN | ATTR_CONTROL)) return {};
  return pieces_[id];
}

Token Vocab::text_to_token(std::string_view text) const {
  const auto it = ids_by_text_.find(text);
  return it == ids_by_text_.end() ? -1 : it->second;
}

Token Vocab::byte_to_token(uint8_t byte) const {
  static const char* hex = "0123456789ABCDEF";
  const char buf[6] = {'<', '0', 'x', hex[byte >> 4], hex[byte & 15], '>'};
  Token id = text_to_token(std::string_view(buf, 6));
  if (id < 0) id = text_to_token(std::string_view(reinterpret_cast<const char*>(&byte), 1));
  if (id < 0)
    throw Error("tokenizer: " + path_ + ": no byte-fallback token <0x" + std::string(buf + 3, 2) +
                "> in the vocabulary");
  return id;
}

int Vocab::merge_rank(const std::string& left, const std::string& right) const {
  std::string key;
  key.reserve(left.size() + right.size() + 1);
  key += left;
  key += ' ';
  key += right;
  const auto it = merge_ranks_.find(key);
  return it == merge_ranks_.end() ? -1 : it->second;
}

// llama_vocab::impl::tokenizer_st_partition: each special token in turn (longest first) cuts
// every remaining raw-text fragment at each of its occurrences.
std::vector<Vocab::Fragment> Vocab::partition(std::string_view text, bool parse_special) const {
  std::vector<Fragment> frags;
  if (text.empty()) return frags;
  frags.push_back({-1, 0, text.size()});
  std::vector<Fragment> next;
  for (Token id : special_by_length_) {
    if (!parse_special && has(id, ATTR_CONTROL | ATTR_UNKNOWN)) continue;  // user-defined tokens always split
    const std::string& tok = texts_[id];
    bool any = false;
    for (const Fragment& f : frags) {
      if (f.token < 0 && text.substr(f.offset, f.length).find(tok) != std::string_view::npos) {
        any = true;
        break;
      }
    }
    if (!any) continue;
    next.clear();
    for (const Fragment& f : frags) {
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      size_t base = f.offset, len = f.length;
      while (true) {
        const size_t match = text.substr(0, base + len).find(tok, base);
        if (match == std::string_view::npos) {
          if (len > 0) next.push_back({-1, base, len});
          break;
        }
        if (match > base) {
          size_t left = match - base;
          if (has(id, ATTR_LSTRIP))
            while (left > 0 && std::isspace(static_cast<unsigned char>(text[base + left - 1]))) --left;
          if (left > 0) next.push_back({-1, base, left});
        }
        next.push_back({id, 0, 0});
        const size_t end = match + tok.size();
        if (end >= base + len) break;
        size_t right_off = end, right_len = base + len - end;
        if (has(id, ATTR_RSTRIP))
          while (right_len > 0 && std::isspace(static_cast<unsigned char>(text[right_off]))) ++right_off, --right_len;
        base = right_off;
        len = right_len;
      }
    }
    std::swap(frags, next);
  }
  return frags;
}

std::vector<Token> Vocab::encode(std::string_view text, bool add_special, bool parse_special) const {
  std::vector<Token> out;
  const std::vector<Fragment> frags = partition(text, parse_special);
  if (add_special && add_bos_) out.push_back(bos_);
  if (kind_ == Kind::SPM) {
    bool prev_special = true;  // the first fragment gets the space prefix too
    for (const Fragment& f : frags) {
      if (f.token >= 0) {
        out.push_back(f.token);
        prev_special = true;
        continue;
      }
      std::string raw;
      if (add_space_prefix_ && prev_special) raw = " ";
      raw.append(text.substr(f.offset, f.length));
      replace_all(raw, " ", kSpace);
      spm_tokenize(raw, out);
      prev_special = false;
    }
  } else {
    for (const Fragment& f : frags) {
      if (f.token >= 0)
        out.push_back(f.token);
      else
        bpe_tokenize(text.substr(f.offset, f.length), out);
    }
  }
  if (add_special && add_eos_) out.push_back(eos_);
  return out;
}

// llama_vocab::impl::detokenize, including its three clean-up passes (ported as written, in place).
std::string Vocab::detokenize(const std::vector<Token>& ids, bool remove_special, bool unparse_special) const {
  size_t begin = 0, end = ids.size();
  bool remove_space = add_space_prefix_;
  if (remove_special && add_bos_ && end > 0 && ids[0] == bos_) {
    remove_space = false;
    begin = 1;
  }
  if (remove_special && add_eos_ && end > begin && ids[end - 1] == eos_) --end;

  std::string text;
  for (size_t i = begin; i < end; ++i) {
    std::string piece = token_to_piece(ids[i], unparse_special);
    if (remove_space && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
    remove_space = false;
    text += piece;
  }
  if (!clean_spaces_) return text;

  int total = int(text.size());
  // first pass: " ?", " !", " .", " ,"
  {
    const int total1 = total;
    total = total ? 1 : 0;
    for (int i = 1; i < total1; ++i) {
      const char x = text[i];
      if (text[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) --total;
      text[total++] = x;
    }
  }
  // second pass: strip a single apostrophe between spaces
  {
    const int total2 = total;
    total = total ? 1 : 0;
    for (int i = 1; i < total2; ++i) {
      const char x = text[i];
      if (x == '\'' && i + 1 < total2 && text[i - 1] == ' ' && text[i + 1] == ' ') {
        --total;
        text[++i] = '\0';
      }
      text[total++] = x;
    }
  }
  // third pass: " 's", " 'm", " 're", " 've"
  {
    const int total3 = total;
    total = total ? 1 : 0;
    for (int i = 1; i < total3; ++i) {
      const char x = text[i];
      if (text[i - 1] == ' ' && x == '\'' && i + 1 < total3) {
        const char x1 = text[i + 1];
        if (x1 == 's' || x1 == 'm') {
          --total;
        } else if (x1 != 't' && x1 != 'd' && i + 2 < total3) {
          const char x2 = text[i + 2];
          if ((x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e')) --total;
        }
      }
      text[total++] = x;
    }
  }
  text.resize(size_t(total));
  return text;
}

}  // namespace strata::tokenizer_detail
