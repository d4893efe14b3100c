// Tokenizer tests: exact agreement with llama.cpp on real vocabularies (fixtures written by
// scripts/gen_tokenizer_fixtures.py), StreamDecoder, and error paths on synthetic GGUFs.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "gguf/gguf.h"
#include "gguf/writer.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace fs = std::filesystem;
using strata::Token;
using strata::Tokenizer;
using Json = nlohmann::json;

namespace {

fs::path fixture_dir() {
  if (const char* env = std::getenv("STRATA_FIXTURES")) return fs::path(env) / "tokenizer";
  return fs::path(__FILE__).parent_path().parent_path() / "fixtures" / "tokenizer";
}

fs::path model_dir() {
  const char* home = std::getenv("HOME");
  return fs::path(home ? home : "/root") / ".cache" / "strata" / "models";
}

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(char(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '\n') out += "\\n";
    else if (c < 0x20 || c == 0x7F) out += "\\x" + std::string(1, "0123456789abcdef"[c >> 4]) + "0123456789abcdef"[c & 15];
    else out.push_back(char(c));
  }
  return out;
}

bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    i += n;
  }
  return true;
}

// One loaded model + its fixture, shared by the tests of a suite (loading is the slow part).
struct Loaded {
  std::unique_ptr<strata::gguf::File> file;
  std::unique_ptr<Tokenizer> tok;
  Json fixture;
  double load_ms = 0;
};

const Loaded* load(const std::string& model, const std::string& stem) {
  static std::map<std::string, std::unique_ptr<Loaded>> cache;
  if (auto it = cache.find(model); it != cache.end()) return it->second.get();
  const fs::path path = model_dir() / model;
  if (!fs::exists(path)) return nullptr;
  auto l = std::make_unique<Loaded>();
  l->file = strata::gguf::File::open(path.string());
  const auto t0 = std::chrono::steady_clock::now();
  l->tok = Tokenizer::from_gguf(*l->file);
  l->load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::ifstream in(fixture_dir() / (stem + ".json"));
  if (!in) ADD_FAILURE() << "missing fixture " << (fixture_dir() / (stem + ".json"));
  else l->fixture = Json::parse(in);
  return (cache[model] = std::move(l)).get();
}

struct ModelCase {
  const char* model;
  const char* stem;
};

class RealVocab : public ::testing::TestWithParam<ModelCase> {
 protected:
  void SetUp() override {
    loaded_ = load(GetParam().model, GetParam().stem);
    if (!loaded_) GTEST_SKIP() << "model " << GetParam().model << " not in " << model_dir();
    ASSERT_FALSE(loaded_->fixture.is_null());
  }
  const Tokenizer& tok() const { return *loaded_->tok; }
  const Json& fx() const { return loaded_->fixture; }
  const Loaded* loaded_ = nullptr;
};

TEST_P(RealVocab, Metadata) {
  EXPECT_EQ(tok().n_vocab(), fx()["n_vocab"].get<int>());
  EXPECT_EQ(tok().bos(), fx()["bos"].get<int>());
  EXPECT_EQ(tok().eos(), fx()["eos"].get<int>());
  EXPECT_EQ(tok().eot(), fx()["eot"].get<int>());
  EXPECT_EQ(tok().add_bos(), fx()["add_bos"].get<bool>());
  EXPECT_EQ(tok().add_eos(), fx()["add_eos"].get<bool>());
  std::vector<Token> eog;
  for (Token id = 0; id < tok().n_vocab(); ++id)
    if (tok().is_eog(id)) eog.push_back(id);
  EXPECT_EQ(eog, fx()["eog"].get<std::vector<Token>>());
  std::cout << "[ load     ] " << GetParam().model << ": " << loaded_->load_ms << " ms\n";
}

// Fixture ids are keyed "special|plain" (parse_special) + "_bos|_nobos" (add_special).
void check_encode(const Tokenizer& tok, const Json& cases, const std::string& label) {
  int total = 0, agree = 0;
  for (const Json& c : cases) {
    const std::string input = from_hex(c["input_hex"].get<std::string>());
    for (const auto& [key, ids] : c["ids"].items()) {
      const bool parse_special = key.rfind("special", 0) == 0;
      const bool add_special = key.find("_bos") != std::string::npos;
      const auto expected = ids.get<std::vector<Token>>();
      const auto got = tok.encode(input, add_special, parse_special);
      ++total;
      if (got == expected) {
        ++agree;
      } else {
        ADD_FAILURE() << label << " " << key << " '" << printable(input) << "': got "
                      << ::testing::PrintToString(got) << "\n expected " << ::testing::PrintToString(expected);
      }
    }
  }
  std::cout << "[ encode   ] " << label << ": " << agree << "/" << total << " identical\n";
}

