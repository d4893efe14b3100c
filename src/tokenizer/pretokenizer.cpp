// BPE pre-tokenizers: the regex lists of llama.cpp's llm_tokenizer_bpe, run with PCRE2.
//
// llama.cpp runs these through hand-written splitters (gpt2, llama3) or std::regex over a
// "collapsed" text where every non-ASCII codepoint stands for its category; both behave as the
// Unicode-aware regex does. Two details are reproduced here: \s is exactly llama.cpp's whitespace
// set (the Unicode White_Space property), and invalid UTF-8 becomes U+FFFD before splitting.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <string>
#include <string_view>

#include "tokenizer/vocab.h"
#include "util/error.h"

namespace strata::tokenizer_detail {

namespace {

// White_Space, the set llama.cpp's unicode_cpt_flags.is_whitespace holds.
constexpr const char* kWhitespace =
    "\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";

// Rewrites \s and \S of a llama.cpp regex into explicit classes of kWhitespace, and letter
// subcategories into \p{L}.
std::string translate(const std::string& re) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < re.size(); ++i) {
    const char c = re[i];
    if (c == '\\' && i + 1 < re.size()) {
      const char n = re[i + 1];
      // \p{Lu} \p{Ll} \p{Lt} \p{Lm} \p{Lo}: llama.cpp matches every one of them as any letter.
      if (n == 'p' && re.compare(i + 2, 2, "{L") == 0 && i + 5 < re.size() && re[i + 5] == '}' &&
          std::string_view("ultmo").find(re[i + 4]) != std::string_view::npos) {
        out += "\\p{L}";
        i += 5;
        continue;
      }
      if (n == 's') {
        out += in_class ? std::string(kWhitespace) : "[" + std::string(kWhitespace) + "]";
      } else if (n == 'S') {
        if (in_class) throw Error("tokenizer: pre-tokenizer regex uses \\S inside a class: " + re);
        out += "[^" + std::string(kWhitespace) + "]";
      } else {
        out += c;
        out += n;
      }
      ++i;
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      if (i + 1 < re.size() && re[i + 1] == '^') out += re[++i];
      if (i + 1 < re.size() && re[i + 1] == ']') out += re[++i];  // leading ] is a literal
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

}  // namespace

// Regexes llama.cpp does not run as regexes but with unicode_regex_split_custom_afmoe: each run of
// digits (\p{N}) splits into a leading group of (count % 3) digits, then groups of three; the text
// before a run joins the run's first group (as llama.cpp has it, unlike the regex it stands for).
static bool is_digit_groups(const std::string& source) {
  return source == "\\p{AFMoE_digits}" || source == "\\d{1,3}(?=(?:\\d{3})*\\b)";
}

struct PreTokenizer::Regex {
  pcre2_code* code = nullptr;
  bool digit_groups = false;  // `code` finds digit runs; see is_digit_groups
  ~Regex() { pcre2_code_free(code); }
};

PreTokenizer::PreTokenizer(const std::vector<std::string>& llama_cpp_regexes) {
  for (const auto& source : llama_cpp_regexes) {
    const bool digit_groups = is_digit_groups(source);
    const std::string pattern = digit_groups ? "\\p{N}+" : translate(source);
    int err = 0;
    PCRE2_SIZE err_off = 0;
    auto re = std::make_unique<Regex>();
    re->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &err,
                             &err_off, nullptr);
    if (!re->code) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      throw Error("tokenizer: cannot compile pre-tokenizer regex '" + source + "' at offset " +
                  std::to_string(err_off) + ": " + reinterpret_cast<const char*>(msg));
    }
    re->digit_groups = digit_groups;
    pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE);  // optional: falls back to the interpreter
    regexes_.push_back(std::move(re));
  }
}

PreTokenizer::~PreTokenizer() = default;

