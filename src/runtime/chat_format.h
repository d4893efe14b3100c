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

// --- a reply split as it streams into the model's reasoning (returned the way Ollama returns
// `thinking`), its content, and the tool calls a format marks itself. One interface, one
// implementation per way a format marks reasoning: harmony's channels (HarmonyStream) and tags
// around it (ThinkTagStream).
struct HarmonyToolCall {
  std::string name;       // without "functions."
  std::string arguments;  // the JSON text as generated
};
struct SplitReply {
  std::string thinking;
  std::string content;
  std::vector<HarmonyToolCall> tool_calls;
};
using HarmonyReply = SplitReply;

class ReplyStream {
 public:
  struct Delta {
    std::string thinking;
    std::string content;
  };
  virtual ~ReplyStream() = default;
  // The next piece of generated text: what is new in thinking and content (text that may begin a
  // marker is held back until it is known).
  virtual Delta feed(std::string_view piece) = 0;
  // At the end: takes the rest (the held-back tail, an unfinished tool call) and returns the whole
  // reply, whose thinking and content are exactly the deltas fed out, concatenated.
  virtual SplitReply finish() = 0;
  virtual const SplitReply& reply() const = 0;  // so far
};

// --- gpt-oss's harmony format: a reply is a sequence of messages
//   [<|start|>assistant[ to=RECIPIENT]]<|channel|>CHANNEL[ to=RECIPIENT][ <|constrain|>TYPE]<|message|>BODY(<|end|>|<|return|>|<|call|>)
// (the prompt already ends with the first "<|start|>assistant"). Channel analysis is the model's
// reasoning; final (and commentary without a recipient, a preamble) is the content; a recipient
// functions.NAME makes the body the JSON arguments of a tool call, as llama.cpp's gpt-oss parser
// reads them.
//
// Parses generated text. partial: the text may stop anywhere (streaming): a trailing piece that
// may be the start of a marker ("<|e") is held back, and an unfinished tool call is left out.
HarmonyReply parse_harmony(std::string_view text, bool partial = false);

// The same for a stream of text pieces, incrementally (each byte is scanned a bounded number of
// times).
class HarmonyStream : public ReplyStream {
 public:
  Delta feed(std::string_view piece) override;
  SplitReply finish() override;
  const SplitReply& reply() const override { return reply_; }

 private:
  Delta advance(bool at_end);

  std::string text_;
  SplitReply reply_;
  size_t pos_ = 0;                      // where the current message's header starts
  size_t header_scanned_ = 0;           // the header was searched for <|message|> up to here
  size_t body_at_ = std::string::npos;  // the current message's body (npos: in its header)
  size_t emitted_ = 0;                  // text_[.., emitted_) was given out (or skipped)
  std::string channel_, recipient_;     // the current message's
  bool call_taken_ = false;
};

// --- reasoning between tags at the start of a reply (Qwen3's and DeepSeek-R1's
// "<think>...</think>"), split as Ollama's thinking parser splits it: a reply that opens with the
// opening tag (after white space), or whose prompt already opened it (inside), is reasoning up to
// the closing tag and content after it; white space right after either tag is dropped; a reply
// that opens with anything else is all content (tags in it included).
class ThinkTagStream : public ReplyStream {
 public:
  static constexpr std::string_view kOpen = "<think>", kClose = "</think>";

  explicit ThinkTagStream(bool inside = false, std::string_view open = kOpen, std::string_view close = kClose);
  Delta feed(std::string_view piece) override;
  SplitReply finish() override;
  const SplitReply& reply() const override { return reply_; }

 private:
  enum class State { opening, thinking, content };
  Delta advance(bool at_end);

  std::string open_, close_;
  State state_;
  bool eat_space_;       // white space after a tag is dropped
  std::string pending_;  // text not given out yet: a possible start of a tag
  SplitReply reply_;
};

}  // namespace strata
