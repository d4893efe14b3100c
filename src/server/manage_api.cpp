// Managing the models folder the way Ollama's API does, without a registry: /api/copy (a link),
// /api/delete, /api/create from a local GGUF (template, system and parameters go to a sidecar
// NAME.json beside NAME.gguf), /api/pull of a local path or an http(s) URL (pull_url.cpp); and /metrics.
#include <filesystem>
#include <fstream>
#include <sstream>

#include "server/api.h"
#include "server/download.h"
#include "server/errors.h"
#include "server/http_util.h"
#include "server/limits.h"
#include "server/metrics.h"
#include "server/model_settings.h"
#include "server/pull_url.h"

namespace strata::server {

namespace fs = std::filesystem;

namespace {

constexpr const char* kNdjson = "application/x-ndjson";

std::string model_name(const json& body, const char* key, const char* fallback) {
  auto v = field_string(body, key);
  if ((!v || v->empty()) && fallback) v = field_string(body, fallback);
  if (!v || v->empty()) throw bad_request(std::string(key) + " is required");
  return *v;
}

// The file a new model links to: the real file behind `path` (so copies survive the original's
// deletion only as far as the original file itself does).
std::string real_path(const std::string& path) {
  std::error_code ec;
  const fs::path p = fs::canonical(path, ec);
  if (ec) throw bad_request("cannot read \"" + path + "\": " + ec.message());
  return p.string();
}

std::string expand_home(const std::string& path) {
  if (path.rfind("~/", 0) == 0)
    if (const char* home = std::getenv("HOME")) return home + path.substr(1);
  return path;
}

// Links dest to target: a hard link where the file system allows, else a symbolic one.
void link_model(const std::string& target, const std::string& dest) {
  std::error_code ec;
  if (fs::exists(fs::symlink_status(dest))) throw HttpError(400, "model file " + dest + " already exists");
  fs::create_hard_link(target, dest, ec);
  if (!ec) return;
  fs::create_symlink(target, dest, ec);
  if (ec) throw HttpError(500, "cannot create " + dest + ": " + ec.message());
}

// One success answer: a single object, or an NDJSON stream of status lines as Ollama sends.
void send_status(httplib::Response& res, bool stream, const std::vector<std::string>& steps) {
  if (!stream) return send_json(res, {{"status", "success"}});
  std::string body;
  for (const auto& s : steps) body += dump(json{{"status", s}}) + "\n";
  body += dump(json{{"status", "success"}}) + "\n";
  res.set_content(body, kNdjson);
}

// A Modelfile's FROM, TEMPLATE, SYSTEM and PARAMETER lines ("""triple-quoted""" values may span
// lines). Other instructions are refused.
void parse_modelfile(const std::string& text, std::string& from, ModelSettings& settings) {
  size_t i = 0;
  auto read_value = [&]() {
    while (i < text.size() && (text[i] == ' ' || text[i] == '\t')) ++i;
    std::string v;
    if (text.compare(i, 3, "\"\"\"") == 0) {
      const size_t end = text.find("\"\"\"", i + 3);
      if (end == std::string::npos) throw bad_request("modelfile: unterminated \"\"\"");
      v = text.substr(i + 3, end - i - 3);
      i = end + 3;
    } else {
      const size_t end = text.find('\n', i);
      v = text.substr(i, end == std::string::npos ? std::string::npos : end - i);
      i = end == std::string::npos ? text.size() : end;
      while (!v.empty() && (v.back() == '\r' || v.back() == ' ')) v.pop_back();
      if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
    }
    return v;
  };
  while (i < text.size()) {
    while (i < text.size() && std::isspace((unsigned char)text[i])) ++i;
    if (i >= text.size()) break;
    if (text[i] == '#') {
      i = text.find('\n', i);
      if (i == std::string::npos) break;
      continue;
    }
    std::string word;
    while (i < text.size() && !std::isspace((unsigned char)text[i]))
      word += char(std::toupper((unsigned char)text[i++]));
    if (word == "FROM") {
      from = read_value();
    } else if (word == "TEMPLATE") {
      settings.template_text = read_value();
    } else if (word == "SYSTEM") {
      settings.system = read_value();
    } else if (word == "PARAMETER") {
      while (i < text.size() && (text[i] == ' ' || text[i] == '\t')) ++i;
      std::string key;
      while (i < text.size() && !std::isspace((unsigned char)text[i])) key += text[i++];
      settings.add_parameter(key, read_value());
    } else {
      throw bad_request("modelfile: " + word + " is not supported by strata serve (FROM, TEMPLATE, SYSTEM, PARAMETER)");
    }
  }
}

void handle_create(ModelRegistry& registry, const json& body, httplib::Response& res) {
  const std::string name = model_name(body, "model", "name");
  const std::string dest = registry.path_for(name);
  std::string from = field_string(body, "from").value_or("");
  ModelSettings settings;
  if (auto modelfile = field_string(body, "modelfile")) parse_modelfile(*modelfile, from, settings);
  if (auto t = field_string(body, "template")) settings.template_text = *t;
  if (settings.template_text.size() > limits::kMaxTemplateBytes)
    throw bad_request("the template is larger than " + std::to_string(limits::kMaxTemplateBytes >> 10) +
                      " KiB (the server's limit)");
  if (auto s = field_string(body, "system")) settings.system = *s;
  if (const json* params = field_object(body, "parameters"))
    for (const auto& item : params->items()) settings.parameters[item.key()] = item.value();
  if (const json* files = field_object(body, "files"); files && !files->empty())
    throw bad_request("\"files\" (uploaded blobs) are not supported by strata serve: give \"from\" a local GGUF path");
  if (from.empty()) throw bad_request("\"from\" is required: a local .gguf path or an existing model");
  std::string source;
  if (from.find('/') != std::string::npos || (from.size() > 5 && from.compare(from.size() - 5, 5, ".gguf") == 0)) {
    const auto found = registry.importable_gguf(expand_home(from));
    // Missing, forbidden or not a GGUF file: one answer, so a client learns nothing of other files.
    if (!found)
      throw bad_request("\"from\": no GGUF file at \"" + from +
                        "\" that strata serve may import (the models folder and --import-from folders)");
    source = *found;
    try {
      gguf::File::open(source);
    } catch (const std::exception& e) {
      throw bad_request("\"from\": \"" + from + "\" is not a valid GGUF file: " + e.what());
    }
  } else {
    const ModelEntry e = registry.resolve(from);
    source = real_path(e.path);
    // A model made from another keeps the other's settings unless overridden.
    ModelSettings base = load_settings(e.path);
    if (settings.template_text.empty()) settings.template_text = base.template_text;
    if (settings.system.empty()) settings.system = base.system;
    for (const auto& item : base.parameters.items())
      if (!settings.parameters.contains(item.key())) settings.parameters[item.key()] = item.value();
  }
  if (fs::equivalent(source, dest) || real_path(source) == dest)
    throw bad_request("a model cannot be created from itself");
  std::error_code ec;
  if (fs::exists(fs::symlink_status(dest))) {
    registry.unload(name);
    fs::remove(dest, ec);
  }
  link_model(source, dest);
  save_settings(dest, settings);
  send_status(res, field_bool(body, "stream").value_or(true), {"using existing layer", "writing manifest"});
}

// /api/pull's answer for a model file in place, as Ollama reports a layer it pulled: the layer's
// digest, total and completed bytes (all of it: the file is linked, not copied), then the
// verification and manifest steps. Not streaming: {"status": "success"} alone, as Ollama.
void send_pull_progress(ModelRegistry& registry, httplib::Response& res, bool stream, const std::string& name) {
  if (!stream) return send_json(res, {{"status", "success"}});
  const ModelEntry entry = registry.resolve(name);
  const std::string hex = registry.digest(entry);
  const int64_t size = int64_t(entry.size_bytes);
  std::string body = dump(json{{"status", "pulling manifest"}}) + "\n";
  body += dump(json{{"status", "pulling " + hex.substr(0, 12)},
                    {"digest", "sha256:" + hex},
                    {"total", size},
                    {"completed", size}}) +
          "\n";
  for (const char* step : {"verifying sha256 digest", "writing manifest", "success"})
    body += dump(json{{"status", step}}) + "\n";
  res.set_content(body, kNdjson);
}

}  // namespace

void add_management_routes(httplib::Server& http, ModelRegistry& registry) {
  constexpr ErrorStyle style = ErrorStyle::ollama;
  add_route_with_body(http, "POST", "/api/copy", style,
                      [&registry](const httplib::Request& req, httplib::Response& res) {
                        const json body = parse_body(req.body);
                        const ModelEntry source = registry.resolve(model_name(body, "source", nullptr));
                        const std::string dest = registry.path_for(model_name(body, "destination", nullptr));
                        if (dest == source.path) throw bad_request("source and destination are the same model");
                        link_model(real_path(source.path), dest);
                        save_settings(dest, load_settings(source.path));
                        res.status = 200;
                      });
  add_route_with_body(http, "DELETE", "/api/delete", style,
                      [&registry](const httplib::Request& req, httplib::Response& res) {
                        const json body = parse_body(req.body);
                        const std::string name = model_name(body, "model", "name");
                        const ModelEntry e = registry.resolve(name);
                        const std::string path = registry.path_for(name);
                        registry.unload(name);
                        std::error_code ec;
                        if (!fs::remove(path, ec) || ec)
                          throw HttpError(500, "cannot delete " + path + (ec ? ": " + ec.message() : ""));
                        remove_settings(path);
                        res.status = 200;
                      });
  add_route_with_body(http, "POST", "/api/create", style,
                      [&registry](const httplib::Request& req, httplib::Response& res) {
                        handle_create(registry, parse_body(req.body), res);
                      });
  add_route_with_body(
      http, "POST", "/api/pull", style, [&registry](const httplib::Request& req, httplib::Response& res) {
        const json body = parse_body(req.body);
        const std::string name = model_name(body, "model", "name");
        const bool stream = field_bool(body, "stream").value_or(true);
        if (is_download_url(name)) return pull_from_url(registry, name, stream, res);  // pull_url.cpp
        try {
          registry.resolve(name);
          return send_pull_progress(registry, res, stream, name);  // already here
        } catch (const ServerError&) {                             // not here, or a path rather than a name
        }
        // Missing, forbidden or not a GGUF file: one answer, as for a name no registry has.
        const auto found =
            name.find('/') == std::string::npos ? std::nullopt : registry.importable_gguf(expand_home(name));
        if (!found)
          throw HttpError(404, "pull model \"" + name +
                                   "\": strata serve has no registry; pass the path of a .gguf file in the "
                                   "models folder or an --import-from folder");
        const std::string stem = fs::path(name).stem().string();
        link_model(*found, registry.path_for(stem));
        send_pull_progress(registry, res, stream, stem);
      });
  http.Get("/metrics", [&registry](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics().render(registry), "text/plain; version=0.0.4; charset=utf-8");
  });
}

}  // namespace strata::server
