#pragma once
// What /api/create stores beside a model: NAME.json next to NAME.gguf, holding the Modelfile's
// template, system message and parameters ({"template", "system", "parameters": {...}}).
#include <string>

#include "server/json_fields.h"

namespace strata::server {

struct ModelSettings {
  std::string template_text;         // a Jinja chat template that replaces the GGUF's own (see PromptFormat)
  std::string system;                // the default system message
  json parameters = json::object();  // default "options" (num_ctx, temperature, stop, ...)

  // A Modelfile PARAMETER line: numbers become numbers, "stop" accumulates into an array.
  void add_parameter(const std::string& key, const std::string& value);
  bool empty() const { return template_text.empty() && system.empty() && parameters.empty(); }
};

// The settings of the model file at gguf_path; empty when it has none (or they are unreadable).
ModelSettings load_settings(const std::string& gguf_path);
// Writes them beside gguf_path (removes the sidecar for empty settings). Throws internal_error (errors.h).
void save_settings(const std::string& gguf_path, const ModelSettings& settings);
void remove_settings(const std::string& gguf_path);

}  // namespace strata::server
