// libFuzzer target for the template engine as a client reaches it (a template stored through
// /api/create, rendered for every chat request): any input parses and renders, or fails with
// strata::Error. Anything else (a crash, a stack overflow, a sanitizer report, unbounded memory
// or time past the engine's limits) is a bug.
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "template/template.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const nlohmann::ordered_json vars = nlohmann::ordered_json::parse(R"({
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi [[{{"},
                 {"role": "assistant", "content": "Hello", "tool_calls": [{"function": {"name": "f", "arguments": {"a": [1, {"b": null}]}}}]},
                 {"role": "user", "content": "Again"}],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>"})");
  const std::string source(reinterpret_cast<const char*>(data), size);
  try {
    const strata::jinja::Template t = strata::jinja::Template::parse(source);
    (void)t.render(vars);
  } catch (const strata::Error&) {
  }
  return 0;
}
