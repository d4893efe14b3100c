#include "server/prompt.h"

#include "model/model.h"
#include "server/errors.h"
#include "server/thinking.h"
#include "tokenizer/tokenizer.h"

namespace strata::server {

PromptFormat::PromptFormat(const Model& model, const Tokenizer& tokenizer, const std::string& template_override)
    : builtin_(detect_chat_format(model.file())), stops_(chat_stop_strings(builtin_)) {
  add_bos_ = tokenizer.add_bos() && tokenizer.bos() >= 0;
  can_think_ = builtin_ == ChatFormat::harmony;
  jinja::ModelChatTemplate t = jinja::chat_template_from_gguf(model.file());
  if (!template_override.empty()) t.source = template_override;
  bos_text_ = t.bos_token;
  eos_text_ = t.eos_token;
  if (t.source.empty()) {
    fallback_reason_ = "the model has no chat template";
    return;
  }
  try {
    jinja_ = jinja::Template::parse(t.source);
    supports_tools_ = t.source.find("tools") != std::string::npos;
    can_think_ = can_think_ || template_can_think(t.source);
    think_tags_ = builtin_ != ChatFormat::harmony && t.source.find(ThinkTagStream::kOpen) != std::string::npos &&
                  t.source.find(ThinkTagStream::kClose) != std::string::npos;
  } catch (const std::exception& e) {
    fallback_reason_ = e.what();
  }
}

std::string PromptFormat::render(const std::vector<ChatMessage>& messages, bool with_bos,
                                 const nlohmann::ordered_json& tools, const nlohmann::ordered_json& think) const {
  if (!jinja_)
    return render_chat(builtin_, messages, with_bos && add_bos_ ? bos_text_ : "",
                       think.is_string() ? think.get<std::string>() : "medium");
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const auto& m : messages) list.push_back({{"role", m.role}, {"content", m.content}});
  nlohmann::ordered_json vars = {{"messages", list},
                                 {"tools", tools},
                                 {"add_generation_prompt", true},
                                 {"bos_token", with_bos ? bos_text_ : ""},
                                 {"eos_token", eos_text_}};
  if (can_think_ && !think.is_null()) {
    vars["enable_thinking"] = !(think.is_boolean() && !think.get<bool>());
    if (think.is_string()) vars["reasoning_effort"] = think;
  }
  try {
    std::string text = jinja_->render(vars);
    // Templates that do not write bos_token themselves get it as the tokenizer would add it.
    if (with_bos && add_bos_ && !bos_text_.empty() && text.compare(0, bos_text_.size(), bos_text_) != 0)
      text = bos_text_ + text;
    return text;
  } catch (const std::exception& e) {
    throw bad_request(std::string("the model's chat template rejected the conversation: ") + e.what());
  }
}

std::string PromptFormat::name() const { return jinja_ ? "jinja" : chat_format_name(builtin_); }

}  // namespace strata::server
