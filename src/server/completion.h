#pragma once
// The one native request every endpoint translates into (Ollama generate/chat, OpenAI
// completions/chat completions), and its result. The API files only map JSON to and from these.
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "runtime/chat_format.h"
#include "runtime/generate.h"
#include "runtime/grammar.h"
#include "server/json_fields.h"
#include "server/model_registry.h"
#include "server/model_settings.h"

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
  // Structured output: the answer must be what one of these accepts (see set_json_format and
  // set_tool_choice); empty: free text.
  std::vector<JsonAcceptor> format;
  json tools;  // chat: the tool definitions (array, [{"type": "function", "function": {...}}]), or null
  // The answer must be a call to one of `tools` (tool_choice "required" or a named tool): the
  // grammar holds it to {"name": ..., "arguments": {...}} (set_tool_choice).
  bool forced_tool_call = false;
  // Ollama's "think" (thinking.h): nullopt, true/false or a level.
  std::optional<json> think;
  // A prompt over the context: Ollama's "truncate" (default true) drops the oldest messages
  // (keeping system messages and the last one), then the oldest tokens after the first num_keep
  // (options.num_keep, Ollama's default 4), to leave the answer room (prepare_prompt); false: 400.
  bool truncate = true;
  int num_keep = 4;
  // Generation past the context: Ollama's "shift" (default true) shifts it, keeping the first
  // num_keep tokens (GenerateParams::context_shift); false, or num_predict -2 ("fill the
  // context"): done_reason "length" at a full context. Either way generation stops after
  // kMaxPredictContexts contexts' worth of tokens, as Ollama's 10 x num_ctx.
  bool shift = true;
  static constexpr int kMaxPredictContexts = 10;
};

// tool_choice in the APIs' common meaning: automatic (the model decides), none (no tools offered),
// required (some call), named (a call to that tool).
enum class ToolChoice { automatic, none, required, named };
// Applies a tool choice to r.tools. required and named are enforced by the grammar: the answer
// can only be a JSON call {"name", "arguments"} to one of the tools (named: that one) whose
// arguments match that tool's parameters schema (one grammar alternative per tool).
// HttpError 400: no tools to require, a name that is not among them, or a response format too.
void set_tool_choice(CompletionRequest& r, ToolChoice choice, const std::string& name = "");
// top_logprobs for a request that asked for logprobs: HttpError 400 outside [0, kMaxTopLogprobs].
void set_logprobs(CompletionRequest& r, bool logprobs, std::optional<int64_t> top_logprobs);
// One generated token's log-probability as OpenAI's chat API and Ollama (>= 0.12) write it:
// {"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}.
json logprob_json(const Tokenizer& tokenizer, const TokenLogprob& lp);

// Ollama's "options" (num_ctx, num_predict, temperature, top_k, top_p, min_p, seed, stop,
// repeat_penalty, repeat_last_n, presence_penalty, frequency_penalty, num_thread) applied over
// r.gen, r.n_ctx and r.n_threads. Unknown options are ignored, as Ollama does. Used for a
// request's options and for the parameters /api/create stored with a model.
void apply_options(const json& options, CompletionRequest& r);
// Structured output: any JSON object (schema nullptr), or a value matching the JSON schema.
// HttpError 400 names what a schema asks that the grammar cannot enforce.
void set_json_format(CompletionRequest& r, const json* schema);
// What /api/create stored for the requested model; empty for an unknown or invalid name (the
// lease answers 404 or 400 for those).
ModelSettings stored_settings(const ModelRegistry& registry, const std::string& requested);
// The model's stored system message leads a conversation that has none of its own.
void add_default_system(const ModelSettings& settings, std::vector<ChatMessage>& messages);

// Tool calls found in a model's answer: Hermes/Qwen "<tool_call>{json}</tool_call>" blocks, or
// an answer that is one JSON call (Llama 3.1: {"name", "parameters"}). content keeps the text
// outside the calls.
struct ToolCalls {
  json calls = json::array();  // [{"function": {"name", "arguments": {...}}}]
  std::string content;
};
ToolCalls parse_tool_calls(const std::string& text);

