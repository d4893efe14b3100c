// Every vocabulary of llama.cpp's own test set (models/ggml-vocab-*.gguf in the llama.cpp tree that
// llama-cpp-python 0.3.36 vendors) against its .inp/.out vectors, and, when a reference file is
// given, against llama.cpp's ids and text for more inputs in every mode.
//
// The files are not in the repository: tests/py/test_fidelity_tokenize.py fetches the sdist with pip
// into $STRATA_CACHE/llama.cpp/models (default ~/.cache/strata/llama.cpp/models), writes the
// reference from the installed llama_cpp, and runs this test with STRATA_VOCAB_REFERENCE set.
// Without the folder the test skips and says how to get it.
//
// A vocabulary either matches llama.cpp exactly or is refused with an error that names its
// tokenizer type; kRefused lists the types Strata does not implement (no supported model family
// uses them). Files named ggml-vocab-variant-pre-<name>.gguf (written by the pytest: a real
// vocabulary under another tokenizer.ggml.pre) may also be refused for that pre-tokenizer, by name.
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace fs = std::filesystem;
using strata::Token;
using strata::Tokenizer;
using Json = nlohmann::json;

namespace {

// tokenizer.ggml.model values Strata refuses: BERT's WordPiece and T5's Unigram.
const std::set<std::string> kRefused = {"bert", "t5"};

fs::path vocab_dir() {
  if (const char* env = std::getenv("STRATA_LLAMA_CPP_VOCABS")) return env;
  if (const char* cache = std::getenv("STRATA_CACHE")) return fs::path(cache) / "llama.cpp" / "models";
  const char* home = std::getenv("HOME");
  return fs::path(home ? home : "/root") / ".cache" / "strata" / "llama.cpp" / "models";
}

std::string read_all(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(char(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

std::string shown(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '\n')
      out += "\\n";
    else if (c < 0x20 || c == 0x7F)
      out += "\\x" + std::string(1, "0123456789abcdef"[c >> 4]) + "0123456789abcdef"[c & 15];
    else
      out.push_back(char(c));
  }
  return out.size() > 80 ? out.substr(0, 80) + "..." : out;
}

std::string ids_text(const std::vector<Token>& ids) {
  std::string out;
  for (size_t i = 0; i < ids.size() && i < 24; ++i) out += (i ? " " : "") + std::to_string(ids[i]);
  return ids.size() > 24 ? out + " ..." : out;
}

// llama.cpp's tests/test-tokenizer-0.cpp read_tests: inputs separated by "\n__ggml_vocab_test__\n",
// one line of space-separated ids per input.
std::vector<std::pair<std::string, std::vector<Token>>> read_vectors(const fs::path& inp, const fs::path& out) {
  const std::string raw = read_all(inp);
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> texts;
  for (size_t pos = 0; pos < raw.size();) {
    const size_t next = raw.find(sep, pos);
    if (next == std::string::npos) {
      texts.push_back(raw.substr(pos));
      break;
    }
    texts.push_back(raw.substr(pos, next - pos));
    pos = next + sep.size();
  }
  std::ifstream lines(out);
  std::vector<std::vector<Token>> ids;
  for (std::string line; std::getline(lines, line);) {
    std::vector<Token> row;
    std::istringstream words(line);
    for (long v; words >> v;) row.push_back(Token(v));
    ids.push_back(std::move(row));
  }
  std::vector<std::pair<std::string, std::vector<Token>>> cases;
  if (texts.size() != ids.size()) {
    ADD_FAILURE() << inp << ": " << texts.size() << " inputs but " << ids.size() << " id lines in " << out;
    return cases;
  }
  for (size_t i = 0; i < texts.size(); ++i) cases.emplace_back(texts[i], ids[i]);
  return cases;
}

// zlib's CRC-32, to compare token_to_piece over a whole vocabulary with the reference's.
uint32_t crc32(uint32_t crc, const std::string& bytes) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (unsigned char b : bytes) crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

uint32_t pieces_crc32(const Tokenizer& tok, bool special) {
  uint32_t crc = 0;
  for (Token id = 0; id < tok.n_vocab(); ++id) {
    const std::string piece = tok.token_to_piece(id, special);
    const uint32_t n = uint32_t(piece.size());
    const char len[4] = {char(n & 0xFF), char((n >> 8) & 0xFF), char((n >> 16) & 0xFF), char(n >> 24)};
    crc = crc32(crc32(crc, std::string(len, 4)), piece);
  }
  return crc;
}

struct Tally {
  int total = 0, agree = 0;
  std::vector<std::string> misses;
  void check(bool ok, const std::string& what) {
    ++total;
    if (ok)
      ++agree;
    else if (misses.size() < 4)
      misses.push_back(what);
  }
};

}  // namespace

TEST(LlamaCppVocabs, EveryVocabularyMatchesOrIsRefusedByName) {
  const fs::path dir = vocab_dir();
  if (!fs::is_directory(dir))
    GTEST_SKIP() << "llama.cpp vocabularies not in " << dir
                 << " (python3 -m pytest tests/py/test_fidelity_tokenize.py -k vocab fetches them)";
  Json reference;
  if (const char* ref = std::getenv("STRATA_VOCAB_REFERENCE")) reference = Json::parse(read_all(ref));

  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("ggml-vocab-", 0) == 0 && entry.path().extension() == ".gguf") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  ASSERT_FALSE(files.empty()) << "no ggml-vocab-*.gguf in " << dir;

