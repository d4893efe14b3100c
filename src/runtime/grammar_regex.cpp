#include "runtime/grammar_regex.h"

#include <algorithm>
#include <cctype>

#include "util/error.h"

namespace strata {

namespace {

[[noreturn]] void unsupported(const std::string& what) { throw Error("structured output: " + what); }

using ByteSet = std::bitset<256>;

ByteSet printable_ascii() {
  ByteSet b;
  for (int c = 0x20; c < 0x7F; ++c) b.set(size_t(c));
  return b;
}

ByteSet byte_range(int lo, int hi) {
  ByteSet b;
  for (int c = lo; c <= hi; ++c) b.set(size_t(c));
  return b;
}

ByteSet class_set(char c) {  // \d \w \s and their negations
  ByteSet b;
  switch (c | 0x20) {
    case 'd':
      b = byte_range('0', '9');
      break;
    case 'w':
      b = byte_range('0', '9') | byte_range('a', 'z') | byte_range('A', 'Z');
      b.set('_');
      break;
    case 's':
      for (char w : {' ', '\t', '\n', '\r', '\f', '\v'}) b.set(size_t(uint8_t(w)));
      break;
  }
  return (c >= 'A' && c <= 'Z') ? printable_ascii() & ~b : b;
}

struct RxNode {
  enum class Kind { chars, cat, alt, repeat, line_start, line_end };
  explicit RxNode(Kind k = Kind::cat) : kind(k) {}
  Kind kind;
  ByteSet chars;
  std::vector<RxNode> kids;
  int min = 0, max = -1;  // repeat; max -1: unbounded
};

class RxParser {
 public:
  explicit RxParser(const std::string& pattern) : p_(pattern) {}

  RxNode parse() {
    RxNode n = alternation(0);
    if (i_ < p_.size()) fail("unbalanced ')'");
    return n;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    unsupported("pattern \"" + p_ + "\": " + what + " (at offset " + std::to_string(i_) + ")");
  }
  bool more() const { return i_ < p_.size(); }
  char peek() const { return p_[i_]; }

  RxNode alternation(int depth) {
    if (depth > 64) fail("groups nested too deep");
    RxNode alt{RxNode::Kind::alt};
    alt.kids.push_back(sequence(depth));
    while (more() && peek() == '|') {
      ++i_;
      alt.kids.push_back(sequence(depth));
    }
    return alt.kids.size() == 1 ? std::move(alt.kids[0]) : alt;
  }

  RxNode sequence(int depth) {
    RxNode cat{RxNode::Kind::cat};
    while (more() && peek() != '|' && peek() != ')') {
      RxNode a = atom(depth);
      quantify(a);
      cat.kids.push_back(std::move(a));
    }
    return cat;
  }

  static RxNode chars(const ByteSet& b) {
    RxNode n{RxNode::Kind::chars};
    n.chars = b;
    return n;
  }
  static RxNode one(uint8_t c) {
    ByteSet b;
    b.set(c);
    return chars(b);
  }

  RxNode atom(int depth) {
    const char c = p_[i_++];
    switch (c) {
      case '(': {
        if (more() && peek() == '?') {
          if (p_.compare(i_, 2, "?:") == 0) {
            i_ += 2;
          } else if (p_.compare(i_, 2, "?<") == 0 && i_ + 2 < p_.size() && p_[i_ + 2] != '=' && p_[i_ + 2] != '!') {
            const size_t close = p_.find('>', i_);
            if (close == std::string::npos) fail("unterminated group name");
            i_ = close + 1;  // a named group matches as a plain one
          } else {
            fail("lookaround assertions are not supported");
          }
        }
        RxNode inner = alternation(depth + 1);
        if (!more() || peek() != ')') fail("missing ')'");
        ++i_;
        return inner;
      }
      case '[':
        return char_class();
      case '.':
        return chars(printable_ascii());
      case '^':
        return RxNode{RxNode::Kind::line_start};
      case '$':
        return RxNode{RxNode::Kind::line_end};
      case '\\':
        return escape(/*in_class=*/false, nullptr);
      case '*':
      case '+':
      case '?':
        fail("nothing to repeat");
      default:
        break;
    }
    if ((uint8_t(c) & 0xC0) == 0xC0) {  // a UTF-8 character: its bytes in a row, one atom
      RxNode cat{RxNode::Kind::cat};
      cat.kids.push_back(one(uint8_t(c)));
      while (more() && (uint8_t(peek()) & 0xC0) == 0x80) cat.kids.push_back(one(uint8_t(p_[i_++])));
      return cat;
    }
    return one(uint8_t(c));
  }

