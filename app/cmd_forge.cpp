// `strata forge`: writes a GGUF test model with a real architecture and random weights.
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "commands.h"
#include "forge/forge.h"
#include "util/error.h"

namespace strata::app {
namespace {

struct ForgeArgs {
  forge::ForgeOptions options;
  std::string fill = "auto";
  bool list = false;
};

void run_forge(const ForgeArgs& args) {
  if (args.list) {
    std::cout << forge::list_presets();
    return;
  }
  forge::ForgeOptions o = args.options;
  if (o.preset.empty()) throw Error("forge: --preset is required (see strata forge --list)");
  if (o.type.empty()) throw Error("forge: --type is required (e.g. Q4_K, Q8_0, F16, Q4_K_M)");
  if (o.out.empty()) throw Error("forge: --out is required");
  o.fill = forge::parse_fill_mode(args.fill);
  const forge::ForgeResult r = forge::forge(o);
  const forge::Hparams& h = r.hparams;
  std::printf("wrote %s: %s %s, %s, %d layers, %d wide, %d/%d heads of %d, vocab %d", o.out.c_str(),
              forge::arch_name(h.arch), h.preset.c_str(), o.type.c_str(), h.n_layer, h.n_embd, h.n_head, h.n_head_kv,
              h.head_dim, h.n_vocab);
  if (h.is_moe()) std::printf(", %d experts top-%d", h.n_expert, h.n_expert_used);
  std::printf("\n  %zu tensors, %.3f B parameters, %.1f MB, %s weights, %.2f s (%.0f MB/s)\n", r.n_tensors,
              double(r.n_params) / 1e9, double(r.n_bytes) / 1e6,
              r.fill == forge::FillMode::blocks ? "random-block" : "quantized-value", r.seconds,
              r.seconds > 0 ? double(r.n_bytes) / 1e6 / r.seconds : 0.0);
  if (!r.fallbacks.empty()) {
    std::printf("  %zu tensors fell back to another type (rows not a multiple of the block), e.g. %s\n",
                r.fallbacks.size(), r.fallbacks.front().c_str());
  }
}

}  // namespace

void add_forge_command(CLI::App& app) {
  auto args = std::make_shared<ForgeArgs>();
  CLI::App* cmd = app.add_subcommand("forge", "Write a GGUF test model: a real architecture with random weights");
  cmd->add_option("--arch", args->options.arch, "Architecture: " + forge::known_archs());
  cmd->add_option("--preset", args->options.preset,
                  "tiny, small, tiny-moe, llama-3-8b, llama-3-70b, mixtral-8x7b, qwen3-30b-a3b, smollm2-135m, gemma-3-270m (--list)");
  cmd->add_option("--type", args->options.type,
                  "Weight type: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K Q4_K_M Q5_K_M");
  cmd->add_option("--out,-o", args->options.out, "Output GGUF path");
  cmd->add_option("--seed", args->options.seed, "Seed of the weights (the same seed gives the same bytes)")
      ->capture_default_str();
  cmd->add_option("--tokenizer-from", args->options.tokenizer_from,
                  "GGUF whose tokenizer.* metadata is copied (default " + forge::default_tokenizer_path() + ")");
  cmd->add_option("--fill", args->fill,
                  "auto: quantized values below 256 MiB, random blocks above; values; blocks")
      ->capture_default_str();
  cmd->add_option("--threads", args->options.n_threads, "Threads generating random blocks (0: all cores)")
      ->capture_default_str();
  forge::ShapeOverride& shape = args->options.shape;
  cmd->add_option("--layers", shape.n_layer, "Override the preset's layer count");
  cmd->add_option("--width", shape.n_embd, "Override the preset's embedding width");
  cmd->add_option("--heads", shape.n_head, "Override the preset's query heads");
  cmd->add_option("--heads-kv", shape.n_head_kv, "Override the preset's KV heads");
  cmd->add_option("--ff", shape.n_ff, "Override the preset's FFN (and expert FFN) width");
  cmd->add_option("--experts", shape.n_expert, "Override the preset's expert count (MoE presets)");
  cmd->add_option("--experts-used", shape.n_expert_used, "Override the preset's experts used per token");
  cmd->add_flag("--list", args->list, "List the presets and architectures");
  cmd->callback([args] {
    try {
      run_forge(*args);
    } catch (const Error& e) {
      std::cerr << "error: " << e.what() << "\n";
      throw CLI::RuntimeError(1);
    }
  });
}

}  // namespace strata::app