  int n_pass = 0, n_fail = 0, n_refused = 0;
  for (const fs::path& path : files) {
    const std::string name = path.filename().string();
    auto file = strata::gguf::File::open(path.string());
    const std::string model = file->get_string("tokenizer.ggml.model", "");
    std::unique_ptr<Tokenizer> tok;
    try {
      tok = Tokenizer::from_gguf(*file);
    } catch (const strata::Error& e) {
      const std::string what = e.what();
      // A vocabulary of the tree may be refused only for its tokenizer type; a pre-tokenizer variant
      // (tests/py/test_fidelity_tokenize.py) for an unknown tokenizer.ggml.pre, named.
      const std::string pre = file->get_string("tokenizer.ggml.pre", "");
      const bool variant = name.find("-variant-pre-") != std::string::npos;
      if ((kRefused.count(model) && what.find("'" + model + "'") != std::string::npos) ||
          (variant && what.find("unknown tokenizer.ggml.pre '" + pre + "'") != std::string::npos)) {
        ++n_refused;
        std::cout << "[ vocab    ] " << name << ": refused (" << what << ")\n";
      } else {
        ++n_fail;
        ADD_FAILURE() << name << ": not loaded: " << what;
        std::cout << "[ vocab    ] " << name << ": FAIL (not loaded: " << what << ")\n";
      }
      continue;
    }
    if (kRefused.count(model))
      ADD_FAILURE() << name << ": tokenizer type '" << model << "' loaded but is listed as refused";

    // llama.cpp's own vectors: add_special=false, parse_special=false.
    Tally vectors;
    fs::path inp = path, out = path;
    inp += ".inp";
    out += ".out";
    if (fs::exists(inp) && fs::exists(out)) {
      for (const auto& [text, want] : read_vectors(inp, out)) {
        const auto got = tok->encode(text, false, false);
        vectors.check(got == want, "'" + shown(text) + "': want " + ids_text(want) + ", got " + ids_text(got));
      }
    }

    // llama_cpp's ids for more inputs, in every mode, and its text back from those ids; its special
    // ids, end-of-generation set and every token's piece.
    Tally encoded, decoded, meta;
    if (reference.contains(name) && reference[name].contains("meta")) {
      const Json& r = reference[name];
      const Json& m = r["meta"];
      const auto same = [&](const char* what, auto got, auto want) {
        std::ostringstream msg;
        msg << what << ": want " << want << ", got " << got;
        meta.check(got == want, msg.str());
      };
      same("n_vocab", tok->n_vocab(), r["n_vocab"].get<int>());
      same("bos", tok->bos(), m["bos"].get<int>());
      same("eos", tok->eos(), m["eos"].get<int>());
      same("eot", tok->eot(), m["eot"].get<int>());
      same("add_bos", tok->add_bos(), m["add_bos"].get<bool>());
      same("add_eos", tok->add_eos(), m["add_eos"].get<bool>());
      std::vector<Token> eog;
      for (Token id = 0; id < tok->n_vocab(); ++id)
        if (tok->is_eog(id)) eog.push_back(id);
      meta.check(eog == m["eog"].get<std::vector<Token>>(),
                 "eog: want " + ids_text(m["eog"].get<std::vector<Token>>()) + ", got " + ids_text(eog));
      same("token_to_piece(special) crc32", pieces_crc32(*tok, true), r["pieces_crc32"]["special"].get<uint32_t>());
      same("token_to_piece(plain) crc32", pieces_crc32(*tok, false), r["pieces_crc32"]["plain"].get<uint32_t>());
    }
    if (reference.contains(name)) {
      for (const Json& c : reference[name]["cases"]) {
        const std::string text = from_hex(c["input_hex"].get<std::string>());
        for (const auto& [mode, want] : c["ids"].items()) {
          const bool parse = mode.rfind("special", 0) == 0, add = mode.find("_bos") != std::string::npos;
          const auto got = tok->encode(text, add, parse);
          encoded.check(got == want.get<std::vector<Token>>(), mode + " '" + shown(text) + "': want " +
                                                                   ids_text(want.get<std::vector<Token>>()) + ", got " +
                                                                   ids_text(got));
        }
        // "remove|keep" (remove_special) + "/unparse|hide" (unparse_special), on the special_bos ids
        const auto ids = c["ids"]["special_bos"].get<std::vector<Token>>();
        for (const auto& [mode, want_hex] : c["detokenized_hex"].items()) {
          const bool remove_special = mode.rfind("remove", 0) == 0;
          const bool unparse = mode.find("/unparse") != std::string::npos;
          const std::string want = from_hex(want_hex.get<std::string>());
          const std::string got = tok->detokenize(ids, remove_special, unparse);
          decoded.check(got == want,
                        mode + " of '" + shown(text) + "': want '" + shown(want) + "', got '" + shown(got) + "'");
        }
      }
    }

    const bool ok = vectors.agree == vectors.total && encoded.agree == encoded.total &&
                    decoded.agree == decoded.total && meta.agree == meta.total;
    ok ? ++n_pass : ++n_fail;
    const char* verdict = !ok ? "FAIL" : vectors.total + encoded.total == 0 ? "loaded, nothing to compare" : "pass";
    std::cout << "[ vocab    ] " << name << ": " << verdict << " (" << model << "/"
              << file->get_string("tokenizer.ggml.pre", "") << "; vectors " << vectors.agree << "/" << vectors.total
              << ", llama_cpp encode " << encoded.agree << "/" << encoded.total << ", decode " << decoded.agree << "/"
              << decoded.total << ", metadata and pieces " << meta.agree << "/" << meta.total << ")\n";
    for (const Tally* t : {&vectors, &encoded, &decoded, &meta})
      for (const std::string& miss : t->misses) ADD_FAILURE() << name << ": " << miss;
    if (vectors.total + encoded.total == 0 && !reference.is_null())
      ADD_FAILURE() << name << ": loaded, but neither vectors nor a reference to compare it with";
  }
  std::cout << "[ vocab    ] " << files.size() << " vocabularies: " << n_pass << " pass, " << n_fail << " fail, "
            << n_refused << " refused\n";
}
