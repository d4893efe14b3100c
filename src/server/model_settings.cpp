#include "server/model_settings.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>

#include "server/errors.h"

namespace strata::server {

namespace {
std::string sidecar_path(const std::string& gguf_path) {
  return std::filesystem::path(gguf_path).replace_extension(".json").string();
}
}  // namespace

void ModelSettings::add_parameter(const std::string& key, const std::string& value) {
  if (key.empty()) throw bad_request("modelfile: PARAMETER needs a name and a value");
  if (key == "stop") {
    if (!parameters.contains("stop")) parameters["stop"] = json::array();
    parameters["stop"].push_back(value);
    return;
  }
  if (value == "true" || value == "false") {
    parameters[key] = value == "true";
    return;
  }
  char* end = nullptr;
  const double d = std::strtod(value.c_str(), &end);
  if (!value.empty() && end && *end == '\0') {
    if (d == double(int64_t(d)) && value.find_first_of(".eE") == std::string::npos)
      parameters[key] = int64_t(d);
    else
      parameters[key] = d;
  } else {
    parameters[key] = value;
  }
}

ModelSettings load_settings(const std::string& gguf_path) {
  ModelSettings s;
  std::ifstream in(sidecar_path(gguf_path));
  if (!in) return s;
  try {
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const json j = parse_bounded(text);
    if (!j.is_object()) throw std::runtime_error("not a JSON object (or nested too deep)");
    s.template_text = j.value("template", "");
    s.system = j.value("system", "");
    if (j.contains("parameters") && j["parameters"].is_object()) s.parameters = j["parameters"];
  } catch (const std::exception& e) {
    std::fprintf(stderr, "strata serve: ignoring %s: %s\n", sidecar_path(gguf_path).c_str(), e.what());
  }
  return s;
}

void save_settings(const std::string& gguf_path, const ModelSettings& settings) {
  const std::string path = sidecar_path(gguf_path);
  if (settings.empty()) return remove_settings(gguf_path);
  std::ofstream out(path, std::ios::trunc);
  out << dump(json{
             {"template", settings.template_text}, {"system", settings.system}, {"parameters", settings.parameters}})
      << "\n";
  if (!out) throw internal_error("cannot write " + path);
}

void remove_settings(const std::string& gguf_path) {
  std::error_code ec;
  std::filesystem::remove(sidecar_path(gguf_path), ec);
}

}  // namespace strata::server
