#pragma once
// Built-in chat formats for `strata chat`, detected from the model's tokenizer.chat_template the
// way llama.cpp detects them. (The full Jinja template engine comes with the server.)
#include <string>
#include <string_view>
#include <vector>

namespace strata::gguf { class File; }

namespace strata {

struct ChatMessage {
  std::string role;  // system, user, assistant
  std::string content;
};

enum class ChatFormat { chatml, gemma, llama3, mistral, zephyr, harmony };

ChatFormat detect_chat_format(const gguf::File& file);
const char* chat_format_name(ChatFormat f);
// The prompt for the conversation so far, ending with the assistant's turn opened.
// reasoning_effort: harmony's "Reasoning:" line (low, medium or high), as gpt-oss's template takes it.
std::string render_chat(ChatFormat f, const std::vector<ChatMessage>& messages, const std::string& bos_text,
                        std::string_view reasoning_effort = "medium");
// Strings that end the assistant's turn in this format (besides the end-of-generation tokens).
std::vector<std::string> chat_stop_strings(ChatFormat f);

// --- gpt-oss's harmony format: a reply is a sequence of messages
//   [<|start|>assistant[ to=RECIPIENT]]<|channel|>CHANNEL[ to=RECIPIENT][ <|constrain|>TYPE]<|message|>BODY(<|end|>|<|return|>|<|call|>)
// (the prompt already ends with the first "<|start|>assistant"). Channel analysis is the model's
// reasoning, returned the way Ollama returns `thinking`; final (and commentary without a
// recipient, a preamble) is the content; a recipient functions.NAME makes the body the JSON
// arguments of a tool call, as llama.cpp's gpt-oss parser reads them.
struct HarmonyToolCall {
  std::string name;       // without "functions."
  std::string arguments;  // the JSON text as generated
};
struct HarmonyReply {
  std::string thinking;
  std::string content;
  std::vector<HarmonyToolCall> tool_calls;
};
// Parses generated text. partial: the text may stop anywhere (streaming): a trailing piece that
// may be the start of a marker ("<|e") is held back, and an unfinished tool call is left out.
HarmonyReply parse_harmony(std::string_view text, bool partial = false);

// The same for a stream of text pieces, incrementally (each byte is scanned a bounded number of
// times): feed returns what is new in thinking and content; finish takes the rest (the held-back
// tail, an unfinished tool call) and returns the whole reply, whose thinking and content are
// exactly the deltas fed out, concatenated.
class HarmonyStream {
 public:
  struct Delta {
    std::string thinking;
    std::string content;
  };
  Delta feed(std::string_view piece);
  HarmonyReply finish();
  const HarmonyReply& reply() const { return reply_; }  // so far

 private:
  Delta advance(bool at_end);

  std::string text_;
  HarmonyReply reply_;
  size_t pos_ = 0;                      // where the current message's header starts
  size_t header_scanned_ = 0;           // the header was searched for <|message|> up to here
  size_t body_at_ = std::string::npos;  // the current message's body (npos: in its header)
  size_t emitted_ = 0;                  // text_[.., emitted_) was given out (or skipped)
  std::string channel_, recipient_;     // the current message's
  bool call_taken_ = false;
};

}  // namespace strata
