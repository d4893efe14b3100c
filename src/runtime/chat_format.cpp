#include "runtime/chat_format.h"

#include <utility>

#include "gguf/gguf.h"

namespace strata {

ChatFormat detect_chat_format(const gguf::File& file) {
  const std::string t = file.get_string("tokenizer.chat_template", "");
  const std::string arch = file.architecture();
  auto has = [&](const char* s) { return t.find(s) != std::string::npos; };
  if (has("<|im_start|>")) return ChatFormat::chatml;
  if (has("<start_of_turn>") || arch.rfind("gemma", 0) == 0) return ChatFormat::gemma;
  if (has("<|start_header_id|>")) return ChatFormat::llama3;
  if (has("[INST]")) return ChatFormat::mistral;
  if (has("<|user|>")) return ChatFormat::zephyr;
  return ChatFormat::chatml;
}

const char* chat_format_name(ChatFormat f) {
  switch (f) {
    case ChatFormat::chatml: return "chatml";
    case ChatFormat::gemma: return "gemma";
    case ChatFormat::llama3: return "llama3";
    case ChatFormat::mistral: return "mistral";
    case ChatFormat::zephyr: return "zephyr";
  }
  return "chatml";
}

std::string render_chat(ChatFormat f, const std::vector<ChatMessage>& messages, const std::string& bos) {
  std::string out;
  switch (f) {
    case ChatFormat::chatml:
      for (const auto& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      out += "<|im_start|>assistant\n";
      break;
    case ChatFormat::gemma: {
      // Gemma has no system role: the system text opens the first user turn.
      out += bos;
      std::string system;
      for (const auto& m : messages) {
        if (m.role == "system") {
          system += m.content + "\n\n";
          continue;
        }
        const std::string role = m.role == "assistant" ? "model" : "user";
        out += "<start_of_turn>" + role + "\n" + (role == "user" ? std::exchange(system, {}) : "") + m.content +
               "<end_of_turn>\n";
      }
      out += "<start_of_turn>model\n";
      break;
    }
    case ChatFormat::llama3:
      out += bos;
      for (const auto& m : messages)
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + m.content + "<|eot_id|>";
      out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
    case ChatFormat::mistral: {
      out += bos;
      std::string system;
      for (const auto& m : messages) {
        if (m.role == "system") system += m.content + "\n\n";
        else if (m.role == "user") out += "[INST] " + std::exchange(system, {}) + m.content + " [/INST]";
        else out += " " + m.content + "</s>";
      }
      break;
    }
    case ChatFormat::zephyr:
      for (const auto& m : messages) out += "<|" + m.role + "|>\n" + m.content + "</s>\n";
      out += "<|assistant|>\n";
      break;
  }
  return out;
}

std::vector<std::string> chat_stop_strings(ChatFormat f) {
  switch (f) {
    case ChatFormat::chatml: return {"<|im_end|>", "<|im_start|>"};
    case ChatFormat::gemma: return {"<end_of_turn>", "<start_of_turn>"};
    case ChatFormat::llama3: return {"<|eot_id|>"};
    case ChatFormat::mistral: return {"[INST]"};
    case ChatFormat::zephyr: return {"</s>", "<|user|>"};
  }
  return {};
}

}  // namespace strata
