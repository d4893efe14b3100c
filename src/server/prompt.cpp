#include "server/prompt.h"

#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace strata::server {

std::string render_prompt(const Model& model, const Tokenizer& tokenizer, const std::vector<ChatMessage>& messages,
                          bool with_bos) {
  const bool bos = with_bos && tokenizer.add_bos() && tokenizer.bos() >= 0;
  return render_chat(detect_chat_format(model.file()), messages, bos ? tokenizer.token_text(tokenizer.bos()) : "");
}

std::vector<std::string> prompt_stop_strings(const Model& model) {
  return chat_stop_strings(detect_chat_format(model.file()));
}

std::string prompt_template_text(const Model& model) {
  return model.file().get_string("tokenizer.chat_template", "");
}

std::string prompt_format_name(const Model& model) { return chat_format_name(detect_chat_format(model.file())); }

}  // namespace strata::server
