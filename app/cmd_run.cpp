// strata run MODEL -p PROMPT: stream a completion and report prompt and generation speed.
#include <cstdio>
#include <iostream>

#include "commands.h"
#include "options.h"
#include "tokenizer/tokenizer.h"

namespace strata::app {

namespace {
struct RunOptions {
  ModelOptions model;
  SamplingOptions sampling;
  std::string prompt;
  bool no_special = false;
  bool raw_prompt_tokens = false;
};
}  // namespace

void add_run_command(CLI::App& app) {
  auto opts = std::make_shared<RunOptions>();
  CLI::App* cmd = app.add_subcommand("run", "generate text from a prompt");
  add_model_options(cmd, opts->model);
  add_sampling_options(cmd, opts->sampling);
  cmd->add_option("-p,--prompt", opts->prompt, "prompt text")->required();
  cmd->add_flag("--no-special", opts->no_special, "do not add BOS/EOS tokens");
  cmd->callback([opts] {
    if (opts->sampling.greedy) opts->sampling.gen.sampling.temperature = 0.0f;
    auto model = Model::load(opts->model.model_path);
    auto tokenizer = Tokenizer::from_gguf(model->file());
    Session session(*model, opts->model.session);
    auto streamer = make_ffn_streamer(*model, opts->model);
    session.set_ffn_source(streamer.get());
    const auto prompt = tokenizer->encode(opts->prompt, !opts->no_special, /*parse_special=*/true);
    std::fputs(opts->prompt.c_str(), stdout);
    std::fflush(stdout);
    GenerateResult r = generate(session, *tokenizer, prompt, opts->sampling.gen, [](const std::string& text) {
      std::fputs(text.c_str(), stdout);
      std::fflush(stdout);
      return true;
    });
    std::fputs("\n", stdout);
    std::fflush(stdout);
    std::fprintf(stderr, "\nprompt: %d tokens in %.3f s (%.2f tok/s)\n", r.n_prompt, r.prompt_seconds,
                 r.prompt_seconds > 0 ? r.n_prompt / r.prompt_seconds : 0.0);
    // The first generated token comes from the prompt's logits: n-1 forward passes follow.
    const int n_evals = r.n_generated > 0 ? r.n_generated - 1 : 0;
    std::fprintf(stderr, "generation: %d tokens in %.3f s (%.2f tok/s), %d threads, stop: %s\n", r.n_generated,
                 r.generate_seconds, r.generate_seconds > 0 ? n_evals / r.generate_seconds : 0.0,
                 session.n_threads(), r.done_reason.c_str());
    if (streamer) print_stream_stats(*streamer, n_evals + 1);
  });
}

}  // namespace strata::app