std::vector<std::string> PreTokenizer::split(std::string_view text, bool byte_encode) const {
  // llama.cpp splits the codepoints, so bad bytes are U+FFFD from here on. `subject` is what
  // the regexes see: the same bytes, except surrogates (valid to llama.cpp, not to PCRE2) become
  // a private-use codepoint of the same length and category group (neither letter, digit nor space).
  const std::vector<uint32_t> cpts = utf8_to_cpts(text);
  std::string clean, subject;
  clean.reserve(text.size());
  subject.reserve(text.size());
  for (uint32_t c : cpts) {
    append_utf8(clean, c);
    append_utf8(subject, (c >= 0xD800 && c <= 0xDFFF) ? 0xE000 : c);
  }

  struct Span {
    size_t offset, length;
  };
  std::vector<Span> spans;
  if (!clean.empty()) spans.push_back({0, clean.size()});

  pcre2_match_data* md = nullptr;
  for (const auto& re : regexes_) {
    if (!md) md = pcre2_match_data_create(4, nullptr);
    std::vector<Span> next;
    next.reserve(spans.size() * 2);
    for (const Span& span : spans) {
      const auto* subj = reinterpret_cast<PCRE2_SPTR>(subject.data() + span.offset);
      size_t pos = 0, last = 0;
      while (pos <= span.length) {
        int rc = pcre2_match(re->code, subj, span.length, pos, PCRE2_NO_UTF_CHECK, md, nullptr);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT)  // very long words: the interpreter keeps its stack on the heap
          rc = pcre2_match(re->code, subj, span.length, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, nullptr);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
          PCRE2_UCHAR msg[256];
          pcre2_get_error_message(rc, msg, sizeof msg);
          if (md) pcre2_match_data_free(md);
          throw Error("tokenizer: pre-tokenizer regex failed on a " + std::to_string(span.length) +
                      "-byte piece of input: " + reinterpret_cast<const char*>(msg));
        }
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        const size_t begin = ov[0], end = ov[1];
        if (re->digit_groups) {
          std::vector<size_t> digit_ends;  // byte offset after each digit of the run
          for (size_t p = begin; p < end; p += utf8_len(subject[span.offset + p]))
            digit_ends.push_back(p + utf8_len(subject[span.offset + p]));
          const auto cut = [&](size_t at) {
            if (at > last) next.push_back({span.offset + last, at - last});
            last = at;
          };
          size_t k = digit_ends.size() % 3;
          if (k > 0) cut(digit_ends[k - 1]);
          for (; k < digit_ends.size(); k += 3) cut(digit_ends[k + 2]);
          pos = end;
          continue;
        }
        if (end == begin) {  // empty match: step over one character
          pos = end + (end < span.length ? utf8_len(subject[span.offset + end]) : 1);
          continue;
        }
        if (begin > last) next.push_back({span.offset + last, begin - last});
        next.push_back({span.offset + begin, end - begin});
        last = pos = end;
      }
      if (last < span.length) next.push_back({span.offset + last, span.length - last});
    }
    spans = std::move(next);
  }
  if (md) pcre2_match_data_free(md);

  std::vector<std::string> words;
  words.reserve(spans.size());
  for (const Span& span : spans) {
    std::string word;
    if (byte_encode) {
      for (size_t i = 0; i < span.length; ++i) word += byte_to_unicode(uint8_t(clean[span.offset + i]));
    } else {
      word.assign(clean, span.offset, span.length);
    }
    words.push_back(std::move(word));
  }
  return words;
}

// --- tokenizer.ggml.pre -> regex list (llama-vocab.cpp) ---