// Decoded texts are keyed "<ids key>/remove=R/unparse=U" (llama_detokenize's flags).
void check_decode(const Tokenizer& tok, const Json& cases, const std::string& label) {
  int total = 0, agree = 0;
  for (const Json& c : cases) {
    const std::string input = from_hex(c["input_hex"].get<std::string>());
    for (const auto& [key, hex] : c["decoded_hex"].items()) {
      const std::string src = key.substr(0, key.find('/'));
      const bool remove = key.find("remove=1") != std::string::npos;
      const bool unparse = key.find("unparse=1") != std::string::npos;
      const auto ids = c["ids"][src].get<std::vector<Token>>();
      const std::string expected = from_hex(hex.get<std::string>());
      const std::string got = tok.detokenize(ids, remove, unparse);
      ++total;
      if (got == expected) {
        ++agree;
      } else {
        ADD_FAILURE() << label << " " << key << " '" << printable(input) << "': got '" << printable(got)
                      << "'\n expected '" << printable(expected) << "'";
      }
      if (!remove) {
        EXPECT_EQ(tok.decode(ids, unparse), got);
      }
    }
  }
  std::cout << "[ decode   ] " << label << ": " << agree << "/" << total << " identical\n";
}

TEST_P(RealVocab, EncodeCorpusMatchesLlamaCpp) {
  check_encode(tok(), fx()["cases"], std::string(GetParam().stem) + " corpus");
}

TEST_P(RealVocab, EncodeRandomMatchesLlamaCpp) {
  check_encode(tok(), fx()["random_cases"], std::string(GetParam().stem) + " random");
}

TEST_P(RealVocab, DecodeCorpusMatchesLlamaCpp) {
  check_decode(tok(), fx()["cases"], std::string(GetParam().stem) + " corpus");
}

TEST_P(RealVocab, DecodeRandomMatchesLlamaCpp) {
  check_decode(tok(), fx()["random_cases"], std::string(GetParam().stem) + " random");
}

// token_to_piece over the whole vocabulary, hashed per block as the generator does.
TEST_P(RealVocab, PiecesMatchLlamaCpp) {
  const Json& p = fx()["pieces"];
  const int block = p["block"].get<int>();
  for (const bool special : {true, false}) {
    const auto expected = p[special ? "fnv_special" : "fnv_plain"].get<std::vector<std::string>>();
    uint64_t h = 0xCBF29CE484222325ull;
    size_t b = 0;
    const auto mix = [&](unsigned char c) { h = (h ^ c) * 0x100000001B3ull; };
    for (Token id = 0; id < tok().n_vocab(); ++id) {
      const std::string piece = tok().token_to_piece(id, special);
      for (int k = 0; k < 4; ++k) mix(static_cast<unsigned char>(piece.size() >> (8 * k)));
      for (unsigned char c : piece) mix(c);
      if ((id + 1) % block == 0 || id + 1 == tok().n_vocab()) {
        char buf[17];
        std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
        ASSERT_LT(b, expected.size());
        EXPECT_EQ(buf, expected[b]) << "pieces of ids [" << b * block << ", " << id << "] special=" << special;
        ++b;
        h = 0xCBF29CE484222325ull;
      }
    }
    EXPECT_EQ(b, expected.size());
  }
}

TEST_P(RealVocab, StreamDecoderNeverSplitsCharacters) {
  const std::string text = "Family: 👨‍👩‍👧‍👦 flag 🇺🇸 rare 𠀋𝔘 and é, 日本語 🏳️‍🌈!";
  const auto ids = tok().encode(text, false, false);
  strata::StreamDecoder stream(tok());
  std::string all;
  int incomplete_pieces = 0;
  for (Token id : ids) {
    if (!valid_utf8(tok().token_to_piece(id, false))) ++incomplete_pieces;
    const std::string chunk = stream.push(id);
    EXPECT_TRUE(valid_utf8(chunk)) << "chunk '" << printable(chunk) << "' after token " << id;
    all += chunk;
  }
  all += stream.flush();
  EXPECT_EQ(all, text);
  EXPECT_EQ(all, tok().decode(ids, false));
  EXPECT_GT(incomplete_pieces, 0) << "the text should need tokens holding partial characters";
}

