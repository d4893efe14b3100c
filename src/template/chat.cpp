// transformers' apply_chat_template over our engine, and the template stored in a GGUF file.
#include "gguf/gguf.h"
#include "template/template.h"
#include "util/error.h"

namespace strata::jinja {

std::string render_chat_template(const std::string& tmpl, const nlohmann::ordered_json& messages,
                                 const nlohmann::ordered_json& tools, bool add_generation_prompt,
                                 const std::string& bos_token, const std::string& eos_token,
                                 const nlohmann::ordered_json& extra) {
  if (!messages.is_array()) throw Error("chat template: messages must be a JSON array");
  if (!extra.is_null() && !extra.is_object()) throw Error("chat template: extra variables must be a JSON object");
  nlohmann::ordered_json vars = extra.is_object() ? extra : nlohmann::ordered_json::object();
  vars["messages"] = messages;
  vars["tools"] = tools;  // transformers passes tools=None when there are none
  vars["add_generation_prompt"] = add_generation_prompt;
  vars["bos_token"] = bos_token;
  vars["eos_token"] = eos_token;
  return Template::parse(tmpl).render(vars);
}

static std::string token_text(const gguf::File& file, const char* id_key) {
  int64_t id = file.get_int(id_key, -1);
  const gguf::Value* tokens = file.find("tokenizer.ggml.tokens");
  if (id < 0 || !tokens) return "";
  const auto& items = tokens->as_array().items;
  if (size_t(id) >= items.size())
    throw Error(file.path() + ": " + id_key + " = " + std::to_string(id) + " is outside the vocabulary (" +
                std::to_string(items.size()) + " tokens)");
  return items[size_t(id)].as_string();
}

ModelChatTemplate chat_template_from_gguf(const gguf::File& file) {
  ModelChatTemplate t;
  t.source = file.get_string("tokenizer.chat_template", "");
  t.bos_token = token_text(file, "tokenizer.ggml.bos_token_id");
  t.eos_token = token_text(file, "tokenizer.ggml.eos_token_id");
  return t;
}

}  // namespace strata::jinja
