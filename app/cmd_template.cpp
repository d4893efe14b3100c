// `strata template MODEL --messages FILE.json [--tools FILE.json] [--no-generation-prompt]`:
// prints the prompt the model's own chat template makes of a conversation, exactly (no newline
// added), as transformers' apply_chat_template(tokenize=False) would.
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "gguf/gguf.h"
#include "template/template.h"
#include "util/error.h"

namespace strata::app {

namespace {

nlohmann::ordered_json read_json(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(std::string("cannot open ") + what + " file " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return nlohmann::ordered_json::parse(ss.str());
  } catch (const nlohmann::ordered_json::parse_error& e) {
    throw Error(path + ": invalid JSON: " + e.what());
  }
}

}  // namespace

void add_template_command(CLI::App& app) {
  struct Options {
    std::string model, messages, tools;
    bool no_generation_prompt = false;
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("template", "Render a conversation with the model's own chat template");
  cmd->add_option("MODEL", opt->model, "GGUF file")->required();
  cmd->add_option("--messages", opt->messages, "JSON file: an array of {role, content, ...} messages")->required();
  cmd->add_option("--tools", opt->tools, "JSON file: an array of tool (function) definitions");
  cmd->add_flag("--no-generation-prompt", opt->no_generation_prompt, "Do not append the assistant turn opener");
  cmd->callback([opt] {
    auto file = gguf::File::open(opt->model);
    jinja::ModelChatTemplate t = jinja::chat_template_from_gguf(*file);
    if (t.source.empty()) throw Error(opt->model + ": the model has no chat template (tokenizer.chat_template)");
    nlohmann::ordered_json messages = read_json(opt->messages, "messages");
    if (!messages.is_array()) throw Error(opt->messages + ": expected a JSON array of messages");
    nlohmann::ordered_json tools = opt->tools.empty() ? nlohmann::ordered_json() : read_json(opt->tools, "tools");
    std::string prompt = jinja::render_chat_template(t.source, messages, tools, !opt->no_generation_prompt,
                                                     t.bos_token, t.eos_token);
    std::cout << prompt;
    std::cout.flush();
  });
}

}  // namespace strata::app