TEST_P(RealVocab, SpecialTokenRoundTrip) {
  for (Token id : {tok().eos(), tok().eot()}) {
    if (id < 0) continue;
    EXPECT_TRUE(tok().is_control(id));
    EXPECT_TRUE(tok().is_eog(id));
    EXPECT_EQ(tok().token_to_piece(id, false), "");
    EXPECT_EQ(tok().find_token(tok().token_text(id)), id);
    EXPECT_EQ(tok().encode(tok().token_text(id), false, true), std::vector<Token>{id});
    EXPECT_NE(tok().encode(tok().token_text(id), false, false), std::vector<Token>{id});
  }
  EXPECT_EQ(tok().find_token("no such token \x01"), -1);
}

INSTANTIATE_TEST_SUITE_P(Models, RealVocab,
                         ::testing::Values(ModelCase{"SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct.Q4_1"},
                                           ModelCase{"gemma-3-270m-q4_k_m.gguf", "gemma-3-270m-q4_k_m"}),
                         [](const auto& info) { return std::string(info.param.stem).substr(0, 6) == "SmolLM" ? "smollm" : "gemma3"; });

// --- a real vocabulary under another pre-tokenizer or flag (pre-tokenizers we have no model for) ---

class VocabVariant : public ::testing::TestWithParam<const char*> {};

TEST_P(VocabVariant, MatchesLlamaCpp) {
  std::ifstream in(fixture_dir() / (std::string(GetParam()) + ".json"));
  ASSERT_TRUE(in) << "missing fixture " << GetParam();
  const Json fx = Json::parse(in);
  const fs::path model = model_dir() / fx["base_model"].get<std::string>();
  if (!fs::exists(model)) GTEST_SKIP() << "model " << model << " not found";

  // The generator wrote the same thing: the model's metadata, one key overridden, no tensors.
  const auto base = strata::gguf::File::open(model.string());
  strata::gguf::Writer w;
  for (const auto& [key, value] : base->metadata()) w.set(key, value);
  const std::string key = fx["override"]["key"].get<std::string>();
  const Json& value = fx["override"]["value"];
  w.set(key, value.is_boolean() ? strata::gguf::Value::boolean(value.get<bool>())
                                : strata::gguf::Value::str(value.get<std::string>()));
  const std::vector<uint8_t> bytes = w.to_bytes();
  const auto file = strata::gguf::File::parse(bytes.data(), bytes.size(), GetParam());
  const auto tok = Tokenizer::from_gguf(*file);

  EXPECT_EQ(tok->bos(), fx["bos"].get<int>());
  EXPECT_EQ(tok->eos(), fx["eos"].get<int>());
  EXPECT_EQ(tok->add_bos(), fx["add_bos"].get<bool>());
  check_encode(*tok, fx["random_cases"], GetParam());
  check_decode(*tok, fx["random_cases"], GetParam());
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, VocabVariant,
    ::testing::Values("smollm-vocab-pre-llama-bpe", "smollm-vocab-pre-qwen2", "smollm-vocab-pre-gpt-2",
                      "smollm-vocab-pre-default", "smollm-vocab-pre-starcoder", "smollm-vocab-pre-gpt-4o",
                      "smollm-vocab-pre-tekken", "smollm-vocab-pre-deepseek-coder", "smollm-vocab-pre-falcon",
                      "smollm-vocab-pre-poro-chat", "gemma3-vocab-space-prefix"),
    [](const auto& info) {
      std::string name = info.param;
      for (char& c : name)
        if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
      return name;
    });

// --- synthetic vocabularies ---

using strata::gguf::Value;
using strata::gguf::Writer;

struct Synthetic {
  std::vector<uint8_t> bytes;
  std::unique_ptr<strata::gguf::File> file;
};

std::unique_ptr<Tokenizer> build(Writer& w, Synthetic& keep) {
  keep.bytes = w.to_bytes();
  keep.file = strata::gguf::File::parse(keep.bytes.data(), keep.bytes.size(), "synthetic.gguf");
  return Tokenizer::from_gguf(*keep.file);
}

// A tiny SentencePiece vocabulary: control tokens, "▁", letters, a merge, and all 256 byte tokens.
Writer spm_writer() {
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "b", "ab", "\xE2\x96\x81" "ab"};
  std::vector<float> scores = {0, 0, 0, -1, -2, -2, -1.5f, -0.5f};
  std::vector<int32_t> types = {2, 3, 3, 1, 1, 1, 1, 1};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    tokens.push_back(buf);
    scores.push_back(0);
    types.push_back(6);
  }
  Writer w;
  w.set("general.architecture", Value::str("llama"));
  w.set("tokenizer.ggml.model", Value::str("llama"));
  w.set("tokenizer.ggml.tokens", Value::strings(tokens));
  w.set("tokenizer.ggml.scores", Value::f32s(scores));
  w.set("tokenizer.ggml.token_type", Value::i32s(types));
  return w;
}

