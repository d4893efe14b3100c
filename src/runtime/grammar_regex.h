#pragma once
// Regular expressions for the JSON schema keyword "pattern": an ECMA-262 pattern compiled to a
// Thompson NFA over the bytes of a string's value, stepped one byte at a time by the JSON
// acceptor (grammar.h).
//
// Patterns are unanchored, as JSON Schema says (^ and $ anchor them). Wildcards ('.', negated
// classes, \D \S \W) produce printable ASCII only, so what is generated matches under byte and
// code point semantics alike. Constructs no automaton has (backreferences, lookaround, word
// boundaries) and non-ASCII classes are refused with strata::Error naming the construct.
#include <bitset>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace strata {

class Regex {
 public:
  static constexpr int kMaxStates = 4096;

  // Throws strata::Error ("structured output: pattern ...: what") for what is not supported.
  explicit Regex(const std::string& pattern);

  // The automaton's states as a bit set: before the first byte, and after each byte.
  std::vector<uint64_t> initial() const;
  // Steps set over byte b; false when no state that can still match remains.
  bool step(std::vector<uint64_t>& set, uint8_t b) const;
  // The bytes read so far match (at_start: none were read).
  bool accepts(std::vector<uint64_t> set, bool at_start) const;

 private:
  enum class Edge : uint8_t { plain, line_start, line_end };
  struct State {
    std::bitset<256> chars;
    int next = -1;  // the byte edge's target
    std::vector<std::pair<int, Edge>> eps;
  };
  friend class RegexBuilder;

  void close(std::vector<uint64_t>& set, bool at_start, bool at_end) const;
  void find_live();
  size_t n_words() const { return (states_.size() + 63) / 64; }

  std::vector<State> states_;
  int start_ = 0, accept_ = 0;
  std::vector<bool> live_;  // can still reach accept
};

}  // namespace strata
