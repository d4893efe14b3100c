#pragma once
// The text a conversation becomes before tokenization. This is the one place that knows how: the
// model's own Jinja chat template (src/template/) when it has one that parses, otherwise the
// built-in format of runtime/chat_format.h detected from it.
#include <optional>
#include <string>
#include <vector>

#include "runtime/chat_format.h"
#include "template/template.h"

namespace strata {
class Model;
class Tokenizer;
}  // namespace strata

namespace strata::server {

class PromptFormat {
 public:
  // Parses the model's template once; a template the engine cannot parse falls back to the
  // built-in format (fallback_reason() says why).
  // template_override: a Jinja template to use instead of the model's (from /api/create).
  PromptFormat(const Model& model, const Tokenizer& tokenizer, const std::string& template_override = "");

  // The conversation rendered with the assistant's turn opened. with_bos: begin with the BOS
  // text when the model wants one (not when continuing an earlier context). Throws HttpError 400
  // when the template rejects the conversation (e.g. roles that do not alternate).
  // tools: the request's tool definitions (JSON array) for templates that take them, or null.
  // think: Ollama's think value (thinking.h) for templates that can think: enable_thinking
  // (false only for false) and, for a level, reasoning_effort; null leaves the template's default.
  std::string render(const std::vector<ChatMessage>& messages, bool with_bos,
                     const nlohmann::ordered_json& tools = nullptr,
                     const nlohmann::ordered_json& think = nullptr) const;
  // The model's replies are in channels (gpt-oss's harmony: runtime/chat_format.h), parsed by
  // run_completion into thinking, content and tool calls.
  bool channels() const { return builtin_ == ChatFormat::harmony; }
  // The template lets the model think (thinking.h's template_can_think); a harmony model always
  // thinks (its reasoning effort is the only setting).
  bool can_think() const { return can_think_; }
  // The template writes <think> and </think>: a thinking reply's reasoning is between them
  // (runtime/chat_format.h's ThinkTagStream).
  bool think_tags() const { return think_tags_; }
  // The template renders `tools` (a Jinja template that mentions them).
  bool supports_tools() const { return supports_tools_; }
  // Strings that end the assistant's turn (besides the end-of-generation tokens).
  const std::vector<std::string>& stop_strings() const { return stops_; }
  // "jinja" or the built-in format's name.
  std::string name() const;
  const std::string& fallback_reason() const { return fallback_reason_; }

 private:
  ChatFormat builtin_;
  std::optional<jinja::Template> jinja_;
  std::string bos_text_, eos_text_;
  bool add_bos_ = false;
  std::vector<std::string> stops_;
  std::string fallback_reason_;
  bool supports_tools_ = false;
  bool can_think_ = false;
  bool think_tags_ = false;
};

}  // namespace strata::server