TEST(SyntheticVocab, SpmMergesScoresAndByteFallback) {
  Writer w = spm_writer();
  Synthetic keep;
  const auto tok = build(w, keep);
  EXPECT_TRUE(tok->add_bos());
  EXPECT_EQ(tok->bos(), 1);
  // " ab" -> "▁ab"; "é" has no token: its two bytes fall back to <0xC3><0xA9> (ids 8 + byte).
  EXPECT_EQ(tok->encode("ab", true, false), (std::vector<Token>{1, 7}));
  EXPECT_EQ(tok->encode("\xC3\xA9", false, false), (std::vector<Token>{3, 8 + 0xC3, 8 + 0xA9}));
  // add_space_prefix: llama_detokenize drops the leading space of the first piece only, and not
  // at all when remove_special dropped a BOS (llama.cpp's rule, reproduced as is).
  EXPECT_EQ(tok->decode({7}, false), "ab");
  EXPECT_EQ(tok->decode({1, 7}, false), " ab");
  EXPECT_EQ(tok->detokenize({1, 7}, true, false), " ab");
  EXPECT_EQ(tok->decode({1, 7}, true), "<s> ab");

  // A character spelled by byte tokens comes out of the stream only once complete.
  strata::StreamDecoder stream(*tok);
  EXPECT_EQ(stream.push(8 + 0xE2), "");
  EXPECT_EQ(stream.push(8 + 0x82), "");
  EXPECT_EQ(stream.push(8 + 0xAC), "\xE2\x82\xAC");
  EXPECT_EQ(stream.push(8 + 0xF0), "");
  EXPECT_EQ(stream.flush(), "\xF0");
  EXPECT_EQ(stream.push(8 + 0x80), "\x80");  // a stray continuation byte is passed through
}

TEST(SyntheticVocab, UnknownModelIsAnError) {
  Writer w = spm_writer();
  w.set("tokenizer.ggml.model", Value::str("wordpiece-xyz"));
  Synthetic keep;
  try {
    build(w, keep);
    FAIL() << "expected strata::Error";
  } catch (const strata::Error& e) {
    EXPECT_NE(std::string(e.what()).find("wordpiece-xyz"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("supported"), std::string::npos) << e.what();
  }
}

TEST(SyntheticVocab, UnknownPreTokenizerIsAnError) {
  Writer w = spm_writer();
  w.set("tokenizer.ggml.model", Value::str("gpt2"));
  w.set("tokenizer.ggml.merges", Value::strings({"a b"}));
  w.set("tokenizer.ggml.pre", Value::str("xyz"));
  Synthetic keep;
  try {
    build(w, keep);
    FAIL() << "expected strata::Error";
  } catch (const strata::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("'xyz'"), std::string::npos) << what;
    EXPECT_NE(what.find("smollm"), std::string::npos) << what;
  }
}

TEST(SyntheticVocab, MissingPiecesAreErrors) {
  {
    Writer w = spm_writer();
    w.set("tokenizer.ggml.model", Value::str("gpt2"));
    w.set("tokenizer.ggml.pre", Value::str("gpt-2"));
    Synthetic keep;
    EXPECT_THROW(build(w, keep), strata::Error);  // no merges
  }
  {
    Writer w;
    w.set("general.architecture", Value::str("llama"));
    Synthetic keep;
    EXPECT_THROW(build(w, keep), strata::Error);  // no tokenizer at all
  }
  {
    Writer w = spm_writer();
    w.set("tokenizer.ggml.tokens", Value::strings({"a", "b", "a"}));
    w.set("tokenizer.ggml.scores", Value::f32s({0, 0, 0}));
    w.set("tokenizer.ggml.token_type", Value::i32s({1, 1, 1}));
    Synthetic keep;
    EXPECT_THROW(build(w, keep), strata::Error);  // duplicate token
  }
  {
    Writer w = spm_writer();
    w.set("tokenizer.ggml.scores", Value::f32s({0, 0}));
    Synthetic keep;
    EXPECT_THROW(build(w, keep), strata::Error);  // fewer scores than tokens
  }
}

