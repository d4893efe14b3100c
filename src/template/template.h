#pragma once
// A Jinja2 engine for models' chat templates: renders `tokenizer.chat_template` exactly as
// Python's jinja2 does under Hugging Face transformers' apply_chat_template (trim_blocks,
// lstrip_blocks, loop controls, raise_exception, strftime_now, tojson via json.dumps).
//
//   auto t = jinja::Template::parse(text);            // syntax errors name line and column
//   std::string s = t.render({{"messages", msgs}});    // runtime errors name the template line
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "template/ast.h"
#include "template/value.h"

namespace strata::gguf {
class File;
}

namespace strata::jinja {

class Template {
 public:
  static Template parse(const std::string& source);
  // Variables are JSON values (ordered_json: Python dicts keep key order, and tojson shows it) (messages, tools, flags) or engine values (functions).
  std::string render(const nlohmann::ordered_json& variables) const;
  std::string render(const Dict& variables) const;

 private:
  std::shared_ptr<const Body> body_;
};

// Lets `strftime_now` read a fixed clock (tests); zero means the real local time.
void set_fixed_now(long long unix_seconds);

// Renders a chat template the way transformers' apply_chat_template(tokenize=False) does.
// `tools` is null when there are none; `extra` (an object) adds further variables
// (e.g. enable_thinking, date_string).
std::string render_chat_template(const std::string& tmpl, const nlohmann::ordered_json& messages,
                                 const nlohmann::ordered_json& tools, bool add_generation_prompt,
                                 const std::string& bos_token, const std::string& eos_token,
                                 const nlohmann::ordered_json& extra = {});

// A model's own chat template and the texts of its BOS/EOS tokens, from GGUF metadata.
struct ModelChatTemplate {
  std::string source;  // empty when the model has none
  std::string bos_token, eos_token;
};
ModelChatTemplate chat_template_from_gguf(const gguf::File& file);

}  // namespace strata::jinja
