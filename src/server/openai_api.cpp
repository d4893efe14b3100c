// OpenAI's API as Ollama serves it (docs/openai.md of ollama/ollama): /v1/chat/completions,
// /v1/completions, /v1/models. Streams are server-sent events ending with "data: [DONE]"; errors
// are {"error": {"message", "type", "param", "code"}}.
#include "server/api.h"
#include "server/api_common.h"
#include "server/completion.h"
#include "server/connection.h"
#include "server/errors.h"
#include "server/http_util.h"
#include "server/limits.h"
#include "server/thinking.h"

namespace strata::server {

namespace {

using SysClock = std::chrono::system_clock;

// tool_choice: "none", "auto", "required", or {"type": "function", "function": {"name"}}.
void parse_tool_choice(const json& body, CompletionRequest& r) {
  auto it = body.find("tool_choice");
  if (it == body.end() || it->is_null()) return;
  if (it->is_string()) {
    const std::string choice = it->get<std::string>();
    if (choice == "none") return set_tool_choice(r, ToolChoice::none);
    if (choice == "auto") return;
    if (choice == "required") return set_tool_choice(r, ToolChoice::required);
    throw bad_request("tool_choice must be \"none\", \"auto\", \"required\" or an object naming a function");
  }
  if (!it->is_object()) throw bad_request("tool_choice must be a string or an object naming a function");
  const json* function = field_object(*it, "function");
  const std::string name = function ? field_string(*function, "name").value_or("") : "";
  if (name.empty()) throw bad_request("tool_choice as an object needs function.name");
  set_tool_choice(r, ToolChoice::named, name);
}

CompletionRequest parse_common(const json& body, const ModelSettings& settings) {
  CompletionRequest r = openai_base_request(body, settings);
  GenerateParams& g = r.gen;
  // A negative limit means none, as Ollama's OpenAI layer passes it on as num_predict.
  auto max_tokens = field_int(body, "max_completion_tokens");
  if (!max_tokens) max_tokens = field_int(body, "max_tokens");
  if (max_tokens) g.n_predict = *max_tokens < 0 ? -1 : int(std::min<int64_t>(*max_tokens, limits::kMaxPredictTokens));
  if (auto v = field_number(body, "presence_penalty")) g.sampling.presence_penalty = float(*v);
  if (auto v = field_number(body, "frequency_penalty")) g.sampling.frequency_penalty = float(*v);
  if (auto v = field_int(body, "seed")) g.sampling.seed = *v < 0 ? 0xFFFFFFFFu : uint64_t(*v);
  if (auto v = field_strings(body, "stop")) g.stop = *v;
  if (auto n = field_int(body, "n"); n && *n != 1) throw bad_request("only n = 1 is supported");
  if (const json* tools = field_array(body, "tools"); tools && !tools->empty()) r.tools = *tools;
  if (const json* bias = field_object(body, "logit_bias"); bias && !bias->empty())
    throw bad_request("\"logit_bias\" is not supported by strata serve");
  if (const json* format = field_object(body, "response_format")) {
    const std::string type = field_string(*format, "type").value_or("text");
    if (type == "json_object") {
      set_json_format(r, nullptr);
    } else if (type == "json_schema") {
      const json* spec = field_object(*format, "json_schema");
      const json* schema = spec ? field_object(*spec, "schema") : nullptr;
      if (!schema) throw bad_request("response_format json_schema needs json_schema.schema");
      set_json_format(r, schema);
    } else if (type != "text") {
      throw bad_request("response_format type must be text, json_object or json_schema");
    }
  }
  parse_tool_choice(body, r);
  return r;
}

// Message content: a string, or an array of parts of which only text is supported.
std::string message_content(const json& m) {
  auto it = m.find("content");
  if (it == m.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (!it->is_array()) throw bad_request("message content must be a string or an array of content parts");
  std::string text;
  for (const auto& part : *it) {
    if (!part.is_object()) throw bad_request("each content part must be an object");
    const std::string type = field_string(part, "type").value_or("");
    if (type != "text") throw bad_request("content parts of type \"" + type + "\" are not supported (text only)");
    text += field_string(part, "text").value_or("");
  }
  return text;
}

CompletionRequest parse_chat(const json& body, const ModelSettings& settings) {
  CompletionRequest r = parse_common(body, settings);
  r.chat = true;
  set_logprobs(r, field_bool(body, "logprobs").value_or(false), field_int(body, "top_logprobs"));
  // As Ollama's OpenAI layer: reasoning.effort, else reasoning_effort, is the think level.
  const json* reasoning = field_object(body, "reasoning");
  if (reasoning && reasoning->contains("effort"))
    r.think = parse_think(json{{"think", (*reasoning)["effort"]}});
  else if (body.contains("reasoning_effort"))
    r.think = parse_think(json{{"think", body["reasoning_effort"]}});
  const json* messages = field_array(body, "messages");
  if (!messages || messages->empty()) throw bad_request("messages is required");
  for (const auto& m : *messages) {
    if (!m.is_object()) throw bad_request("each of \"messages\" must be an object");
    ChatMessage msg{field_string(m, "role").value_or(""), message_content(m)};
    if (msg.role.empty()) throw bad_request("each message needs a \"role\"");
    if (msg.role == "developer") msg.role = "system";
    // The assistant's earlier calls stay in the conversation as the JSON calls it wrote.
    if (const json* calls = field_array(m, "tool_calls"))
      for (const json& call : *calls) {
        const json* f = call.is_object() ? field_object(call, "function") : nullptr;
        if (!f) throw bad_request("each of \"tool_calls\" needs a \"function\"");
        const std::string name = field_string(*f, "name").value_or("");
        const json args = call_arguments(f->contains("arguments") ? (*f)["arguments"] : json(nullptr));
        msg.content += (msg.content.empty() ? "" : "\n") + call_text(name, args);
      }
    r.messages.push_back(std::move(msg));
  }
  add_default_system(settings, r.messages);
  return r;
}

CompletionRequest parse_completion(const json& body, const ModelSettings& settings) {
  CompletionRequest r = parse_common(body, settings);
  if (!r.tools.is_null()) throw bad_request("tools are only supported on /v1/chat/completions");
  r.raw = true;                                                        // /v1/completions continues the text as given
  r.think = false;  // and returns it as the model wrote it: its "text" has no place for reasoning split out
  if (auto n = field_int(body, "logprobs")) set_logprobs(r, true, n);  // legacy: the number of alternatives
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null()) throw bad_request("prompt is required");
  if (it->is_string())
    r.prompt = it->get<std::string>();
  else if (it->is_array() && it->size() == 1 && (*it)[0].is_string())
    r.prompt = (*it)[0].get<std::string>();
  else
    throw bad_request("prompt must be a string (batches of prompts are not supported)");
  if (r.prompt.empty()) throw bad_request("prompt is empty");
  if (auto s = field_string(body, "suffix"); s && !s->empty()) throw bad_request("this model does not support insert");
  return r;
}

json usage(const CompletionResult& r) {
  return {{"prompt_tokens", r.gen.n_prompt_total},
          {"completion_tokens", r.gen.n_generated},
          {"total_tokens", r.gen.n_prompt_total + r.gen.n_generated}};
}

const char* finish_reason(const CompletionResult& r) { return r.gen.done_reason == "length" ? "length" : "stop"; }

// The envelope every response and chunk shares.
json envelope(const std::string& id, const char* object, const std::string& model, int64_t created) {
  return {{"id", id}, {"object", object}, {"created", created}, {"model", model}, {"system_fingerprint", "fp_strata"}};
}

// A choice's "logprobs": chat {"content": [...]}, legacy completions {"tokens", "token_logprobs",
// "top_logprobs", "text_offset"} (offsets from `offset`, where this piece starts in the answer);
// null when the request did not ask for them.
json logprobs_field(const Tokenizer& tok, const CompletionRequest& req, const std::vector<TokenLogprob>& lps,
                    size_t offset) {
  if (req.gen.n_top_logprobs < 0) return nullptr;
  if (req.chat) {
    json content = json::array();
    for (const TokenLogprob& lp : lps) content.push_back(logprob_json(tok, lp));
    return {{"content", content}};
  }
  json tokens = json::array(), values = json::array(), tops = json::array(), offsets = json::array();
  for (const TokenLogprob& lp : lps) {
    const std::string piece = tok.token_to_piece(lp.token, /*special=*/false);
    tokens.push_back(piece);
    values.push_back(lp.logprob);
    json top = json::object();
    for (const auto& [id, logprob] : lp.top) top[tok.token_to_piece(id, false)] = logprob;
    tops.push_back(top);
    offsets.push_back(offset);
    offset += piece.size();
  }
  return {{"tokens", tokens}, {"token_logprobs", values}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

json choice_delta(const CompletionRequest& req, const std::string& text, const char* finish, json logprobs = nullptr) {
  json c = {{"index", 0}, {"finish_reason", finish ? json(finish) : json(nullptr)}};
  if (req.chat)
    c["delta"] = finish ? json::object() : json{{"role", "assistant"}, {"content", text}};
  else
    c["text"] = text;
  c["logprobs"] = std::move(logprobs);
  return c;
}

// OpenAI's tool_calls: arguments as a JSON string, each call with an id and its index.
json openai_tool_calls(const json& calls) {
  json list = json::array();
  for (size_t i = 0; i < calls.size(); ++i) {
    const json& f = calls[i]["function"];
    list.push_back({{"index", i},
                    {"id", make_id("call_")},
                    {"type", "function"},
                    {"function", {{"name", f["name"]}, {"arguments", dump(f["arguments"])}}}});
  }
  return list;
}

// A forced call cut off by max_tokens, as OpenAI returns it: the call with the arguments' text so
// far (finish reason "length").
json openai_partial_call(const PartialCall& call) {
  return json::array({{{"index", 0},
                       {"id", make_id("call_")},
                       {"type", "function"},
                       {"function", {{"name", call.name}, {"arguments", call.arguments}}}}});
}

void complete(ModelRegistry& registry, const CompletionRequest& req, bool include_usage, httplib::Response& res) {
  const auto started = Clock::now();
  const auto lease = registry.lease(req.model, std::nullopt);
  const PreparedPrompt prompt = prepare_prompt(lease->model(), req);
  const std::string id = make_id(req.chat ? "chatcmpl-" : "cmpl-");
  const int64_t created = unix_seconds(SysClock::now());
  const char* object = req.chat ? "chat.completion.chunk" : "text_completion";
  const bool tools = !req.tools.is_null();
  if (!req.stream) {
    // Nobody streams the answer, so each token asks whether the client is still there.
    const CompletionResult r =
        run_completion(*lease, req, prompt, started, [](const std::string&) { return client_connected(); });
    if (r.cancelled) {
      connection_close_after_response();
      return send_error(res, ErrorStyle::openai, 503, "the client went away; the generation was stopped");
    }
    json choice = {{"index", 0}, {"finish_reason", finish_reason(r)}};
    json message = {{"role", "assistant"}, {"content", r.gen.text}};
    if (!r.thinking.empty()) message["reasoning"] = r.thinking;  // where Ollama's OpenAI layer puts it
    if (tools || !r.format_calls.empty()) {
      ToolCalls calls = tools ? parse_tool_calls(r.gen.text) : ToolCalls{json::array(), r.gen.text};
      for (const json& c : r.format_calls) calls.calls.push_back(c);
      message["content"] = calls.content;
      if (!calls.calls.empty()) {
        message["tool_calls"] = openai_tool_calls(calls.calls);
        choice["finish_reason"] = "tool_calls";
      } else if (const auto cut = req.forced_tool_call && r.gen.done_reason == "length"
                                      ? partial_forced_call(r.gen.text)
                                      : std::nullopt) {
        message["content"] = "";
        message["tool_calls"] = openai_partial_call(*cut);
      }
    }
    json j = envelope(id, req.chat ? "chat.completion" : "text_completion", req.model, created);
    if (req.chat)
      choice["message"] = message;
    else
      choice["text"] = r.gen.text;
    choice["logprobs"] = logprobs_field(*lease->model().tokenizer, req, r.gen.logprobs, 0);
    j["choices"] = json::array({choice});
    j["usage"] = usage(r);
    send_json(res, j);
    return;
  }
  // With tools, content streams as it comes and the calls arrive in one delta before the last.
  send_stream(res, kEventStream, [=](const Emit& emit) {
    auto event = [&](const json& j) { return emit("data: " + dump(j) + "\n\n"); };
    try {
      ToolCallStream calls;
      const Tokenizer& tok = *lease->model().tokenizer;
      std::vector<TokenLogprob> held;  // logprobs of text the tool-call filter holds back
      size_t offset = 0;
      const OnPiece on_piece = [&](const std::string& text, std::vector<TokenLogprob>&& lps) {
        held.insert(held.end(), lps.begin(), lps.end());
        const std::string out = tools ? calls.push(text) : text;
        if (tools && out.empty()) return true;
        json j = envelope(id, object, req.model, created);
        j["choices"] = json::array({choice_delta(req, out, nullptr, logprobs_field(tok, req, held, offset))});
        held.clear();
        offset += out.size();
        return event(j);
      };
      const OnThinking on_thinking = [&](const std::string& thinking) {
        if (!req.chat) return true;  // a completion's text has no place for it
        json j = envelope(id, object, req.model, created);
        json c = choice_delta(req, "", nullptr);
        c["delta"]["reasoning"] = thinking;
        j["choices"] = json::array({c});
        return event(j);
      };
      const CompletionResult r = run_completion(*lease, req, prompt, started, on_piece, on_thinking);
      if (r.cancelled) return;
      const char* finish = finish_reason(r);
      if (tools || !r.format_calls.empty()) {
        ToolCalls found = tools ? calls.finish() : ToolCalls{};
        for (const json& c : r.format_calls) found.calls.push_back(c);
        const auto cut = found.calls.empty() && req.forced_tool_call && r.gen.done_reason == "length"
                             ? partial_forced_call(r.gen.text)
                             : std::nullopt;
        if (cut) found.content.clear();
        if (!found.content.empty() || !found.calls.empty() || cut) {
          json j = envelope(id, object, req.model, created);
          json delta = {{"role", "assistant"}, {"content", found.content}};
          if (!found.calls.empty()) {
            delta["tool_calls"] = openai_tool_calls(found.calls);
            finish = "tool_calls";
          } else if (cut) {
            delta["tool_calls"] = openai_partial_call(*cut);
          }
          // The held-back text's tokens (the calls' included) have their logprobs here.
          j["choices"] = json::array({{{"index", 0},
                                       {"delta", delta},
                                       {"logprobs", logprobs_field(tok, req, held, offset)},
                                       {"finish_reason", nullptr}}});
          held.clear();
          if (!event(j)) return;
        }
      }
      json last = envelope(id, object, req.model, created);
      last["choices"] = json::array({choice_delta(req, "", finish)});
      event(last);
      if (include_usage) {
        json u = envelope(id, object, req.model, created);
        u["choices"] = json::array();
        u["usage"] = usage(r);
        event(u);
      }
      emit("data: [DONE]\n\n");
    } catch (const std::exception& e) {
      emit("data: " + error_body(ErrorStyle::openai, 500, e.what()) + "\n\n");
    }
  });
}

bool include_usage(const json& body) {
  const json* opts = field_object(body, "stream_options");
  return opts && field_bool(*opts, "include_usage").value_or(false);
}

json model_object(const ModelEntry& e) {
  return {{"id", e.name + (e.name.find(':') == std::string::npos ? ":latest" : "")},
          {"object", "model"},
          {"created", e.modified_unix},
          {"owned_by", "library"}};
}

}  // namespace

void add_openai_routes(httplib::Server& http, ModelRegistry& registry) {
  constexpr ErrorStyle style = ErrorStyle::openai;
  add_route_with_body(http, "POST", "/v1/chat/completions", style,
                      [&registry](const httplib::Request& req, httplib::Response& res) {
                        const json body = parse_body(req.body);
                        complete(registry, parse_chat(body, settings_of(registry, body)), include_usage(body), res);
                      });
  add_route_with_body(
      http, "POST", "/v1/completions", style, [&registry](const httplib::Request& req, httplib::Response& res) {
        const json body = parse_body(req.body);
        complete(registry, parse_completion(body, settings_of(registry, body)), include_usage(body), res);
      });
  http.Get("/v1/models", guarded(style, [&registry](const httplib::Request&, httplib::Response& res) {
             json data = json::array();
             for (const ModelEntry& e : registry.list()) data.push_back(model_object(e));
             send_json(res, {{"object", "list"}, {"data", data}});
           }));
  http.Get(R"(/v1/models/(.+))", guarded(style, [&registry](const httplib::Request& req, httplib::Response& res) {
             send_json(res, model_object(registry.resolve(req.matches[1].str())));
           }));
}

}  // namespace strata::server
