#pragma once
// Options shared by the commands that load a model and generate.
#include <CLI/CLI.hpp>
#include <string>

#include "runtime/generate.h"
#include "runtime/session.h"

namespace strata::app {

struct ModelOptions {
  std::string model_path;
  SessionParams session;
};

struct SamplingOptions {
  GenerateParams gen;
  bool greedy = false;
};

inline void add_model_options(CLI::App* cmd, ModelOptions& o) {
  // No CLI11 file check: the GGUF reader names a missing or unreadable file itself (exit 1).
  cmd->add_option("model", o.model_path, "GGUF model file")->required();
  cmd->add_option("-c,--ctx", o.session.n_ctx, "context length (tokens)")->capture_default_str();
  cmd->add_option("-b,--batch", o.session.n_batch, "prompt tokens per forward pass")->capture_default_str();
  cmd->add_option("-t,--threads", o.session.n_threads, "threads (default: physical cores)");
}

inline void add_sampling_options(CLI::App* cmd, SamplingOptions& o) {
  SamplerParams& s = o.gen.sampling;
  cmd->add_option("-n,--n-predict", o.gen.n_predict, "tokens to generate (-1: until the end)")->capture_default_str();
  cmd->add_option("--temp", s.temperature, "temperature (0: greedy)")->capture_default_str();
  cmd->add_option("--top-k", s.top_k, "top-k (0: off)")->capture_default_str();
  cmd->add_option("--top-p", s.top_p, "top-p (1: off)")->capture_default_str();
  cmd->add_option("--min-p", s.min_p, "min-p (0: off)")->capture_default_str();
  cmd->add_option("--repeat-penalty", s.repeat_penalty, "repeat penalty (1: off)")->capture_default_str();
  cmd->add_option("--repeat-last-n", s.repeat_last_n, "tokens the penalties look back")->capture_default_str();
  cmd->add_option("--presence-penalty", s.presence_penalty, "presence penalty")->capture_default_str();
  cmd->add_option("--frequency-penalty", s.frequency_penalty, "frequency penalty")->capture_default_str();
  cmd->add_option("--seed", s.seed, "random seed (default: random)");
  cmd->add_option("--stop", o.gen.stop, "stop string (repeatable)");
  cmd->add_flag("--greedy", o.greedy, "greedy decoding (same as --temp 0)");
}

}  // namespace strata::app