// A forced call (CompletionRequest::forced_tool_call) cut off by the length limit, e.g.
// {"name": "get_weather", "arguments": {"ci : the tool's name and the arguments' text so far, as
// OpenAI returns such a call (with finish reason "length"); nullopt when the text is not the
// start of a call whose name is complete.
struct PartialCall {
  std::string name;
  std::string arguments;
};
std::optional<PartialCall> partial_forced_call(const std::string& text);

// Streams an answer that may hold tool calls: text that cannot belong to a call passes through
// as it comes; what may be a call (an answer opening with '{', '[' or <|python_tag|>, or
// anything from a "<tool_call>" on) is held until the answer ends and then parsed.
class ToolCallStream {
 public:
  // Takes the next piece of the answer; returns the text that may be sent now (maybe empty).
  std::string push(const std::string& piece);
  // At the end of the answer: the calls, and the content not yet returned by push().
  ToolCalls finish() const;

 private:
  std::string text_;
  size_t sent_ = 0;       // text_[0, sent_) was returned by push()
  bool holding_ = false;  // everything from sent_ on is held until finish()
};

// The tokens a request evaluates, checked against the context before anything is streamed.
struct PreparedPrompt {
  std::vector<Token> tokens;
  std::vector<std::string> stop;  // the request's stop strings and the chat format's
  // How run_completion splits the reply into thinking and content: harmony's channels, the
  // template's <think> tags (runtime/chat_format.h), or not at all.
  enum class Split { none, harmony, think_tags };
  Split split = Split::none;
  bool thinking_open = false;  // think_tags: the prompt ends with the opening tag
};

struct CompletionResult {
  // gen.text is the answer's content: for a reply split into reasoning and content
  // (PreparedPrompt::split), the content, with the reasoning in `thinking` and the calls the
  // format marks itself (harmony's) in `format_calls` (native shape, as ToolCalls::calls).
  GenerateResult gen;
  std::string thinking;
  json format_calls = json::array();
  std::vector<Token> context;  // prompt + generated tokens (Ollama's "context")
  double load_seconds = 0;
  double total_seconds = 0;
  bool cancelled = false;  // the client went away
};

// Tokenizes the request's prompt, fitted to the context as Ollama does (see
// CompletionRequest::truncate): bad_request for an empty prompt, one over the context with
// truncate false, thinking asked of a model that cannot think, or a context token outside the
// vocabulary.
PreparedPrompt prepare_prompt(const LoadedModel& model, const CompletionRequest& req);

// Generates on the model, waiting for its turn (one request per model at a time). on_text
// receives the text as it is produced; returning false cancels (a disconnected client).
CompletionResult run_completion(const ModelLease& lease, const CompletionRequest& req, const PreparedPrompt& prompt,
                                Clock::time_point started, const std::function<bool(const std::string&)>& on_text);
// The same, with the log-probabilities (req.gen.n_top_logprobs >= 0) of the tokens whose text
// this piece completes. Tokens whose text never reaches on_piece (a stop string) are in
// CompletionResult::gen.logprobs only.
// on_thinking (optional) receives the reasoning as it is produced, for a model whose format
// separates it (CompletionResult::thinking); on_piece then receives only the content.
using OnPiece = std::function<bool(const std::string& text, std::vector<TokenLogprob>&& logprobs)>;
using OnThinking = std::function<bool(const std::string& thinking)>;
CompletionResult run_completion(const ModelLease& lease, const CompletionRequest& req, const PreparedPrompt& prompt,
                                Clock::time_point started, const OnPiece& on_piece,
                                const OnThinking& on_thinking = nullptr);
// A harmony reply's calls in the native shape; a call whose arguments are not a JSON object is
// kept as text in the content (nothing the model wrote is lost).
void add_harmony_calls(const std::vector<HarmonyToolCall>& calls, json& native, std::string& content);

}  // namespace strata::server