namespace {

const char* const kGpt2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
const char* const kLlama3 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* const kQwen2 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* const kTekken =
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+"
    "((?=[\\p{L}])([^A-Z]))*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* const kGpt4o =
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL]["
    "lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV]["
    "eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* const kSeedCoder =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| "
    "?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

const char* const kQwen35 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| "
    "?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
// deepseek-llm's letter class, as llama.cpp spells it (Unicode letters without the CJK blocks,
// which its own rule takes).
const char* const kDeepseekLlmLetters =
    "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+";
// SentencePiece-style BPE (Gemma 4): spaces are already U+2581, so only newlines split words.
const char* const kNewlineRuns = "[^\\n]+|[\\n]+";

// One row per regex list; `names` are the tokenizer.ggml.pre values llama.cpp maps onto it.
struct PreEntry {
  std::vector<const char*> names;
  std::vector<const char*> regexes;
  bool ignore_merges = false;
  bool clean_spaces = true;
  int add_bos = -1;
  bool no_bos = false;
  bool byte_encode = true;
  bool escape_whitespaces = false;
  bool force_add_bos = false;
  bool newline_runs_whole = false;
};

const std::vector<PreEntry>& pre_table() {
  static const std::vector<PreEntry> table = {
      {{"default"},
       {"[\\p{P}\\$\\+<=>\\^~\\|]+", kGpt2, "\\p{N}+", "[0-9][0-9][0-9]"}},
      {{"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano"},
       {kLlama3}, true, true, 1},
      {{"dbrx", "smaug-bpe"}, {kLlama3}},
      {{"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum",
        "modern-bert", "jina-v1-en", "jina-v2-code", "roberta-bpe", "mpt", "olmo", "jais", "exaone4"},
       {kGpt2}},
      {{"trillion", "granite-docling"}, {kGpt2}, false, false},
      {{"starcoder", "refact", "codeshell", "exaone", "minerva-7b", "mellum2"}, {"\\p{N}", kGpt2}},
      {{"smollm", "command-r"}, {"\\p{N}", kGpt2}, false, false},
      {{"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "hunyuan", "solar-open"}, {kQwen2}, false, false},
      {{"qwen35"}, {kQwen35}, false, false},
      {{"stablelm2", "megrez"}, {kQwen2}},
      {{"falcon"},
       {"[\\p{P}\\$\\+<=>\\^~\\|`]+", kGpt2, "[0-9][0-9][0-9]"}},
      {{"poro-chat"}, {" ?[^(\\s|.,!?…。，、।۔،)]+"}, false, false},
      {{"bloom", "gpt3-finnish"}, {" ?[^(\\s|.,!?…。，、।۔،)]+"}},
      {{"viking"}, {" ?[^(\\s|.,!?…。，、।۔،)]+", "\\p{N}"}, false, false},
      {{"chatglm-bpe"}, {kLlama3}, false, true, -1, true},
      {{"glm4", "glm5"}, {kLlama3}, true, true, -1, true},
      {{"tekken"}, {kTekken}, true, false, 1},
      {{"gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"}, {kGpt4o}, false, false},
      {{"seed-coder"}, {kSeedCoder}, false, false},
      {{"deepseek-llm"},
       {"[\r\n]", kDeepseekLlmLetters, "\\s?[!-/:-~！-／：-～‘-‟　-。]+", "\\s+$", "[一-龥ࠀ-一가-퟿]+", "\\p{N}+"},
       false, false},
      {{"deepseek-coder"}, {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[一-龥ࠀ-一가-퟿]+", "\\p{N}"}, false, false},
      {{"deepseek-v3"},
       {"\\p{N}{1,3}", "[一-龥぀-ゟ゠-ヿ]+",
        "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| "
        "?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"},
       false, false},
      // Regex lists copied verbatim from llama-vocab.cpp (llama.cpp as vendored by llama-cpp-python 0.3.36).
      {{"jais-2"},
       {"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s{512}(?!\\S)|\\s{256}(?!\\S)|\\s{128}(?!\\S)|\\s{64}(?!\\S)|\\s{32}(?!\\S)|\\s{16}(?!\\S)|\\s{8}(?!\\S)|\\s{4}(?!\\S)|\\s{1,2}(?!\\S)|\\s{1}"},
       false, true},
      {{"minicpm5"},
       {"\\p{N}{1,3}",
        "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}+| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
       true, true},
      {{"spark2_5"},
       {"\\p{N}{1,3}",
        "[一-龥぀-ゟ゠-ヿ]+",
        "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+|[\r\n]|\\s+(?!\\S)|\\s+",
        "\\p{N}"},
       false, false},
      {{"youtu"},
       {"[가-힣ㄱ-ㆎ]+|[！…“”‘’—：；，、-〿︰-﹏]+|[ㄅ-ㄯ]+|[一-龥぀-ゟ゠-ヿ]+",
        "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
       true, false},
      {{"exaone-moe"},
       {"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?(?:\\p{L}\\p{M}*(?: \\p{L}\\p{M}*)*)+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]?|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"},
       false, true},
      {{"bailingmoe", "bailingmoe2", "llada-moe"},
       {"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"},
       false, false},
      {{"ufakzeka"},
       {"[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
       false, false},
      {{"grok-2"},
       {"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
       false, false},
      {{"laguna"},
       {"[^\\n]+|[\\n]+",
        "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
       false, false},
      {{"hunyuan-dense", "hy_v4", "joyai-llm"},
       {"\\p{N}{1,3}",
        "[一-龥぀-ゟ゠-ヿ]+",
        "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"},
       false, false},
      {{"granite-embed-multi-97m"},
       {"[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}\\p{M}])([^a-z]))*((?=[\\p{L}\\p{M}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}\\p{M}])([^a-z]))+((?=[\\p{L}\\p{M}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
       true, false},
      {{"chameleon"},
       {"<sentinel:[0-9]+>",
        "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
        "([\\t\\n]|    |  )",
        "\\p{N}",
        "[\\p{P}!-/:-@\\[-`{-~]",
        "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"},
       false, false, 1},
      // The first regex of these two is llama.cpp's digit-grouping splitter (see is_digit_groups).
      {{"afmoe"},
       {"\\p{AFMoE_digits}",
        "[一-鿿㐀-䶿豈-﫿぀-ゟ゠-ヿ･-ﾟ⼀-⿟เ-๿຀-໿ក-៿က-႟ꩠ-ꩿꧠ-꧿가-힯ᄀ-ᇿ]+",
        "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
       false, false},
      {{"tiny_aya", "cohere2moe"},
       {"\\d{1,3}(?=(?:\\d{3})*\\b)",
        "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
       false, false},
      // tokenizer.ggml.model "gemma4" always uses this row, whatever tokenizer.ggml.pre says.
      {{"gemma4", "granite-embed-multi-311m"}, {kNewlineRuns}, false, true, -1, false, false, true, true, true},
      {{"sarvam-moe"}, {kNewlineRuns}, false, false, -1, false, false, true},
  };
  return table;
}

}  // namespace

PreTokenizerConfig pre_tokenizer_config(const std::string& pre) {
  const std::string name = pre.empty() ? "default" : pre;
  std::string supported;
  for (const PreEntry& e : pre_table()) {
    for (const char* n : e.names) {
      if (name == n) {
        PreTokenizerConfig cfg;
        cfg.regexes.assign(e.regexes.begin(), e.regexes.end());
        cfg.ignore_merges = e.ignore_merges;
        cfg.clean_spaces = e.clean_spaces;
        cfg.add_bos = e.add_bos;
        cfg.no_bos = e.no_bos;
        cfg.byte_encode = e.byte_encode;
        cfg.escape_whitespaces = e.escape_whitespaces;
        cfg.force_add_bos = e.force_add_bos;
        cfg.newline_runs_whole = e.newline_runs_whole;
        return cfg;
      }
      supported += supported.empty() ? "" : ", ";
      supported += n;
    }
  }
  throw Error("tokenizer: unknown tokenizer.ggml.pre '" + pre + "' (supported: " + supported + ")");
}

}  // namespace strata::tokenizer_detail
