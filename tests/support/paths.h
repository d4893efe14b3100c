#pragma once
// Where tests find their fixtures and the cached real models.
#include <cstdlib>
#include <filesystem>
#include <string>

namespace strata::test {

inline std::string fixtures_dir() {
  if (const char* env = std::getenv("STRATA_FIXTURES")) return env;
  return (std::filesystem::path(__FILE__).parent_path().parent_path() / "fixtures").string();
}

inline std::string models_dir() {
  if (const char* env = std::getenv("STRATA_MODELS")) return env;
  if (const char* cache = std::getenv("STRATA_CACHE")) return std::string(cache) + "/models";
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "/root") + "/.cache/strata/models";
}

inline std::string model_path(const std::string& file) { return models_dir() + "/" + file; }

}  // namespace strata::test
