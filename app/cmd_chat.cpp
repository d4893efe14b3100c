// strata chat MODEL: an interactive conversation in the model's chat format.
#include <cstdio>
#include <iostream>

#include "commands.h"
#include "options.h"
#include "runtime/chat_format.h"
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
    Session session(*model, opts->model.session);
    const ChatFormat format = detect_chat_format(model->file());
    GenerateParams gen = opts->sampling.gen;
    for (const auto& s : chat_stop_strings(format)) gen.stop.push_back(s);
    const std::string bos = tokenizer->add_bos() && tokenizer->bos() >= 0 ? tokenizer->token_text(tokenizer->bos()) : "";
    std::vector<ChatMessage> messages;
    if (!opts->system.empty()) messages.push_back({"system", opts->system});
    std::fprintf(stderr, "chat format: %s. Type a message; Ctrl-D ends.\n", chat_format_name(format));
    std::string line;
    while (true) {
      std::fputs("> ", stdout);
      std::fflush(stdout);
      if (!std::getline(std::cin, line)) break;
      if (line.empty()) continue;
      messages.push_back({"user", line});
      const auto prompt = tokenizer->encode(render_chat(format, messages, bos), /*add_special=*/false,
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
