// UTF-8 helpers with llama.cpp's exact behaviour on bad input (unicode.cpp), and the GPT-2
// byte <-> printable-codepoint mapping used by byte-level BPE.
#include <array>
#include <string>

#include "tokenizer/vocab.h"
#include "util/error.h"

namespace strata::tokenizer_detail {

size_t utf8_len(char lead) {
  static constexpr size_t lookup[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return lookup[uint8_t(lead) >> 4];
}

namespace {

bool is_cont(std::string_view s, size_t i) { return (uint8_t(s[i]) & 0xC0) == 0x80; }

// unicode_cpt_from_utf8: no overlong/surrogate checks, only lead and continuation bits.
bool decode_one(std::string_view s, size_t& off, uint32_t& cpt) {
  const uint8_t b0 = uint8_t(s[off]);
  if (!(b0 & 0x80)) {
    cpt = b0;
    off += 1;
    return true;
  }
  if (!(b0 & 0x40)) return false;
  if (!(b0 & 0x20)) {
    if (off + 1 >= s.size() || !is_cont(s, off + 1)) return false;
    cpt = ((b0 & 0x1Fu) << 6) | (uint8_t(s[off + 1]) & 0x3Fu);
    off += 2;
    return true;
  }
  if (!(b0 & 0x10)) {
    if (off + 2 >= s.size() || !is_cont(s, off + 1) || !is_cont(s, off + 2)) return false;
    cpt = ((b0 & 0x0Fu) << 12) | ((uint8_t(s[off + 1]) & 0x3Fu) << 6) | (uint8_t(s[off + 2]) & 0x3Fu);
    off += 3;
    return true;
  }
  if (!(b0 & 0x08)) {
    if (off + 3 >= s.size() || !is_cont(s, off + 1) || !is_cont(s, off + 2) || !is_cont(s, off + 3)) return false;
    cpt = ((b0 & 0x07u) << 18) | ((uint8_t(s[off + 1]) & 0x3Fu) << 12) | ((uint8_t(s[off + 2]) & 0x3Fu) << 6) |
          (uint8_t(s[off + 3]) & 0x3Fu);
    off += 4;
    return true;
  }
  return false;
}

struct ByteMap {
  std::array<std::string, 256> to_unicode;
  std::array<int16_t, 512> from_cpt;  // every mapped codepoint is < 0x144
  ByteMap() {
    from_cpt.fill(-1);
    std::array<bool, 256> direct{};
    for (int ch = 0x21; ch <= 0x7E; ++ch) direct[ch] = true;
    for (int ch = 0xA1; ch <= 0xAC; ++ch) direct[ch] = true;
    for (int ch = 0xAE; ch <= 0xFF; ++ch) direct[ch] = true;
    uint32_t n = 0;
    for (int ch = 0; ch < 256; ++ch) {
      const uint32_t cpt = direct[ch] ? uint32_t(ch) : 256 + n++;
      append_utf8(to_unicode[ch], cpt);
      from_cpt[cpt] = int16_t(ch);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap map;
  return map;
}

}  // namespace

std::vector<uint32_t> utf8_to_cpts(std::string_view text) {
  std::vector<uint32_t> out;
  out.reserve(text.size());
  size_t off = 0;
  while (off < text.size()) {
    uint32_t cpt = 0;
    if (decode_one(text, off, cpt)) {
      out.push_back(cpt);
    } else {
      out.push_back(0xFFFD);
      ++off;
    }
  }
  return out;
}

void append_utf8(std::string& out, uint32_t cpt) {
  if (cpt <= 0x7F) {
    out.push_back(char(cpt));
  } else if (cpt <= 0x7FF) {
    out.push_back(char(0xC0 | ((cpt >> 6) & 0x1F)));
    out.push_back(char(0x80 | (cpt & 0x3F)));
  } else if (cpt <= 0xFFFF) {
    out.push_back(char(0xE0 | ((cpt >> 12) & 0x0F)));
    out.push_back(char(0x80 | ((cpt >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cpt & 0x3F)));
  } else if (cpt <= 0x10FFFF) {
    out.push_back(char(0xF0 | ((cpt >> 18) & 0x07)));
    out.push_back(char(0x80 | ((cpt >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((cpt >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cpt & 0x3F)));
  } else {
    throw Error("tokenizer: invalid codepoint U+" + std::to_string(cpt) + " in input (beyond U+10FFFF)");
  }
}

const std::string& byte_to_unicode(uint8_t byte) { return byte_map().to_unicode[byte]; }

int unicode_to_byte(uint32_t cpt) { return cpt < 512 ? byte_map().from_cpt[cpt] : -1; }

}  // namespace strata::tokenizer_detail
