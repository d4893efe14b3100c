// Ollama's API (docs/api.md of ollama/ollama): /api/generate, /api/chat, /api/tags, /api/show,
// /api/ps, /api/version. Streams are NDJSON; errors are {"error": "..."}.
#include <cmath>
#include <cstdio>
#include <utility>

#include "server/api.h"
#include "server/completion.h"
#include "server/connection.h"
#include "server/errors.h"
#include "server/http_util.h"
#include "server/keep_alive.h"
#include "server/model_settings.h"
#include "server/prompt.h"
#include "server/thinking.h"
#include "server/tier_report.h"
#include "server/web_page.h"

namespace strata::server {

namespace {

// The Ollama API version whose request and response shapes this server follows.
constexpr const char* kApiVersion = "0.9.0";
constexpr const char* kNdjson = "application/x-ndjson";

using SysClock = std::chrono::system_clock;

// --- request parsing

// Ollama's defaults (api.DefaultOptions), which differ from the CLI's.
GenerateParams default_generate_params() {
  GenerateParams p;
  p.n_predict = -1;
  p.sampling.temperature = 0.8f;
  p.sampling.top_k = 40;
  p.sampling.top_p = 0.9f;
  p.sampling.min_p = 0.0f;
  p.sampling.repeat_penalty = 1.1f;
  p.sampling.repeat_last_n = 64;
  return p;
}

// keep_alive: a number of seconds or a Go duration ("5m", "1h30m", "0", "-1"); negative: forever.
std::optional<double> parse_keep_alive(const json& body) {
  auto it = body.find("keep_alive");
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (it->is_number()) return it->get<double>();  // the registry bounds it (kKeepAliveForeverSeconds)
  if (!it->is_string()) throw bad_request("field \"keep_alive\" must be a duration like \"5m\" or a number of seconds");
  const std::string s = it->get<std::string>();
  if (s.empty()) return std::nullopt;
  const auto seconds = parse_duration_seconds(s);  // keep_alive.h: the one parser, OLLAMA_KEEP_ALIVE's too
  if (!seconds) throw bad_request("invalid keep_alive duration \"" + s + "\"");
  return seconds;
}

std::string required_model(const json& body) {
  // Older clients send "name".
  auto model = field_string(body, "model");
  if (!model || model->empty()) model = field_string(body, "name");
  if (!model || model->empty()) throw bad_request("model is required");
  return *model;
}

void refuse_images(const json& obj) {
  const json* images = field_array(obj, "images");
  if (images && !images->empty())
    throw bad_request("this model does not support images (strata serve has no vision support)");
}

// Fields of generate and chat that ask for something this server cannot do.
// "format": "json" (any JSON object) or a JSON schema the answer must match.
void parse_format(const json& body, CompletionRequest& r) {
  auto format = body.find("format");
  if (format == body.end() || format->is_null()) return;
  if (format->is_string()) {
    const std::string f = format->get<std::string>();
    if (f.empty()) return;
    if (f != "json") throw bad_request("invalid format \"" + f + "\": use \"json\" or a JSON schema");
    set_json_format(r, nullptr);
    return;
  }
  if (!format->is_object()) throw bad_request("field \"format\" must be \"json\" or a JSON schema object");
  set_json_format(r, &*format);
}

void refuse_unsupported(const json& body) {
  if (auto t = field_string(body, "template"); t && !t->empty())
    throw bad_request("a per-request \"template\" is not supported by strata serve");
  if (auto s = field_string(body, "suffix"); s && !s->empty()) throw bad_request("this model does not support insert");
}

// The model's stored parameters are defaults that the request's options override.
CompletionRequest parse_common(const json& body, const ModelSettings& settings) {
  CompletionRequest r;
  r.model = required_model(body);
  r.gen = default_generate_params();
  r.stream = field_bool(body, "stream").value_or(true);
  r.keep_alive_s = parse_keep_alive(body);
  apply_options(settings.parameters, r);
  if (const json* options = field_object(body, "options")) apply_options(*options, r);
  refuse_unsupported(body);
  r.think = parse_think(body);  // a model that cannot think refuses true or a level (prepare_prompt)
  r.truncate = field_bool(body, "truncate").value_or(true);
  if (auto shift = field_bool(body, "shift")) r.shift = r.shift && *shift;
  parse_format(body, r);
  set_logprobs(r, field_bool(body, "logprobs").value_or(false), field_int(body, "top_logprobs"));
  return r;
}

CompletionRequest parse_generate(const json& body, const ModelSettings& settings) {
  CompletionRequest r = parse_common(body, settings);
  r.prompt = field_string(body, "prompt").value_or("");
  r.system = field_string(body, "system").value_or(settings.system);
  r.raw = field_bool(body, "raw").value_or(false);
  refuse_images(body);
  if (const json* context = field_array(body, "context"))
    for (const auto& t : *context) {
      if (!t.is_number_integer()) throw bad_request("field \"context\" must be an array of token ids");
      r.context.push_back(Token(t.get<int64_t>()));
    }
  return r;
}

CompletionRequest parse_chat(const json& body, const ModelSettings& settings) {
  CompletionRequest r = parse_common(body, settings);
  r.chat = true;
  if (const json* tools = field_array(body, "tools"); tools && !tools->empty()) r.tools = *tools;
  if (const json* messages = field_array(body, "messages"))
    for (const auto& m : *messages) {
      if (!m.is_object()) throw bad_request("each of \"messages\" must be an object");
      ChatMessage msg;
      msg.role = field_string(m, "role").value_or("");
      if (msg.role.empty()) throw bad_request("each message needs a \"role\"");
      msg.content = field_string(m, "content").value_or("");
      refuse_images(m);
      r.messages.push_back(std::move(msg));
    }
  add_default_system(settings, r.messages);
  return r;
}

// --- response building

std::string now_string() { return rfc3339(SysClock::now()); }

void add_stats(json& j, const CompletionResult& r) {
  j["done_reason"] = r.gen.done_reason;
  j["total_duration"] = to_ns(r.total_seconds);
  j["load_duration"] = to_ns(r.load_seconds);
  j["prompt_eval_count"] = r.gen.n_prompt_total;
  j["prompt_eval_duration"] = to_ns(r.gen.prompt_seconds);
  j["eval_count"] = r.gen.n_generated;
  j["eval_duration"] = to_ns(r.gen.generate_seconds);
}

json chunk(const CompletionRequest& req, const std::string& text, bool done) {
  json j = {{"model", req.model}, {"created_at", now_string()}};
  if (req.chat)
    j["message"] = {{"role", "assistant"}, {"content", text}};
  else
    j["response"] = text;
  j["done"] = done;
  return j;
}

// Ollama (>= 0.12) sends the log-probabilities of the tokens a chunk completes beside its text.
void add_logprobs(json& j, const Tokenizer& tok, const std::vector<TokenLogprob>& lps) {
  if (lps.empty()) return;
  json list = json::array();
  for (const TokenLogprob& lp : lps) list.push_back(logprob_json(tok, lp));
  j["logprobs"] = list;
}

// The model's reasoning beside its text, where Ollama puts it (message.thinking, or thinking).
void add_thinking(json& j, const CompletionRequest& req, const std::string& thinking) {
  if (thinking.empty()) return;
  if (req.chat)
    j["message"]["thinking"] = thinking;
  else
    j["thinking"] = thinking;
}

json final_chunk(const CompletionRequest& req, const std::string& text, const CompletionResult& r) {
  json j = chunk(req, text, true);
  add_stats(j, r);
  if (!req.chat) j["context"] = r.context;
  return j;
}

// An empty prompt (or no messages) only loads the model, or unloads it with keep_alive 0.
void load_only(ModelRegistry& registry, const CompletionRequest& req, httplib::Response& res) {
  std::string reason = "load";
  if (req.keep_alive_s && *req.keep_alive_s == 0) {
    registry.resolve(req.model);  // 404 for an unknown model
    registry.unload(req.model);
    reason = "unload";
  } else {
    registry.lease(req.model, req.keep_alive_s, req.n_ctx);  // options.num_ctx loads it for that context
  }
  json j = chunk(req, "", true);
  j["done_reason"] = reason;
  send_json(res, j);
}

void complete(ModelRegistry& registry, const CompletionRequest& req, httplib::Response& res,
              Clock::time_point started) {
  // With the context, so that one too large for the budget is a 500 before anything streams.
  const auto lease = registry.lease(req.model, req.keep_alive_s, req.n_ctx);
  const PreparedPrompt prompt = prepare_prompt(lease->model(), req);
  const bool tools = !req.tools.is_null();
  if (!req.stream) {
    // Nobody streams the answer, so each token asks whether the client is still there.
    const CompletionResult r =
        run_completion(*lease, req, prompt, started, [](const std::string&) { return client_connected(); });
    if (r.cancelled) {
      connection_close_after_response();
      return send_error(res, ErrorStyle::ollama, 503, "the client went away; the generation was stopped");
    }
    json last = final_chunk(req, r.gen.text, r);
    add_logprobs(last, *lease->model().tokenizer, r.gen.logprobs);
    add_thinking(last, req, r.thinking);
    ToolCalls calls = tools ? parse_tool_calls(r.gen.text) : ToolCalls{json::array(), r.gen.text};
    for (const json& c : r.format_calls) calls.calls.push_back(c);
    if (req.chat) {
      last["message"]["content"] = calls.content;
      if (!calls.calls.empty()) last["message"]["tool_calls"] = calls.calls;
    }
    return send_json(res, last);
  }
  // With tools, content streams as it comes and the calls arrive in one chunk before the last.
  send_stream(res, kNdjson, [lease, req, prompt, started, tools](const Emit& emit) {
    try {
      ToolCallStream calls;
      std::vector<TokenLogprob> held;  // logprobs of text the tool-call filter holds back
      const OnPiece on_piece = [&](const std::string& text, std::vector<TokenLogprob>&& lps) {
        held.insert(held.end(), lps.begin(), lps.end());
        const std::string out = tools ? calls.push(text) : text;
        if (tools && out.empty()) return true;
        json j = chunk(req, out, false);
        add_logprobs(j, *lease->model().tokenizer, std::exchange(held, {}));
        return emit(dump(j) + "\n");
      };
      const OnThinking on_thinking = [&](const std::string& thinking) {
        json j = chunk(req, "", false);
        add_thinking(j, req, thinking);
        return emit(dump(j) + "\n");
      };
      const CompletionResult r = run_completion(*lease, req, prompt, started, on_piece, on_thinking);
      if (r.cancelled) return;
      if (tools || !r.format_calls.empty()) {
        ToolCalls found = tools ? calls.finish() : ToolCalls{};
        for (const json& c : r.format_calls) found.calls.push_back(c);
        if (!found.content.empty() || !found.calls.empty()) {
          json j = chunk(req, found.content, false);
          if (!found.calls.empty()) j["message"]["tool_calls"] = found.calls;
          if (!emit(dump(j) + "\n")) return;
        }
      }
      emit(dump(final_chunk(req, "", r)) + "\n");
    } catch (const std::exception& e) {
      emit(error_body(ErrorStyle::ollama, 500, e.what()) + "\n");
    }
  });
}

// --- model descriptions

std::string file_type_name(int64_t t) {
  // llama.cpp's llama_ftype, which general.file_type stores.
  static const std::map<int64_t, const char*> names = {
      {0, "F32"},     {1, "F16"},     {2, "Q4_0"},     {3, "Q4_1"},    {7, "Q8_0"},    {8, "Q5_0"},    {9, "Q5_1"},
      {10, "Q2_K"},   {11, "Q3_K_S"}, {12, "Q3_K_M"},  {13, "Q3_K_L"}, {14, "Q4_K_S"}, {15, "Q4_K_M"}, {16, "Q5_K_S"},
      {17, "Q5_K_M"}, {18, "Q6_K"},   {19, "IQ2_XXS"}, {20, "IQ2_XS"}, {21, "Q2_K_S"}, {22, "IQ3_XS"}, {23, "IQ3_XXS"},
      {24, "IQ1_S"},  {25, "IQ4_NL"}, {26, "IQ3_S"},   {27, "IQ3_M"},  {28, "IQ2_S"},  {29, "IQ2_M"},  {30, "IQ4_XS"},
      {31, "IQ1_M"},  {32, "BF16"},   {36, "TQ1_0"},   {37, "TQ2_0"}};
  auto it = names.find(t);
  return it == names.end() ? "unknown" : it->second;
}

uint64_t parameter_count(const gguf::File& f) {
  uint64_t n = 0;
  for (const auto& t : f.tensors()) n += uint64_t(t.n_elements);
  return n;
}

// Ollama's format.HumanNumber: 134.52M, 8.0B.
std::string human_number(uint64_t n) {
  char buf[32];
  auto fmt = [&](double v, const char* unit, const char* frac) {
    std::snprintf(buf, sizeof buf, v == std::floor(v) ? "%.0f%s" : frac, v, unit);
  };
  if (n >= 1000000000)
    fmt(double(n) / 1e9, "B", "%.1f%s");
  else if (n >= 1000000)
    fmt(double(n) / 1e6, "M", "%.2f%s");
  else if (n >= 1000)
    fmt(double(n) / 1e3, "K", "%.0f%s");
  else
    std::snprintf(buf, sizeof buf, "%llu", (unsigned long long)n);
  return buf;
}

json details(const gguf::File& f) {
  const std::string arch = f.architecture();
  const gguf::Value* ft = f.find("general.file_type");
  return {{"parent_model", ""},
          {"format", "gguf"},
          {"family", arch},
          {"families", json::array({arch})},
          {"parameter_size", human_number(parameter_count(f))},
          {"quantization_level", ft && ft->is_integer() ? file_type_name(ft->as_int()) : "unknown"}};
}

json metadata_value(const gguf::Value& v, bool verbose) {
  using VT = gguf::ValueType;
  switch (v.type) {
    case VT::BOOL:
      return v.as_bool();
    case VT::STRING:
      return v.as_string();
    case VT::FLOAT32:
    case VT::FLOAT64:
      return v.as_float();
    case VT::ARRAY: {
      const auto& a = v.as_array();
      if (!verbose && a.items.size() > 64) return nullptr;  // token tables: only with "verbose"
      json out = json::array();
      for (const auto& item : a.items) out.push_back(metadata_value(item, verbose));
      return out;
    }
    default:
      if (v.type == VT::INT8 || v.type == VT::INT16 || v.type == VT::INT32 || v.type == VT::INT64) return v.as_int();
      return v.as_uint();
  }
}

json model_info(const gguf::File& f, bool verbose) {
  json info = json::object();
  for (const auto& [key, value] : f.metadata())
    if (key != "tokenizer.chat_template") info[key] = metadata_value(value, verbose);
  info["general.parameter_count"] = parameter_count(f);
  return info;
}

std::string quoted(const std::string& s) { return dump(json(s)); }

json tag_entry(ModelRegistry& registry, const ModelEntry& e) {
  json j = {{"name", e.name + (e.name.find(':') == std::string::npos ? ":latest" : "")},
            {"modified_at", rfc3339(SysClock::from_time_t(std::time_t(e.modified_unix)))},
            {"size", e.size_bytes},
            {"digest", ""}};
  j["model"] = j["name"];
  try {
    j["digest"] = registry.digest(e);
    j["details"] = details(*registry.metadata(e));
  } catch (const std::exception&) {
    j["details"] = {{"format", "gguf"}};  // unreadable file: still listed, loading it will say why
  }
  return j;
}

// --- handlers

void handle_show(ModelRegistry& registry, const httplib::Request& http_req, httplib::Response& res) {
  const json body = parse_body(http_req.body);
  const std::string name = required_model(body);
  const bool verbose = field_bool(body, "verbose").value_or(false);
  const ModelEntry e = registry.resolve(name);
  const auto file = registry.metadata(e);
  const ModelSettings settings = load_settings(e.path);
  const std::string tmpl =
      settings.template_text.empty() ? file->get_string("tokenizer.chat_template", "") : settings.template_text;
  const ChatFormat format = detect_chat_format(*file);
  std::string parameters;
  for (const auto& s : chat_stop_strings(format)) parameters += "stop " + quoted(s) + "\n";
  std::string settings_lines;  // the stored parameters, one "name value" line per value
  for (const auto& item : settings.parameters.items())
    for (const auto& v : item.value().is_array() ? item.value() : json::array({item.value()}))
      settings_lines += item.key() + " " + (v.is_string() ? quoted(v.get<std::string>()) : dump(v)) + "\n";
  parameters += settings_lines;
  // As `ollama show --modelfile` writes it: FROM, TEMPLATE, SYSTEM, then a PARAMETER line per value.
  std::string modelfile = "# Modelfile generated by strata serve\nFROM " + e.path + "\n";
  if (!tmpl.empty()) modelfile += "TEMPLATE \"\"\"" + tmpl + "\"\"\"\n";
  if (!settings.system.empty()) modelfile += "SYSTEM \"\"\"" + settings.system + "\"\"\"\n";
  for (const auto& s : chat_stop_strings(format)) modelfile += "PARAMETER stop " + quoted(s) + "\n";
  for (size_t at = 0, end; at < settings_lines.size(); at = end + 1) {
    end = settings_lines.find('\n', at);
    modelfile += "PARAMETER " + settings_lines.substr(at, end - at) + "\n";
  }
  json capabilities = json::array({"completion"});
  if (tmpl.find("tools") != std::string::npos) capabilities.push_back("tools");
  if (template_can_think(tmpl) || format == ChatFormat::harmony) capabilities.push_back("thinking");
  json j = {{"modelfile", modelfile},
            {"parameters", parameters},
            {"template", tmpl},
            {"details", details(*file)},
            {"model_info", model_info(*file, verbose)},
            {"capabilities", capabilities},
            {"modified_at", rfc3339(SysClock::from_time_t(std::time_t(e.modified_unix)))}};
  if (!settings.system.empty()) j["system"] = settings.system;
  const std::string license = file->get_string("general.license", "");
  if (!license.empty()) j["license"] = license;
  send_json(res, j);
}

void handle_ps(ModelRegistry& registry, httplib::Response& res) {
  json models = json::array();
  for (const LoadedInfo& m : registry.loaded()) {
    ModelEntry e{m.name, m.path, 0, 0};
    std::shared_ptr<const gguf::File> file;
    std::string digest;
    try {
      e = registry.resolve(m.name);
      digest = registry.digest(e);
      file = registry.metadata(e);
    } catch (const std::exception&) {
      // the file changed or went away since it was loaded; describe what is in memory
    }
    // "Forever" is shown far in the future, as Ollama does (system_clock ends in 2262).
    const auto expires = m.expires_at.value_or(SysClock::now() + std::chrono::hours(24 * 365 * 100));
    json j = {{"name", m.name + ":latest"},
              {"model", m.name + ":latest"},
              {"size", m.size_bytes},
              {"digest", digest},
              {"details", file ? details(*file) : json{{"format", "gguf"}}},
              {"expires_at", rfc3339(expires)},
              {"size_vram", m.vram_bytes},
              {"context_length", m.n_ctx},
              {"strata", tier_json(m.tier)}};  // tiered weights; Ollama clients ignore the field
    models.push_back(j);
  }
  send_json(res, {{"models", models}});
}

}  // namespace

void add_ollama_routes(httplib::Server& http, ModelRegistry& registry) {
  constexpr ErrorStyle style = ErrorStyle::ollama;
  http.Get("/", guarded(style, answer_root));  // web_page.cpp: the chat page, or "Ollama is running"
  http.Get("/api/version", guarded(style, [](const httplib::Request&, httplib::Response& res) {
             send_json(res, {{"version", kApiVersion}});
           }));
  http.Get("/api/tags", guarded(style, [&registry](const httplib::Request&, httplib::Response& res) {
             json models = json::array();
             for (const ModelEntry& e : registry.list()) models.push_back(tag_entry(registry, e));
             send_json(res, {{"models", models}});
           }));
  add_route_with_body(
      http, "POST", "/api/show", style,
      [&registry](const httplib::Request& req, httplib::Response& res) { handle_show(registry, req, res); });
  http.Get("/api/ps",
           guarded(style, [&registry](const httplib::Request&, httplib::Response& res) { handle_ps(registry, res); }));
  add_route_with_body(
      http, "POST", "/api/generate", style, [&registry](const httplib::Request& req, httplib::Response& res) {
        const auto started = Clock::now();
        const json body = parse_body(req.body);
        const CompletionRequest r = parse_generate(body, stored_settings(registry, required_model(body)));
        if (r.prompt.empty() && r.context.empty()) return load_only(registry, r, res);
        complete(registry, r, res, started);
      });
  add_route_with_body(http, "POST", "/api/chat", style,
                      [&registry](const httplib::Request& req, httplib::Response& res) {
                        const auto started = Clock::now();
                        const json body = parse_body(req.body);
                        const CompletionRequest r = parse_chat(body, stored_settings(registry, required_model(body)));
                        if (r.messages.empty()) return load_only(registry, r, res);
                        complete(registry, r, res, started);
                      });
  for (const char* path : {"/api/push", R"(/api/blobs/.+)"})
    add_route_with_body(http, "POST", path, style, [](const httplib::Request& req, httplib::Response&) {
      throw HttpError(501, req.path + " is not supported by strata serve: there is no registry to push to");
    });
}

}  // namespace strata::server