  // An escape after '\'; in a class, a single character's code goes to *code (else -1).
  RxNode escape(bool in_class, int* code) {
    if (!more()) fail("trailing '\\'");
    const char c = p_[i_++];
    if (code) *code = -1;
    auto single = [&](int v) {
      if (code) *code = v;
      return one(uint8_t(v));
    };
    switch (c) {
      case 'd':
      case 'D':
      case 'w':
      case 'W':
      case 's':
      case 'S':
        return chars(class_set(c));
      case 'n':
        return single('\n');
      case 'r':
        return single('\r');
      case 't':
        return single('\t');
      case 'f':
        return single('\f');
      case 'v':
        return single('\v');
      case '0':
        return single(0);
      case 'b':
        if (in_class) return single('\b');
        fail("word boundaries (\\b) are not supported");
      case 'B':
        fail("word boundaries (\\B) are not supported");
      case 'x':
      case 'u': {
        const size_t n = c == 'x' ? 2 : 4;
        if (i_ + n > p_.size()) fail("short \\" + std::string(1, c) + " escape");
        int v = 0;
        for (size_t k = 0; k < n; ++k) {
          const char h = p_[i_++];
          if (!std::isxdigit(uint8_t(h))) fail("bad hex digit in escape");
          v = v * 16 + (std::isdigit(uint8_t(h)) ? h - '0' : (h | 0x20) - 'a' + 10);
        }
        if (v >= 0x80) fail("non-ASCII escapes are not supported (write the character itself)");
        return single(v);
      }
      case 'c':
        fail("control escapes (\\c) are not supported");
      case 'k':
        fail("backreferences are not supported");
      case 'p':
      case 'P':
        fail("Unicode property classes are not supported");
      default:
        if (c >= '1' && c <= '9') fail("backreferences are not supported");
        if (std::isalnum(uint8_t(c))) fail("unknown escape \\" + std::string(1, c));
        return single(uint8_t(c));
    }
  }

  RxNode char_class() {
    ByteSet set;
    bool negate = false;
    if (more() && peek() == '^') negate = true, ++i_;
    bool first = true;
    while (true) {
      if (!more()) fail("missing ']'");
      if (peek() == ']' && !first) break;
      first = false;
      int lo = -1;
      if (peek() == '\\') {
        ++i_;
        RxNode e = escape(/*in_class=*/true, &lo);
        if (lo < 0) {
          set |= e.chars;
          continue;
        }
      } else {
        lo = uint8_t(p_[i_++]);
      }
      if (lo >= 0x80) fail("non-ASCII characters in a class are not supported");
      int hi = lo;
      if (i_ + 1 < p_.size() && peek() == '-' && p_[i_ + 1] != ']') {
        ++i_;
        if (peek() == '\\') {
          ++i_;
          escape(/*in_class=*/true, &hi);
          if (hi < 0) fail("a class escape cannot end a range");
        } else {
          hi = uint8_t(p_[i_++]);
        }
        if (hi >= 0x80) fail("non-ASCII characters in a class are not supported");
        if (hi < lo) fail("range out of order in class");
      }
      set |= byte_range(lo, hi);
    }
    ++i_;  // ']'
    return chars(negate ? printable_ascii() & ~set : set);
  }

  // A number at i_, or -1 when there is none.
  int number() {
    int v = -1;
    while (more() && std::isdigit(uint8_t(peek()))) {
      v = (v < 0 ? 0 : v * 10) + (p_[i_++] - '0');
      if (v > 1000) fail("repetition count over 1000");
    }
    return v;
  }

  void quantify(RxNode& a) {
    while (more()) {
      int min, max;
      const char c = peek();
      if (c == '*' || c == '+' || c == '?') {
        ++i_;
        min = c == '+' ? 1 : 0;
        max = c == '?' ? 1 : -1;
      } else if (c == '{') {
        const size_t start = i_++;
        min = number();
        max = min;
        if (more() && peek() == ',') {
          ++i_;
          max = number();
        }
        if (min < 0 || !more() || peek() != '}') {  // not a quantifier: a literal '{'
          i_ = start;
          return;
        }
        ++i_;
        if (max >= 0 && max < min) fail("repetition {n,m} with m < n");
      } else {
        return;
      }
      if (a.kind == RxNode::Kind::line_start || a.kind == RxNode::Kind::line_end) fail("nothing to repeat");
      if (more() && peek() == '?') ++i_;  // lazy: the same strings match
      RxNode r{RxNode::Kind::repeat};
      r.min = min;
      r.max = max;
      r.kids.push_back(std::move(a));
      a = std::move(r);
    }
  }

  const std::string& p_;
  size_t i_ = 0;
};

}  // namespace

// Builds the automaton of a parsed pattern (Thompson's construction).
class RegexBuilder {
 public:
  explicit RegexBuilder(Regex& rx) : rx_(rx) {}

