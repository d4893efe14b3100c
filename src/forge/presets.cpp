#include "forge/presets.h"

#include <sstream>

#include "util/error.h"

namespace strata::forge {
namespace {

struct ArchName {
  ForgeArch arch;
  const char* name;
};
constexpr ArchName kArchs[] = {
    {ForgeArch::llama, "llama"},   {ForgeArch::qwen2, "qwen2"},   {ForgeArch::qwen3, "qwen3"},
    {ForgeArch::qwen3moe, "qwen3moe"}, {ForgeArch::qwen2moe, "qwen2moe"}, {ForgeArch::gemma3, "gemma3"},
    {ForgeArch::gptoss, "gpt-oss"},
};

// Per-architecture test shapes. tiny: n_embd 64 (K-quants fall back to 32-blocks, as llama.cpp
// does for rows not a multiple of 256). small: every row a multiple of 256, so K-quants apply.
// qwen3, qwen3moe and gemma3 use head_dim * n_head != n_embd, like the real models.
Hparams tiny(ForgeArch arch) {
  Hparams h;
  h.preset = "tiny";
  h.arch = arch;
  h.n_layer = 2;
  h.n_embd = 64;
  h.n_head = 4;
  h.n_head_kv = 2;
  h.head_dim = 16;
  h.n_ff = 128;
  h.n_ctx = 4096;
  switch (arch) {
    case ForgeArch::llama:
      h.rope_base = 10000.0f;
      h.rms_eps = 1e-5f;
      break;
    case ForgeArch::qwen2:
      h.rope_base = 1000000.0f;
      h.rms_eps = 1e-6f;
      h.tied_output = true;  // as Qwen2.5 0.5B-3B
      break;
    case ForgeArch::qwen3:
      h.head_dim = 32;
      h.rope_base = 1000000.0f;
      h.rms_eps = 1e-6f;
      break;
    case ForgeArch::qwen3moe:
      h.head_dim = 32;
      h.rope_base = 1000000.0f;
      h.rms_eps = 1e-6f;
      h.n_expert = 4;
      h.n_expert_used = 2;
      h.n_ff_exp = 64;
      break;
    case ForgeArch::qwen2moe:  // Qwen1.5-MoE: qwen2 attention, 4 experts top-2 and a shared expert
      h.rope_base = 1000000.0f;
      h.rms_eps = 1e-6f;
      h.n_expert = 4;
      h.n_expert_used = 2;
      h.n_ff_exp = 64;
      h.n_ff_shexp = 128;
      break;
    case ForgeArch::gemma3:
      h.n_layer = 6;  // llama.cpp's gemma3 pattern: 5 sliding-window layers, then 1 global
      h.head_dim = 32;
      h.rope_base = 1000000.0f;
      h.rope_base_swa = 10000.0f;
      h.rms_eps = 1e-6f;
      h.sliding_window = 16;
      h.tied_output = true;
      break;
    case ForgeArch::gptoss:  // gpt-oss-20b in miniature: alternating windows, 4 experts top-2, YaRN
      h.n_layer = 4;
      h.head_dim = 32;
      h.n_ff = 64;
      h.rope_base = 150000.0f;
      h.rms_eps = 1e-5f;
      h.rope_yarn_factor = 32.0f;
      h.rope_yarn_orig_ctx = 4096;
      h.sliding_window = 8;
      h.n_expert = 4;
      h.n_expert_used = 2;
      h.n_ff_exp = 64;
      h.n_ctx = 131072;
      break;
  }
  return h;
}

Hparams small(ForgeArch arch) {
  Hparams h = tiny(arch);
  h.preset = "small";
  h.n_embd = 256;
  h.head_dim = h.head_dim == 16 ? 64 : 128;
  h.n_ff = 512;
  if (h.n_ff_exp) h.n_ff_exp = 256;
  if (h.n_ff_shexp) h.n_ff_shexp = 512;
  return h;
}

Hparams tiny_moe() {
  Hparams h = tiny(ForgeArch::llama);
  h.preset = "tiny-moe";
  h.n_expert = 4;
  h.n_expert_used = 2;
  return h;
}

// Published models (HF config.json of each).
Hparams llama_3_8b() {
  Hparams h;
  h.preset = "llama-3-8b";
  h.arch = ForgeArch::llama;
  h.n_layer = 32;
  h.n_embd = 4096;
  h.n_head = 32;
  h.n_head_kv = 8;
  h.head_dim = 128;
  h.n_ff = 14336;
  h.n_ctx = 8192;
  h.rope_base = 500000.0f;
  h.rms_eps = 1e-5f;
  return h;
}

Hparams llama_3_70b() {
  Hparams h = llama_3_8b();
  h.preset = "llama-3-70b";
  h.n_layer = 80;
  h.n_embd = 8192;
  h.n_head = 64;
  h.n_ff = 28672;
  return h;
}

Hparams mixtral_8x7b() {
  Hparams h = llama_3_8b();
  h.preset = "mixtral-8x7b";
  h.n_ctx = 32768;
  h.rope_base = 1000000.0f;
  h.n_expert = 8;
  h.n_expert_used = 2;
  return h;
}

Hparams qwen3_30b_a3b() {
  Hparams h;
  h.preset = "qwen3-30b-a3b";
  h.arch = ForgeArch::qwen3moe;
  h.n_layer = 48;
  h.n_embd = 2048;
  h.n_head = 32;
  h.n_head_kv = 4;
  h.head_dim = 128;
  h.n_ff = 6144;
  h.n_ctx = 40960;
  h.rope_base = 1000000.0f;
  h.rms_eps = 1e-6f;
  h.n_expert = 128;
  h.n_expert_used = 8;
  h.n_ff_exp = 768;
  return h;
}

// gpt-oss-20b / 120b (HF config.json): 2880 wide, 64 query heads of 64, 8 KV heads, windows of
// 128 on even layers, expert FFN 2880, YaRN 32 over 4096, rope base 150000.
Hparams gpt_oss_20b() {
  Hparams h;
  h.preset = "gpt-oss-20b";
  h.arch = ForgeArch::gptoss;
  h.n_layer = 24;
  h.n_embd = 2880;
  h.n_head = 64;
  h.n_head_kv = 8;
  h.head_dim = 64;
  h.n_ff = 2880;
  h.n_ctx = 131072;
  h.rope_base = 150000.0f;
  h.rms_eps = 1e-5f;
  h.rope_yarn_factor = 32.0f;
  h.rope_yarn_orig_ctx = 4096;
  h.sliding_window = 128;
  h.n_expert = 32;
  h.n_expert_used = 4;
  h.n_ff_exp = 2880;
  return h;
}

Hparams gpt_oss_120b() {
  Hparams h = gpt_oss_20b();
  h.preset = "gpt-oss-120b";
  h.n_layer = 36;
  h.n_expert = 128;
  return h;
}

Hparams gemma_3_270m() {
  Hparams h;
  h.preset = "gemma-3-270m";
  h.arch = ForgeArch::gemma3;
  h.n_layer = 18;
  h.n_embd = 640;
  h.n_head = 4;
  h.n_head_kv = 1;
  h.head_dim = 256;
  h.n_ff = 2048;
  h.n_ctx = 32768;
  h.rope_base = 1000000.0f;
  h.rope_base_swa = 10000.0f;
  h.rms_eps = 1e-6f;
  h.sliding_window = 512;
  h.tied_output = true;
  return h;
}

Hparams smollm2_135m() {
  Hparams h;
  h.preset = "smollm2-135m";
  h.arch = ForgeArch::llama;
  h.n_layer = 30;
  h.n_embd = 576;
  h.n_head = 9;
  h.n_head_kv = 3;
  h.head_dim = 64;
  h.n_ff = 1536;
  h.n_ctx = 8192;
  h.rope_base = 100000.0f;
  h.rms_eps = 1e-5f;
  h.tied_output = true;
  return h;
}

struct NamedPreset {
  const char* name;
  Hparams (*make)();
  const char* what;
};
const NamedPreset kNamed[] = {
    {"llama-3-8b", llama_3_8b, "Llama 3 8B: 32 layers, 4096 wide, GQA 32/8, FFN 14336"},
    {"llama-3-70b", llama_3_70b, "Llama 3 70B: 80 layers, 8192 wide, GQA 64/8, FFN 28672"},
    {"mixtral-8x7b", mixtral_8x7b, "Mixtral 8x7B (llama MoE): 32 layers, 8 experts top-2, FFN 14336"},
    {"qwen3-30b-a3b", qwen3_30b_a3b, "Qwen3 30B-A3B (qwen3moe): 48 layers, 128 experts top-8, expert FFN 768"},
    {"smollm2-135m", smollm2_135m, "SmolLM2 135M (llama): 30 layers, 576 wide, 9/3 heads, FFN 1536, tied head"},
    {"gemma-3-270m", gemma_3_270m, "Gemma 3 270M: 18 layers, 640 wide, 4/1 heads of 256, window 512"},
    {"gpt-oss-20b", gpt_oss_20b, "gpt-oss-20b: 24 layers, 2880 wide, 64/8 heads of 64, 32 experts top-4 (MXFP4_MOE)"},
    {"gpt-oss-120b", gpt_oss_120b, "gpt-oss-120b: 36 layers, 2880 wide, 64/8 heads of 64, 128 experts top-4"},
};

}  // namespace

const char* arch_name(ForgeArch arch) {
  for (const auto& a : kArchs)
    if (a.arch == arch) return a.name;
  return "?";
}

std::string known_archs() {
  std::string s;
  for (const auto& a : kArchs) s += std::string(s.empty() ? "" : ", ") + a.name;
  return s;
}

ForgeArch parse_arch(const std::string& name) {
  for (const auto& a : kArchs)
    if (name == a.name) return a.arch;
  throw Error("forge: unknown architecture '" + name + "' (known: " + known_archs() + ")");
}

Hparams find_preset(const std::string& preset, const std::string& arch) {
  for (const auto& p : kNamed) {
    if (preset != p.name) continue;
    Hparams h = p.make();
    if (!arch.empty() && parse_arch(arch) != h.arch)
      throw Error("forge: preset '" + preset + "' is a " + arch_name(h.arch) + " model, not " + arch);
    return h;
  }
  if (preset == "tiny" || preset == "small" || preset == "tiny-moe") {
    if (arch.empty()) throw Error("forge: preset '" + preset + "' needs --arch (" + known_archs() + ")");
    const ForgeArch a = parse_arch(arch);
    if (preset == "tiny") return tiny(a);
    if (preset == "small") return small(a);
    if (a != ForgeArch::llama) throw Error("forge: preset 'tiny-moe' is for llama (Mixtral form); use 'tiny' for " + arch);
    return tiny_moe();
  }
  std::string names = "tiny, small, tiny-moe";
  for (const auto& p : kNamed) names += std::string(", ") + p.name;
  throw Error("forge: unknown preset '" + preset + "' (known: " + names + ")");
}

std::string list_presets() {
  std::ostringstream os;
  os << "tiny           any architecture: 64 wide, 2 layers (gemma3: 6), 4/2 heads, FFN 128, 4 experts top-2 for MoE\n";
  os << "small          any architecture: 256 wide, rows a multiple of 256 so K-quants apply everywhere\n";
  os << "tiny-moe       llama in Mixtral form: tiny with 4 experts top-2\n";
  for (const auto& p : kNamed) {
    std::string name = p.name;
    name.resize(15, ' ');
    os << name << p.what << "\n";
  }
  os << "architectures: " << known_archs() << "\n";
  return os.str();
}

}  // namespace strata::forge
