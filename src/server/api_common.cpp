#include "server/api_common.h"

#include <atomic>

#include "server/errors.h"
#include "server/http_util.h"

namespace strata::server {

std::string make_id(const char* prefix) {
  static std::atomic<uint64_t> counter{0};
  const uint64_t n = (uint64_t(unix_seconds(std::chrono::system_clock::now())) << 20) ^ counter.fetch_add(1);
  return prefix + std::to_string(n % 1000000000ull);
}

std::string sse_event(const std::string& type, const json& data) {
  return "event: " + type + "\ndata: " + dump(data) + "\n\n";
}

ModelSettings settings_of(const ModelRegistry& registry, const json& body) {
  const auto model = field_string(body, "model");
  return model && !model->empty() ? stored_settings(registry, *model) : ModelSettings{};
}

CompletionRequest openai_base_request(const json& body, const ModelSettings& settings) {
  CompletionRequest r;
  auto model = field_string(body, "model");
  if (!model || model->empty()) throw bad_request("model is required");
  r.model = *model;
  r.stream = field_bool(body, "stream").value_or(false);
  GenerateParams& g = r.gen;
  g.n_predict = -1;
  g.sampling.temperature = 1.0f;
  g.sampling.top_p = 1.0f;
  g.sampling.top_k = 40;
  g.sampling.min_p = 0.0f;
  g.sampling.repeat_penalty = 1.1f;
  apply_options(settings.parameters, r);
  if (auto v = field_number(body, "temperature")) g.sampling.temperature = float(*v);
  if (auto v = field_number(body, "top_p")) g.sampling.top_p = float(*v);
  return r;
}

json native_tool(const json& name, const json& description, const json& parameters) {
  if (!name.is_string() || name.get<std::string>().empty()) throw bad_request("each tool needs a \"name\"");
  json f = {{"name", name}};
  if (description.is_string()) f["description"] = description;
  f["parameters"] = parameters.is_object() ? parameters : json{{"type", "object"}, {"properties", json::object()}};
  return {{"type", "function"}, {"function", f}};
}

std::string call_text(const std::string& name, const json& arguments) {
  return dump(json{{"name", name}, {"arguments", arguments}});
}

json call_arguments(const json& arguments) {
  if (arguments.is_null()) return json::object();
  json args = arguments.is_string() ? parse_bounded(arguments.get<std::string>()) : arguments;
  if (args.is_discarded() || !args.is_object()) throw bad_request("a tool call's arguments must be a JSON object");
  return args;
}

ToolCalls answer_parts(const CompletionRequest& req, const std::string& text) {
  if (req.tools.is_null()) return ToolCalls{json::array(), text};
  return parse_tool_calls(text);
}

}  // namespace strata::server