TEST(SyntheticVocab, OutOfRangeTokenIsAnError) {
  Writer w = spm_writer();
  Synthetic keep;
  const auto tok = build(w, keep);
  EXPECT_THROW(tok->token_to_piece(tok->n_vocab()), strata::Error);
  EXPECT_THROW(tok->token_to_piece(-1), strata::Error);
}

TEST(SyntheticVocab, ByteLevelBpeWithSmollmPreTokenizer) {
  // Vocabulary: the 256 byte symbols plus merges "Ġ a" -> "Ġa", "1 2" (never used: smollm splits digits).
  std::vector<std::string> tokens;
  std::vector<std::string> byte_sym(256);
  {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool direct = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const uint32_t cpt = direct ? uint32_t(b) : 256u + uint32_t(n++);
      std::string s;
      if (cpt < 0x80) s.push_back(char(cpt));
      else s = {char(0xC0 | (cpt >> 6)), char(0x80 | (cpt & 0x3F))};
      byte_sym[b] = s;
      tokens.push_back(s);
    }
  }
  tokens.push_back(byte_sym[' '] + "a");  // id 256
  tokens.push_back("12");                 // id 257
  tokens.push_back("<|im_end|>");         // id 258
  std::vector<int32_t> types(tokens.size(), 1);
  types.back() = 3;
  Writer w;
  w.set("general.architecture", Value::str("llama"));
  w.set("tokenizer.ggml.model", Value::str("gpt2"));
  w.set("tokenizer.ggml.pre", Value::str("smollm"));
  w.set("tokenizer.ggml.tokens", Value::strings(tokens));
  w.set("tokenizer.ggml.token_type", Value::i32s(types));
  w.set("tokenizer.ggml.merges", Value::strings({byte_sym[' '] + " a", "1 2"}));
  w.set("tokenizer.ggml.eos_token_id", Value::u32(258));
  Synthetic keep;
  const auto tok = build(w, keep);
  EXPECT_FALSE(tok->add_bos());
  EXPECT_EQ(tok->encode(" a12", false, false), (std::vector<Token>{256, '1', '2'}));
  EXPECT_EQ(tok->encode("a<|im_end|>", false, true), (std::vector<Token>{'a', 258}));
  EXPECT_TRUE(tok->is_eog(258));
  EXPECT_EQ(tok->eot(), 258);  // found by its text, as llama.cpp does
  EXPECT_EQ(tok->decode({256, '1', 258}, false), " a1");
  EXPECT_EQ(tok->decode({256, '1', 258}, true), " a1<|im_end|>");
}

TEST(SyntheticVocab, Gemma4SentencePieceStyleBpe) {
  // tokenizer.ggml.model "gemma4": spaces become U+2581 before merging, merges run on raw UTF-8,
  // only newlines split words, a run of newlines that is a token stays whole, bytes fall back to
  // <0xXX>, and BOS is added whatever add_bos_token says (llama.cpp's Gemma 4 rules).
  const std::string sp = "\xE2\x96\x81";
  std::vector<std::string> tokens = {"<pad>", "<eos>", "<bos>", sp, "a", "b", sp + "b", "\n\n", "\n"};
  std::vector<int32_t> types = {3, 3, 3, 1, 1, 1, 1, 1, 1};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    tokens.push_back(buf);
    types.push_back(6);
  }
  Writer w;
  w.set("general.architecture", Value::str("gemma4"));
  w.set("tokenizer.ggml.model", Value::str("gemma4"));
  w.set("tokenizer.ggml.tokens", Value::strings(tokens));
  w.set("tokenizer.ggml.token_type", Value::i32s(types));
  w.set("tokenizer.ggml.merges", Value::strings({sp + " b"}));  // no "\n \n": "\n\n" is taken whole
  w.set("tokenizer.ggml.bos_token_id", Value::u32(2));
  w.set("tokenizer.ggml.eos_token_id", Value::u32(1));
  w.set("tokenizer.ggml.add_bos_token", Value::boolean(false));
  Synthetic keep;
  const auto tok = build(w, keep);
  EXPECT_TRUE(tok->add_bos());
  EXPECT_EQ(tok->encode("a b\n\nZ", true, false), (std::vector<Token>{2, 4, 6, 7, 9 + 'Z'}));
  EXPECT_EQ(tok->encode("\n\n\n", false, false), (std::vector<Token>{8, 8, 8}));  // no token, no merge
  EXPECT_EQ(tok->decode({4, 6, 7, 9 + 'Z'}, false), "a b\n\nZ");
  EXPECT_TRUE(tok->is_eog(1));
}

}  // namespace