  std::pair<int, int> build(const RxNode& n) {
    using K = RxNode::Kind;
    switch (n.kind) {
      case K::chars: {
        const int s = add(), e = add();
        rx_.states_[size_t(s)].chars = n.chars;
        rx_.states_[size_t(s)].next = e;
        return {s, e};
      }
      case K::line_start:
      case K::line_end: {
        const int s = add(), e = add();
        link(s, e, n.kind == K::line_start ? Regex::Edge::line_start : Regex::Edge::line_end);
        return {s, e};
      }
      case K::cat: {
        const int s = add();
        int end = s;
        for (const RxNode& k : n.kids) {
          const auto [ks, ke] = build(k);
          link(end, ks);
          end = ke;
        }
        return {s, end};
      }
      case K::alt: {
        const int s = add(), e = add();
        for (const RxNode& k : n.kids) {
          const auto [ks, ke] = build(k);
          link(s, ks);
          link(ke, e);
        }
        return {s, e};
      }
      case K::repeat: {  // min copies, then a loop (unbounded) or max - min optional copies
        const int s = add();
        int end = s;
        for (int i = 0; i < n.min; ++i) {
          const auto [ks, ke] = build(n.kids[0]);
          link(end, ks);
          end = ke;
        }
        if (n.max < 0) {
          const int loop = add();
          link(end, loop);
          const auto [ks, ke] = build(n.kids[0]);
          link(loop, ks);
          link(ke, loop);
          return {s, loop};
        }
        const int e = add();
        link(end, e);
        for (int i = n.min; i < n.max; ++i) {
          const auto [ks, ke] = build(n.kids[0]);
          link(end, ks);
          link(ke, e);
          end = ke;
        }
        return {s, e};
      }
    }
    return {add(), add()};
  }

 private:
  int add() {
    if (int(rx_.states_.size()) >= Regex::kMaxStates)
      unsupported("pattern is too complex (over " + std::to_string(Regex::kMaxStates) + " automaton states)");
    rx_.states_.emplace_back();
    return int(rx_.states_.size()) - 1;
  }
  void link(int from, int to, Regex::Edge kind = Regex::Edge::plain) {
    rx_.states_[size_t(from)].eps.emplace_back(to, kind);
  }
  Regex& rx_;
};

Regex::Regex(const std::string& pattern) {
  RxNode user = RxParser(pattern).parse();
  RxNode any(RxNode::Kind::repeat);
  any.kids.emplace_back(RxNode::Kind::chars);
  any.kids[0].chars = printable_ascii();
  RxNode whole(RxNode::Kind::cat);  // unanchored: anything around a match
  whole.kids.push_back(any);
  whole.kids.push_back(std::move(user));
  whole.kids.push_back(any);
  const auto [s, e] = RegexBuilder(*this).build(whole);
  start_ = s, accept_ = e;
  find_live();
}

void Regex::close(std::vector<uint64_t>& set, bool at_start, bool at_end) const {
  std::vector<int> work;
  for (size_t i = 0; i < states_.size(); ++i)
    if (set[i / 64] >> (i % 64) & 1) work.push_back(int(i));
  while (!work.empty()) {
    const int s = work.back();
    work.pop_back();
    for (const auto& [t, kind] : states_[size_t(s)].eps) {
      if ((kind == Edge::line_start && !at_start) || (kind == Edge::line_end && !at_end)) continue;
      uint64_t& w = set[size_t(t) / 64];
      const uint64_t bit = uint64_t(1) << (t % 64);
      if (!(w & bit)) w |= bit, work.push_back(t);
    }
  }
}

std::vector<uint64_t> Regex::initial() const {
  std::vector<uint64_t> set(n_words(), 0);
  set[size_t(start_) / 64] |= uint64_t(1) << (start_ % 64);
  close(set, /*at_start=*/true, /*at_end=*/false);
  return set;
}

bool Regex::step(std::vector<uint64_t>& set, uint8_t b) const {
  std::vector<uint64_t> next(set.size(), 0);
  for (size_t i = 0; i < states_.size(); ++i)
    if ((set[i / 64] >> (i % 64) & 1) && states_[i].next >= 0 && states_[i].chars[b]) {
      const int t = states_[i].next;
      if (live_[size_t(t)]) next[size_t(t) / 64] |= uint64_t(1) << (t % 64);
    }
  close(next, /*at_start=*/false, /*at_end=*/false);
  set.swap(next);
  return std::any_of(set.begin(), set.end(), [](uint64_t w) { return w != 0; });
}

bool Regex::accepts(std::vector<uint64_t> set, bool at_start) const {
  close(set, at_start, /*at_end=*/true);
  return set[size_t(accept_) / 64] >> (accept_ % 64) & 1;
}

// Backward reachability from accept. line_start edges do not count: after the first byte they
// are behind us, so a state that needs one is dead.
void Regex::find_live() {
  std::vector<std::vector<int>> into(states_.size());
  for (size_t i = 0; i < states_.size(); ++i) {
    if (states_[i].next >= 0 && states_[i].chars.any()) into[size_t(states_[i].next)].push_back(int(i));
    for (const auto& [t, kind] : states_[i].eps)
      if (kind != Edge::line_start) into[size_t(t)].push_back(int(i));
  }
  live_.assign(states_.size(), false);
  std::vector<int> work = {accept_};
  live_[size_t(accept_)] = true;
  while (!work.empty()) {
    const int s = work.back();
    work.pop_back();
    for (int from : into[size_t(s)])
      if (!live_[size_t(from)]) live_[size_t(from)] = true, work.push_back(from);
  }
}

}  // namespace strata
