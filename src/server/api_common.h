#pragma once
// What the OpenAI-shaped endpoints (chat completions, completions, responses) and Anthropic's
// messages share while they translate into the one CompletionRequest: ids, server-sent events,
// the OpenAI layer's sampling defaults, tools in the native shape, earlier calls as history.
#include <string>

#include "server/completion.h"

namespace strata::server {

constexpr const char* kEventStream = "text/event-stream";

// "prefix" + a number unique within this process run.
std::string make_id(const char* prefix);
// One server-sent event with a name (Responses and Anthropic streams name theirs).
std::string sse_event(const std::string& type, const json& data);
// The stored settings of the body's model (none for a missing or unknown name: the lease says why).
ModelSettings settings_of(const ModelRegistry& registry, const json& body);
// model (required), stream (default false) and sampling as Ollama's OpenAI layer sets it:
// temperature and top_p default to 1 (OpenAI's defaults), the rest keep Ollama's; the parameters
// /api/create stored with the model override those defaults. The API's own fields come after.
CompletionRequest openai_base_request(const json& body, const ModelSettings& settings);
// A tool in the native shape {"type": "function", "function": {"name", "description", "parameters"}};
// HttpError 400 when the name is missing.
json native_tool(const json& name, const json& description, const json& parameters);
// An earlier call of the assistant, as the text it is in the conversation: the JSON call
// {"name", "arguments"} that parse_tool_calls reads and a forced tool call writes.
std::string call_text(const std::string& name, const json& arguments);
// A call's arguments given as JSON text (OpenAI) or an object (Anthropic): HttpError 400 when
// they are not a JSON object.
json call_arguments(const json& arguments);
// The answer's calls (when the request offered tools) and the text outside them.
ToolCalls answer_parts(const CompletionRequest& req, const std::string& text);

}  // namespace strata::server
