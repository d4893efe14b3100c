#pragma once
// The one native request every endpoint translates into (Ollama generate/chat, OpenAI
// completions/chat completions), and its result. The API files only map JSON to and from these.
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "runtime/chat_format.h"
#include "runtime/generate.h"
#include "server/json_fields.h"
#include "server/model_registry.h"

namespace strata::server {

struct CompletionRequest {
  std::string model;  // as the client named it (echoed back)
  bool chat = false;
  std::vector<ChatMessage> messages;  // chat: the conversation
  std::string prompt;                 // completion: the text, templated as one user turn unless raw
  std::string system;                 // completion: system message for the template
  bool raw = false;
  std::vector<Token> context;  // completion: tokens of an earlier exchange to continue
  GenerateParams gen;
  int n_ctx = 0;      // 0: the server's default
  int n_threads = 0;  // 0: the server's default
  std::optional<double> keep_alive_s;
  bool stream = true;
  // Structured output: the answer must be JSON, matching json_schema unless that is null (then
  // any object).
  bool json_output = false;
  json json_schema;
  json tools;  // chat: the tool definitions (array), or null
};

// Tool calls found in a model's answer: Hermes/Qwen "<tool_call>{json}</tool_call>" blocks, or
// an answer that is one JSON call (Llama 3.1: {"name", "parameters"}). content keeps the text
// outside the calls.
struct ToolCalls {
  json calls = json::array();  // [{"function": {"name", "arguments": {...}}}]
  std::string content;
};
ToolCalls parse_tool_calls(const std::string& text);

// The tokens a request evaluates, checked against the context before anything is streamed.
struct PreparedPrompt {
  std::vector<Token> tokens;
  std::vector<std::string> stop;  // the request's stop strings and the chat format's
};

struct CompletionResult {
  GenerateResult gen;
  std::vector<Token> context;  // prompt + generated tokens (Ollama's "context")
  double load_seconds = 0;
  double total_seconds = 0;
  bool cancelled = false;  // the client went away
};

// Tokenizes the request's prompt: HttpError 400 for an empty or too long prompt or a context
// token outside the vocabulary.
PreparedPrompt prepare_prompt(const LoadedModel& model, const CompletionRequest& req);

// Generates on the model, waiting for its turn (one request per model at a time). on_text
// receives the text as it is produced; returning false cancels (a disconnected client).
CompletionResult run_completion(const ModelLease& lease, const CompletionRequest& req, const PreparedPrompt& prompt,
                                Clock::time_point started, const std::function<bool(const std::string&)>& on_text);

}  // namespace strata::server
