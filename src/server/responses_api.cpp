// OpenAI's Responses API as Ollama serves it (non-stateful): POST /v1/responses. The input items
// (messages, function calls and their outputs), instructions, tools, tool_choice and text.format
// become one CompletionRequest; the answer comes back as output items, or as the stream of
// events response.created ... response.completed.
#include "server/api.h"
#include "server/api_common.h"
#include "server/completion.h"
#include "server/connection.h"
#include "server/errors.h"
#include "server/http_util.h"
#include "server/limits.h"

namespace strata::server {

namespace {

using SysClock = std::chrono::system_clock;

// A message's content: a string or an array of text parts (input_text, output_text, text).
std::string content_text(const json& content) {
  if (content.is_null()) return "";
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) throw bad_request("an input message's content must be a string or an array of parts");
  std::string text;
  for (const json& part : content) {
    const std::string type = part.is_object() ? field_string(part, "type").value_or("") : "";
    if (type != "input_text" && type != "output_text" && type != "text")
      throw bad_request("input content parts of type \"" + type + "\" are not supported (text only)");
    text += field_string(part, "text").value_or("");
  }
  return text;
}

// Input items into the conversation. Consecutive function calls are one assistant turn.
void add_input(const json& body, CompletionRequest& r) {
  if (auto instructions = field_string(body, "instructions"); instructions && !instructions->empty())
    r.messages.push_back({"system", *instructions});
  auto input = body.find("input");
  if (input == body.end() || input->is_null()) throw bad_request("input is required");
  if (input->is_string()) {
    r.messages.push_back({"user", input->get<std::string>()});
    return;
  }
  if (!input->is_array()) throw bad_request("input must be a string or an array of input items");
  bool last_was_call = false;
  for (const json& item : *input) {
    if (!item.is_object()) throw bad_request("each input item must be an object");
    const std::string type = field_string(item, "type").value_or("message");
    const bool call = type == "function_call";
    if (type == "message") {
      std::string role = field_string(item, "role").value_or("");
      if (role != "user" && role != "assistant" && role != "system" && role != "developer")
        throw bad_request("an input message's role must be user, assistant, system or developer");
      if (role == "developer") role = "system";
      r.messages.push_back({role, content_text(item.contains("content") ? item["content"] : json(nullptr))});
    } else if (call) {
      const std::string name = field_string(item, "name").value_or("");
      if (name.empty()) throw bad_request("a function_call item needs a \"name\"");
      const std::string text =
          call_text(name, call_arguments(item.contains("arguments") ? item["arguments"] : json(nullptr)));
      if (last_was_call)
        r.messages.back().content += "\n" + text;
      else
        r.messages.push_back({"assistant", text});
    } else if (type == "function_call_output") {
      auto output = item.find("output");
      r.messages.push_back({"tool", output == item.end() ? "" : content_text(*output)});
    } else if (type != "reasoning") {  // reasoning items are the model's own, not replayed
      throw bad_request("input items of type \"" + type + "\" are not supported");
    }
    last_was_call = call;
  }
  if (r.messages.empty()) throw bad_request("input has no messages");
}

// tools: [{"type": "function", "name", "description", "parameters"}]; tool_choice: "none",
// "auto", "required" or {"type": "function", "name"}.
void add_tools(const json& body, CompletionRequest& r) {
  if (const json* tools = field_array(body, "tools"); tools && !tools->empty()) {
    r.tools = json::array();
    for (const json& t : *tools) {
      const std::string type = t.is_object() ? field_string(t, "type").value_or("") : "";
      if (type != "function") throw bad_request("tools of type \"" + type + "\" are not supported (function only)");
      r.tools.push_back(native_tool(t.value("name", json(nullptr)), t.value("description", json(nullptr)),
                                    t.value("parameters", json(nullptr))));
    }
  }
  auto choice = body.find("tool_choice");
  if (choice == body.end() || choice->is_null()) return;
  if (choice->is_string()) {
    const std::string c = choice->get<std::string>();
    if (c == "none") return set_tool_choice(r, ToolChoice::none);
    if (c == "required") return set_tool_choice(r, ToolChoice::required);
    if (c == "auto") return;
  } else if (choice->is_object() && field_string(*choice, "type").value_or("") == "function") {
    return set_tool_choice(r, ToolChoice::named, field_string(*choice, "name").value_or(""));
  }
  throw bad_request("tool_choice must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"name\"}");
}

// text.format: {"type": "text"}, {"type": "json_object"} or {"type": "json_schema", "schema"}.
void add_format(const json& body, CompletionRequest& r) {
  const json* text = field_object(body, "text");
  const json* format = text ? field_object(*text, "format") : nullptr;
  if (!format) return;
  const std::string type = field_string(*format, "type").value_or("text");
  if (type == "json_object") {
    set_json_format(r, nullptr);
  } else if (type == "json_schema") {
    const json* schema = field_object(*format, "schema");
    if (!schema) throw bad_request("text.format json_schema needs a \"schema\"");
    set_json_format(r, schema);
  } else if (type != "text") {
    throw bad_request("text.format type must be text, json_object or json_schema");
  }
}

CompletionRequest parse_responses(const json& body, const ModelSettings& settings) {
  CompletionRequest r = openai_base_request(body, settings);
  r.chat = true;
  if (auto prev = field_string(body, "previous_response_id"); prev && !prev->empty())
    throw bad_request("previous_response_id is not supported: this server keeps no responses (send the input)");
  if (auto max = field_int(body, "max_output_tokens"))
    r.gen.n_predict = *max < 0 ? -1 : int(std::min<int64_t>(*max, limits::kMaxPredictTokens));
  if (auto top = field_int(body, "top_logprobs")) set_logprobs(r, true, top);
  add_input(body, r);
  add_default_system(settings, r.messages);
  add_format(body, r);
  add_tools(body, r);
  return r;
}

// --- output

// base with more's fields added.
json with(json base, const json& more) {
  base.update(more);
  return base;
}

struct ResponseIds {
  std::string response = make_id("resp_");
  std::string message = make_id("msg_");
  int64_t created = unix_seconds(SysClock::now());
};

// Log-probabilities (top_logprobs asked for them) in the shape of chat completions' content list.
json logprobs_list(const Tokenizer& tok, const std::vector<TokenLogprob>& lps) {
  json list = json::array();
  for (const TokenLogprob& lp : lps) list.push_back(logprob_json(tok, lp));
  return list;
}

json message_item(const ResponseIds& ids, const std::string& text, const char* status, json logprobs = json::array()) {
  json content = json::array();
  if (std::string(status) != "in_progress")
    content.push_back(
        {{"type", "output_text"}, {"text", text}, {"annotations", json::array()}, {"logprobs", logprobs}});
  return {{"id", ids.message}, {"type", "message"}, {"status", status}, {"role", "assistant"}, {"content", content}};
}

// The model's reasoning (gpt-oss's analysis channel) as a reasoning item, its text as
// reasoning_text content.
json reasoning_item(const std::string& id, const std::string& text, const char* status) {
  json content = json::array();
  if (std::string(status) != "in_progress") content.push_back({{"type", "reasoning_text"}, {"text", text}});
  return {{"id", id}, {"type", "reasoning"}, {"summary", json::array()}, {"content", content}, {"status", status}};
}

json call_item(const json& call, const std::string& item_id, const std::string& call_id, const char* status) {
  const json& f = call["function"];
  return {{"id", item_id},      {"type", "function_call"}, {"status", status}, {"arguments", dump(f["arguments"])},
          {"call_id", call_id}, {"name", f["name"]}};
}

// A forced call cut off by max_output_tokens: its name and the arguments' text so far, marked
// incomplete (the response is incomplete too); nullptr when there is no such call.
json cut_call_item(const CompletionRequest& req, const CompletionResult& r) {
  const auto cut =
      req.forced_tool_call && r.gen.done_reason == "length" ? partial_forced_call(r.gen.text) : std::nullopt;
  if (!cut) return nullptr;
  return {{"id", make_id("fc_")},        {"type", "function_call"},     {"status", "incomplete"},
          {"arguments", cut->arguments}, {"call_id", make_id("call_")}, {"name", cut->name}};
}

json usage(const CompletionResult& r) {
  return {{"input_tokens", r.gen.n_prompt_total},
          {"input_tokens_details", {{"cached_tokens", r.gen.n_prompt_total - r.gen.n_prompt}}},
          {"output_tokens", r.gen.n_generated},
          {"output_tokens_details", {{"reasoning_tokens", 0}}},
          {"total_tokens", r.gen.n_prompt_total + r.gen.n_generated}};
}

// The response object; output and usage filled once the answer is done.
json response_object(const ResponseIds& ids, const CompletionRequest& req, const json& body, const char* status) {
  json tools = json::array();
  if (req.tools.is_array())
    for (const json& t : req.tools) {
      json flat = t["function"];
      flat["type"] = "function";
      tools.push_back(flat);
    }
  return {{"id", ids.response},
          {"object", "response"},
          {"created_at", ids.created},
          {"status", status},
          {"error", nullptr},
          {"incomplete_details", nullptr},
          {"instructions", body.value("instructions", json(nullptr))},
          {"max_output_tokens", body.value("max_output_tokens", json(nullptr))},
          {"model", req.model},
          {"output", json::array()},
          {"parallel_tool_calls", false},
          {"temperature", req.gen.sampling.temperature},
          {"top_p", req.gen.sampling.top_p},
          {"tool_choice", body.value("tool_choice", json("auto"))},
          {"tools", tools},
          {"text", body.value("text", json{{"format", {{"type", "text"}}}})},
          {"store", false},
          {"usage", nullptr},
          {"metadata", json::object()}};
}

// Marks a finished response: completed, or incomplete when the token limit cut it.
void finish(json& response, const CompletionResult& r) {
  const bool cut = r.gen.done_reason == "length";
  response["status"] = cut ? "incomplete" : "completed";
  if (cut) response["incomplete_details"] = {{"reason", "max_output_tokens"}};
  response["usage"] = usage(r);
}

void respond(ModelRegistry& registry, const CompletionRequest& req, const json& body, httplib::Response& res) {
  const auto started = Clock::now();
  const auto lease = registry.lease(req.model, std::nullopt);
  const PreparedPrompt prompt = prepare_prompt(lease->model(), req);
  const ResponseIds ids;
  if (!req.stream) {
    const CompletionResult r =
        run_completion(*lease, req, prompt, started, [](const std::string&) { return client_connected(); });
    if (r.cancelled) {
      connection_close_after_response();
      return send_error(res, ErrorStyle::openai, 503, "the client went away; the generation was stopped");
    }
    ToolCalls parts = answer_parts(req, r.gen.text);
    for (const json& c : r.format_calls) parts.calls.push_back(c);
    const json cut = parts.calls.empty() ? cut_call_item(req, r) : json();
    json response = response_object(ids, req, body, "completed");
    if (!r.thinking.empty()) response["output"].push_back(reasoning_item(make_id("rs_"), r.thinking, "completed"));
    if (cut.is_null() && (!parts.content.empty() || parts.calls.empty()))
      response["output"].push_back(
          message_item(ids, parts.content, "completed", logprobs_list(*lease->model().tokenizer, r.gen.logprobs)));
    for (const json& call : parts.calls)
      response["output"].push_back(call_item(call, make_id("fc_"), make_id("call_"), "completed"));
    if (!cut.is_null()) response["output"].push_back(cut);
    finish(response, r);
    return send_json(res, response);
  }
  send_stream(res, kEventStream, [=](const Emit& emit) {
    int sequence = 0;
    auto event = [&](const char* type, json data) {
      return emit(sse_event(type, with({{"type", type}, {"sequence_number", sequence++}}, data)));
    };
    json response = response_object(ids, req, body, "in_progress");
    // Reasoning (a model with channels) streams as a reasoning item before the message; any that
    // comes once the message has begun follows it as a second item.
    std::string reasoning, reasoning_id;  // the open reasoning item's text and id (empty id: none open)
    int reasoning_index = 0;
    auto open_reasoning = [&] {
      reasoning_id = make_id("rs_");
      reasoning_index = int(response["output"].size());
      return event("response.output_item.added",
                   {{"output_index", reasoning_index}, {"item", reasoning_item(reasoning_id, "", "in_progress")}});
    };
    auto reasoning_delta = [&](const std::string& delta) {
      reasoning += delta;
      return event(
          "response.reasoning_text.delta",
          {{"item_id", reasoning_id}, {"output_index", reasoning_index}, {"content_index", 0}, {"delta", delta}});
    };
    auto close_reasoning = [&] {
      if (reasoning_id.empty()) return true;
      const json done = reasoning_item(reasoning_id, reasoning, "completed");
      const bool ok = event("response.reasoning_text.done", {{"item_id", reasoning_id},
                                                             {"output_index", reasoning_index},
                                                             {"content_index", 0},
                                                             {"text", reasoning}}) &&
                      event("response.output_item.done", {{"output_index", reasoning_index}, {"item", done}});
      response["output"].push_back(done);
      reasoning_id.clear();
      reasoning.clear();
      return ok;
    };
    json item_at;
    int message_index = 0;
    bool message_open = false;
    std::string text, late_reasoning;  // the message's text so far; reasoning after it began
    auto open_message = [&] {
      if (!close_reasoning()) return false;
      message_open = true;
      message_index = int(response["output"].size());
      item_at = {{"item_id", ids.message}, {"output_index", message_index}, {"content_index", 0}};
      json part = {{"type", "output_text"}, {"text", ""}, {"annotations", json::array()}, {"logprobs", json::array()}};
      return event("response.output_item.added",
                   {{"output_index", message_index}, {"item", message_item(ids, "", "in_progress")}}) &&
             event("response.content_part.added", with(item_at, {{"part", part}}));
    };
    try {
      if (!event("response.created", {{"response", response}}) ||
          !event("response.in_progress", {{"response", response}}))
        return;
      const bool tools = !req.tools.is_null();
      ToolCallStream calls;
      const Tokenizer& tok = *lease->model().tokenizer;
      std::vector<TokenLogprob> held, all;  // logprobs not sent yet (text held back), and all sent
      const OnPiece on_piece = [&](const std::string& piece, std::vector<TokenLogprob>&& lps) {
        held.insert(held.end(), lps.begin(), lps.end());
        const std::string out = tools ? calls.push(piece) : piece;
        if (out.empty()) return true;
        if (!message_open && !open_message()) return false;
        text += out;
        const json sent = logprobs_list(tok, held);
        all.insert(all.end(), held.begin(), held.end());
        held.clear();
        return event("response.output_text.delta", with(item_at, {{"delta", out}, {"logprobs", sent}}));
      };
      const OnThinking on_thinking = [&](const std::string& thinking) {
        if (message_open) {
          late_reasoning += thinking;
          return true;
        }
        return (!reasoning_id.empty() || open_reasoning()) && reasoning_delta(thinking);
      };
      const CompletionResult r = run_completion(*lease, req, prompt, started, on_piece, on_thinking);
      if (r.cancelled) return;
      ToolCalls found = tools ? calls.finish() : ToolCalls{};
      for (const json& c : r.format_calls) found.calls.push_back(c);
      const json cut = found.calls.empty() ? cut_call_item(req, r) : json();
      if (!cut.is_null()) found.content.clear();
      text += found.content;
      if (!message_open && (!text.empty() || (found.calls.empty() && cut.is_null())) && !open_message()) return;
      if (message_open) {
        if (!found.content.empty() && !event("response.output_text.delta",
                                             with(item_at, {{"delta", found.content}, {"logprobs", json::array()}})))
          return;
        const json done = message_item(ids, text, "completed", logprobs_list(tok, all));
        if (!event("response.output_text.done",
                   with(item_at, {{"text", text}, {"logprobs", logprobs_list(tok, all)}})) ||
            !event("response.content_part.done", with(item_at, {{"part", done["content"][0]}})) ||
            !event("response.output_item.done", {{"output_index", message_index}, {"item", done}}))
          return;
        response["output"].push_back(done);
      }
      if (!late_reasoning.empty() && !(open_reasoning() && reasoning_delta(late_reasoning))) return;
      if (!close_reasoning()) return;
      std::vector<json> items;
      for (const json& call : found.calls)
        items.push_back(call_item(call, make_id("fc_"), make_id("call_"), "completed"));
      if (!cut.is_null()) items.push_back(cut);
      for (const json& item : items) {
        const int index = int(response["output"].size());
        const std::string item_id = item["id"];
        const std::string arguments = item["arguments"];
        const json at = {{"item_id", item_id}, {"output_index", index}};
        json added = item;
        added["status"] = "in_progress";
        added["arguments"] = "";
        if (!event("response.output_item.added", {{"output_index", index}, {"item", added}}) ||
            !event("response.function_call_arguments.delta", with(at, {{"delta", arguments}})) ||
            !event("response.function_call_arguments.done",
                   with(at, {{"arguments", arguments}, {"name", item["name"]}})) ||
            !event("response.output_item.done", {{"output_index", index}, {"item", item}}))
          return;
        response["output"].push_back(item);
      }
      finish(response, r);
      // Always response.completed (status "incomplete" when cut): the SDKs' stream helpers wait for it.
      event("response.completed", {{"response", response}});
    } catch (const std::exception& e) {
      event("error", {{"code", "server_error"}, {"message", e.what()}, {"param", nullptr}});
    }
  });
}

}  // namespace

void add_responses_routes(httplib::Server& http, ModelRegistry& registry) {
  add_route_with_body(http, "POST", "/v1/responses", ErrorStyle::openai,
                      [&registry](const httplib::Request& req, httplib::Response& res) {
                        const json body = parse_body(req.body);
                        respond(registry, parse_responses(body, settings_of(registry, body)), body, res);
                      });
}

}  // namespace strata::server
