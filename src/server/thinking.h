#pragma once
// Ollama's "think" field: true, false, or a level ("high", "medium", "low"), as Ollama checks it:
// any other value is a 400; asking a model that cannot think to think (true or a level) is a 400
// naming the model; false is accepted by every model. A model can think when its chat template
// takes enable_thinking (Qwen3) or reasoning_effort (gpt-oss), or writes <think> tags.
#include <optional>
#include <string>

#include "server/json_fields.h"

namespace strata::server {

// The request's think value: nullopt when absent or null; bad_request for anything else than a
// boolean or one of the three levels.
std::optional<json> parse_think(const json& body);
// Whether the value asks for thinking (true or a level).
bool wants_thinking(const std::optional<json>& think);
// Whether a chat template lets the model think.
bool template_can_think(const std::string& template_source);

}  // namespace strata::server
