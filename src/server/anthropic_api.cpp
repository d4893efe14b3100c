// Anthropic's Messages API as Ollama serves it: POST /v1/messages and /v1/messages/count_tokens.
// system, messages of content blocks (text, tool_use, tool_result), tools and tool_choice become
// one CompletionRequest; the answer comes back as content blocks with a stop reason, or as the
// events message_start ... message_stop. Errors are {"type": "error", "error": {"type", "message"}}.
#include "server/api.h"
#include "server/api_common.h"
#include "server/completion.h"
#include "server/connection.h"
#include "server/errors.h"
#include "server/http_util.h"
#include "server/limits.h"

namespace strata::server {

namespace {

constexpr ErrorStyle kStyle = ErrorStyle::anthropic;

// Text of a block list's text blocks (tool_result content and system are strings or text blocks).
std::string blocks_text(const json& content, const char* where) {
  if (content.is_null()) return "";
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) throw bad_request(std::string(where) + " must be a string or an array of content blocks");
  std::string text;
  for (const json& block : content) {
    const std::string type = block.is_object() ? field_string(block, "type").value_or("") : "";
    if (type != "text")
      throw bad_request(std::string(where) + ": blocks of type \"" + type + "\" are not supported here");
    text += field_string(block, "text").value_or("");
  }
  return text;
}

// One message's blocks into the conversation: tool_result blocks become "tool" turns (before the
// user's text, as they answer the assistant's calls), tool_use blocks the assistant's JSON calls.
void add_message(const json& m, std::vector<ChatMessage>& out) {
  if (!m.is_object()) throw bad_request("each of \"messages\" must be an object");
  const std::string role = field_string(m, "role").value_or("");
  if (role != "user" && role != "assistant") throw bad_request("a message's role must be \"user\" or \"assistant\"");
  const json content = m.value("content", json(nullptr));
  if (!content.is_array()) {
    out.push_back({role, blocks_text(content, "message content")});
    return;
  }
  std::string text;
  for (const json& block : content) {
    const std::string type = block.is_object() ? field_string(block, "type").value_or("") : "";
    if (type == "text") {
      text += field_string(block, "text").value_or("");
    } else if (type == "tool_use" && role == "assistant") {
      const std::string name = field_string(block, "name").value_or("");
      if (name.empty()) throw bad_request("a tool_use block needs a \"name\"");
      text += (text.empty() ? "" : "\n") + call_text(name, call_arguments(block.value("input", json(nullptr))));
    } else if (type == "tool_result" && role == "user") {
      out.push_back({"tool", blocks_text(block.value("content", json(nullptr)), "tool_result content")});
    } else if (type == "thinking" || type == "redacted_thinking") {
      // the model's own reasoning is not replayed
    } else {
      throw bad_request("content blocks of type \"" + type + "\" are not supported in " + role + " messages");
    }
  }
  if (!text.empty() || out.empty() || out.back().role != "tool") out.push_back({role, text});
}

// tools: [{"name", "description", "input_schema"}]; tool_choice: {"type": "auto" | "any" |
// "tool" (with "name") | "none"}.
void add_tools(const json& body, CompletionRequest& r) {
  if (const json* tools = field_array(body, "tools"); tools && !tools->empty()) {
    r.tools = json::array();
    for (const json& t : *tools) {
      if (!t.is_object()) throw bad_request("each tool must be an object");
      if (auto type = field_string(t, "type"); type && *type != "custom")
        throw bad_request("tools of type \"" + *type + "\" are not supported (custom tools only)");
      r.tools.push_back(native_tool(t.value("name", json(nullptr)), t.value("description", json(nullptr)),
                                    t.value("input_schema", json(nullptr))));
    }
  }
  const json* choice = field_object(body, "tool_choice");
  if (!choice) return;
  const std::string type = field_string(*choice, "type").value_or("");
  if (type == "auto") return;
  if (type == "none") return set_tool_choice(r, ToolChoice::none);
  if (type == "any") return set_tool_choice(r, ToolChoice::required);
  if (type == "tool") return set_tool_choice(r, ToolChoice::named, field_string(*choice, "name").value_or(""));
  throw bad_request("tool_choice.type must be auto, any, tool or none");
}

// The conversation and tools of a request (messages and count_tokens alike).
CompletionRequest parse_conversation(const json& body, const ModelSettings& settings) {
  CompletionRequest r = openai_base_request(body, settings);
  r.chat = true;
  if (auto it = body.find("system"); it != body.end() && !it->is_null()) {
    const std::string system = blocks_text(*it, "system");
    if (!system.empty()) r.messages.push_back({"system", system});
  }
  const json* messages = field_array(body, "messages");
  if (!messages || messages->empty()) throw bad_request("messages is required");
  for (const json& m : *messages) add_message(m, r.messages);
  add_default_system(settings, r.messages);
  add_tools(body, r);
  return r;
}

CompletionRequest parse_messages(const json& body, const ModelSettings& settings) {
  CompletionRequest r = parse_conversation(body, settings);
  if (auto max = field_int(body, "max_tokens")) {
    if (*max < 1) throw bad_request("max_tokens must be at least 1");
    r.gen.n_predict = int(std::min<int64_t>(*max, limits::kMaxPredictTokens));
  }
  if (auto v = field_int(body, "top_k")) r.gen.sampling.top_k = int32_t(std::clamp<int64_t>(*v, 0, 1 << 30));
  if (auto v = field_strings(body, "stop_sequences")) r.gen.stop = *v;
  // As Ollama's Anthropic layer: thinking enabled is think true (a model that cannot think
  // refuses it in prepare_prompt).
  if (const json* thinking = field_object(body, "thinking"))
    if (field_string(*thinking, "type").value_or("disabled") == "enabled") r.think = true;
  return r;
}

// --- output

// end_turn, max_tokens, stop_sequence (one of the request's) or tool_use.
json stop_reason(const CompletionRequest& req, const CompletionResult& r, bool called) {
  if (called) return "tool_use";
  if (r.gen.done_reason == "length") return "max_tokens";
  const auto& own = req.gen.stop;
  if (!r.gen.stop_string.empty() && std::find(own.begin(), own.end(), r.gen.stop_string) != own.end())
    return "stop_sequence";
  return "end_turn";
}

json stop_sequence(const json& reason, const CompletionResult& r) {
  return reason == "stop_sequence" ? json(r.gen.stop_string) : json(nullptr);
}

json tool_use_block(const json& call) {
  return {{"type", "tool_use"},
          {"id", make_id("toolu_")},
          {"name", call["function"]["name"]},
          {"input", call["function"]["arguments"]}};
}

json message_object(const std::string& id, const CompletionRequest& req) {
  return {{"id", id},
          {"type", "message"},
          {"role", "assistant"},
          {"model", req.model},
          {"content", json::array()},
          {"stop_reason", nullptr},
          {"stop_sequence", nullptr},
          {"usage", {{"input_tokens", 0}, {"output_tokens", 0}}}};
}

void answer(ModelRegistry& registry, const CompletionRequest& req, httplib::Response& res) {
  const auto started = Clock::now();
  const auto lease = registry.lease(req.model, std::nullopt);
  const PreparedPrompt prompt = prepare_prompt(lease->model(), req);
  const std::string id = make_id("msg_");
  if (!req.stream) {
    const CompletionResult r =
        run_completion(*lease, req, prompt, started, [](const std::string&) { return client_connected(); });
    if (r.cancelled) {
      connection_close_after_response();
      return send_error(res, kStyle, 503, "the client went away; the generation was stopped");
    }
    ToolCalls parts = answer_parts(req, r.gen.text);
    for (const json& c : r.format_calls) parts.calls.push_back(c);
    json message = message_object(id, req);
    if (!r.thinking.empty())
      message["content"].push_back({{"type", "thinking"}, {"thinking", r.thinking}, {"signature", ""}});
    if (!parts.content.empty() || parts.calls.empty())
      message["content"].push_back({{"type", "text"}, {"text", parts.content}});
    for (const json& call : parts.calls) message["content"].push_back(tool_use_block(call));
    message["stop_reason"] = stop_reason(req, r, !parts.calls.empty());
    message["stop_sequence"] = stop_sequence(message["stop_reason"], r);
    message["usage"] = {{"input_tokens", r.gen.n_prompt_total}, {"output_tokens", r.gen.n_generated}};
    return send_json(res, message);
  }
  const int n_prompt = int(prompt.tokens.size());
  send_stream(res, kEventStream, [=](const Emit& emit) {
    auto event = [&](const char* type, json data) {
      json j = {{"type", type}};
      j.update(data);
      return emit(sse_event(type, j));
    };
    int index = 0;          // the content block being written
    std::string open_kind;  // the block open at `index`: "text", "thinking", or none
    bool text_sent = false;
    auto close_block = [&] {
      if (open_kind.empty()) return true;
      open_kind.clear();
      return event("content_block_stop", {{"index", index++}});
    };
    // Text or thinking (a model with channels), each kind in its own block.
    auto write = [&](const std::string& kind, const std::string& text) {
      const bool thinking = kind == "thinking";
      if (open_kind != kind) {
        if (!close_block()) return false;
        open_kind = kind;
        const json block = thinking ? json{{"type", "thinking"}, {"thinking", ""}, {"signature", ""}}
                                    : json{{"type", "text"}, {"text", ""}};
        if (!event("content_block_start", {{"index", index}, {"content_block", block}})) return false;
      }
      text_sent = text_sent || !thinking;
      if (text.empty()) return true;
      const json delta = thinking ? json{{"type", "thinking_delta"}, {"thinking", text}}
                                  : json{{"type", "text_delta"}, {"text", text}};
      return event("content_block_delta", {{"index", index}, {"delta", delta}});
    };
    try {
      json start = message_object(id, req);
      start["usage"]["input_tokens"] = n_prompt;
      if (!event("message_start", {{"message", start}})) return;
      const bool tools = !req.tools.is_null();
      ToolCallStream calls;
      const OnPiece on_piece = [&](const std::string& piece, std::vector<TokenLogprob>&&) {
        const std::string out = tools ? calls.push(piece) : piece;
        return out.empty() || write("text", out);
      };
      const OnThinking on_thinking = [&](const std::string& thinking) { return write("thinking", thinking); };
      const CompletionResult r = run_completion(*lease, req, prompt, started, on_piece, on_thinking);
      if (r.cancelled) return;
      ToolCalls found = tools ? calls.finish() : ToolCalls{};
      for (const json& c : r.format_calls) found.calls.push_back(c);
      if ((!found.content.empty() || (!text_sent && found.calls.empty())) && !write("text", found.content)) return;
      if (!close_block()) return;
      for (const json& call : found.calls) {
        json block = tool_use_block(call);
        const std::string input = dump(block["input"]);
        block["input"] = json::object();
        if (!event("content_block_start", {{"index", index}, {"content_block", block}}) ||
            !event("content_block_delta",
                   {{"index", index}, {"delta", {{"type", "input_json_delta"}, {"partial_json", input}}}}) ||
            !event("content_block_stop", {{"index", index++}}))
          return;
      }
      const json reason = stop_reason(req, r, !found.calls.empty());
      if (!event("message_delta", {{"delta", {{"stop_reason", reason}, {"stop_sequence", stop_sequence(reason, r)}}},
                                   {"usage", {{"output_tokens", r.gen.n_generated}}}}))
        return;
      event("message_stop", json::object());
    } catch (const std::exception& e) {
      event("error", {{"error", {{"type", "api_error"}, {"message", e.what()}}}});
    }
  });
}

// The prompt's tokens as the model's template renders the conversation and tools.
void count_tokens(ModelRegistry& registry, const CompletionRequest& req, httplib::Response& res) {
  const auto lease = registry.lease(req.model, std::nullopt);
  const PreparedPrompt prompt = prepare_prompt(lease->model(), req);
  send_json(res, {{"input_tokens", prompt.tokens.size()}});
}

}  // namespace

void add_anthropic_routes(httplib::Server& http, ModelRegistry& registry) {
  add_route_with_body(http, "POST", "/v1/messages", kStyle,
                      [&registry](const httplib::Request& req, httplib::Response& res) {
                        const json body = parse_body(req.body);
                        answer(registry, parse_messages(body, settings_of(registry, body)), res);
                      });
  add_route_with_body(http, "POST", "/v1/messages/count_tokens", kStyle,
                      [&registry](const httplib::Request& req, httplib::Response& res) {
                        const json body = parse_body(req.body);
                        count_tokens(registry, parse_conversation(body, settings_of(registry, body)), res);
                      });
}

}  // namespace strata::server
