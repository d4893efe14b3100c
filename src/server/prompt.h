#pragma once
// The text a conversation becomes before tokenization. This is the one place that knows how:
// today the built-in formats of runtime/chat_format.h, detected from the model's template; the
// Jinja engine (src/template/) slots in here.
#include <string>
#include <vector>

#include "runtime/chat_format.h"

namespace strata { class Model; class Tokenizer; }

namespace strata::server {

// The conversation rendered with the assistant's turn opened. with_bos: begin with the BOS text
// when the model wants one (not when continuing an earlier context).
std::string render_prompt(const Model& model, const Tokenizer& tokenizer, const std::vector<ChatMessage>& messages,
                          bool with_bos);
// Strings that end the assistant's turn in the model's format (besides end-of-generation tokens).
std::vector<std::string> prompt_stop_strings(const Model& model);
// The model's chat template as stored in the file ("" when it has none), for /api/show.
std::string prompt_template_text(const Model& model);
std::string prompt_format_name(const Model& model);

}  // namespace strata::server
