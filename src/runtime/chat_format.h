#pragma once
// Built-in chat formats for `strata chat`, detected from the model's tokenizer.chat_template the
// way llama.cpp detects them. (The full Jinja template engine comes with the server.)
#include <string>
#include <vector>

namespace strata::gguf { class File; }

namespace strata {

struct ChatMessage {
  std::string role;  // system, user, assistant
  std::string content;
};

enum class ChatFormat { chatml, gemma, llama3, mistral, zephyr };

ChatFormat detect_chat_format(const gguf::File& file);
const char* chat_format_name(ChatFormat f);
// The prompt for the conversation so far, ending with the assistant's turn opened.
std::string render_chat(ChatFormat f, const std::vector<ChatMessage>& messages, const std::string& bos_text);
// Strings that end the assistant's turn in this format (besides the end-of-generation tokens).
std::vector<std::string> chat_stop_strings(ChatFormat f);

}  // namespace strata
