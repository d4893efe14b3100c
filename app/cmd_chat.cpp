// strata chat MODEL: an interactive conversation, prompts rendered by the model's own Jinja chat
// template (the built-in format of its family when the file has none).
#include <cstdio>
#include <iostream>

#include "commands.h"
#include "options.h"
#include "runtime/chat_format.h"
#include "template/template.h"
#include "tokenizer/tokenizer.h"

namespace strata::app {

namespace {
struct ChatOptions {
  ModelOptions model;
  SamplingOptions sampling;
  std::string system;
};
}  // namespace

void add_chat_command(CLI::App& app) {
  auto opts = std::make_shared<ChatOptions>();
  CLI::App* cmd = app.add_subcommand("chat", "chat with a model interactively (end with Ctrl-D)");
  add_model_options(cmd, opts->model);
  opts->sampling.gen.n_predict = -1;
  add_sampling_options(cmd, opts->sampling);
  cmd->add_option("-s,--system", opts->system, "system prompt");
  cmd->callback([opts] {
    if (opts->sampling.greedy) opts->sampling.gen.sampling.temperature = 0.0f;
    auto model = Model::load(opts->model.model_path);
    auto tokenizer = Tokenizer::from_gguf(model->file());
    resolve_kv_type(*model, opts->model);
    Session session(*model, opts->model.session);
    auto tiering = make_tiering(*model, opts->model, session);
    const ChatFormat format = detect_chat_format(model->file());
    GenerateParams gen = opts->sampling.gen;
    for (const auto& s : chat_stop_strings(format)) gen.stop.push_back(s);
    const std::string bos = tokenizer->add_bos() && tokenizer->bos() >= 0 ? tokenizer->token_text(tokenizer->bos()) : "";
    std::vector<ChatMessage> messages;
    if (!opts->system.empty()) messages.push_back({"system", opts->system});
    const jinja::ModelChatTemplate own = jinja::chat_template_from_gguf(model->file());
    auto render = [&](const std::vector<ChatMessage>& msgs) {
      if (own.source.empty()) return render_chat(format, msgs, bos);
      nlohmann::ordered_json j = nlohmann::ordered_json::array();
      for (const auto& m : msgs) j.push_back({{"role", m.role}, {"content", m.content}});
      return jinja::render_chat_template(own.source, j, nullptr, true, own.bos_token, own.eos_token);
    };
    std::fprintf(stderr, "chat template: %s. Type a message; Ctrl-D ends.\n",
                 own.source.empty() ? chat_format_name(format) : "the model's own");
    std::string line;
    while (true) {
      std::fputs("> ", stdout);
      std::fflush(stdout);
      if (!std::getline(std::cin, line)) break;
      if (line.empty()) continue;
      messages.push_back({"user", line});
      const auto prompt = tokenizer->encode(render(messages), /*add_special=*/false,
                                            /*parse_special=*/true);
      GenerateResult r = generate(session, *tokenizer, prompt, gen, [](const std::string& text) {
        std::fputs(text.c_str(), stdout);
        std::fflush(stdout);
        return true;
      });
      std::fputs("\n", stdout);
      messages.push_back({"assistant", r.text});
    }
    std::fputs("\n", stdout);
  });
}

}  // namespace strata::app
