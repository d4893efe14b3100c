#pragma once
// Forging test models through the built CLI ($STRATA_BIN, set by CTest).
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace strata::test {

// The CLI: $STRATA_BIN, else ../strata next to this test binary's folder.
inline std::string strata_bin() {
  if (const char* env = std::getenv("STRATA_BIN")) return env;
  return (std::filesystem::read_symlink("/proc/self/exe").parent_path().parent_path() / "strata").string();
}

inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs `strata forge ARGS --tokenizer-from TOKENIZER --out OUT`; true on success.
inline bool forge(const std::vector<std::string>& args, const std::string& tokenizer, const std::string& out) {
  std::string cmd = shell_quote(strata_bin()) + " forge";
  for (const auto& a : args) cmd += " " + shell_quote(a);
  cmd += " --tokenizer-from " + shell_quote(tokenizer) + " --out " + shell_quote(out) + " > /dev/null";
  return std::system(cmd.c_str()) == 0;
}

}  // namespace strata::test
