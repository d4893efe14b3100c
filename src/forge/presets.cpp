#include "forge/presets.h"

#include <algorithm>
#include <sstream>

#include "util/error.h"

namespace strata::forge {
namespace {

struct ArchName {
  ForgeArch arch;
  const char* name;
};
constexpr ArchName kArchs[] = {
    {ForgeArch::llama, "llama"},       {ForgeArch::qwen2, "qwen2"},       {ForgeArch::qwen3, "qwen3"},
    {ForgeArch::qwen3moe, "qwen3moe"}, {ForgeArch::qwen2moe, "qwen2moe"}, {ForgeArch::gemma3, "gemma3"},
    {ForgeArch::gptoss, "gpt-oss"},    {ForgeArch::qwen35, "qwen35"},     {ForgeArch::qwen35moe, "qwen35moe"},
};

// One row per shape. rope_base_swa 0: no sliding-window rope; yarn 0: no YaRN; experts 0: dense.
struct Shape {
  const char* preset;
  ForgeArch arch;
  int n_layer, n_embd, n_head, n_head_kv, head_dim, n_ff, n_ctx;
  float rope_base, rope_base_swa, rms_eps, yarn_factor;
  int yarn_orig_ctx, sliding_window, n_expert, n_expert_used, n_ff_exp, n_ff_shexp;
  bool tied_output;
  const char* what;  // for --list (named presets)
};

using A = ForgeArch;

// Per-architecture test shapes. tiny: n_embd 64 (K-quants fall back to 32-blocks, as llama.cpp
// does for rows not a multiple of 256); `small` scales these up. qwen3, qwen3moe and gemma3 use
// head_dim * n_head != n_embd, like the real models. qwen2: tied head as Qwen2.5 0.5B-3B; qwen2moe:
// Qwen1.5-MoE (qwen2 attention, 4 experts top-2 and a shared expert); gemma3: llama.cpp's pattern
// of 5 sliding-window layers, then 1 global; gpt-oss: gpt-oss-20b in miniature (alternating
// windows, 4 experts top-2, YaRN).
// clang-format off
constexpr Shape kTiny[] = {
    // preset arch       layer embd head kv  hdim  ff  ctx     rope_base  swa_base rms_eps yarn  orig  win ex  used fexp fshx tied
    {"tiny", A::llama,    2,   64,   4,  2,  16,  128, 4096,   10000.0f,     0.0f, 1e-5f,  0.0f,    0, 0,  0,  0,  0,   0, false, ""},
    {"tiny", A::qwen2,    2,   64,   4,  2,  16,  128, 4096, 1000000.0f,     0.0f, 1e-6f,  0.0f,    0, 0,  0,  0,  0,   0, true,  ""},
    {"tiny", A::qwen3,    2,   64,   4,  2,  32,  128, 4096, 1000000.0f,     0.0f, 1e-6f,  0.0f,    0, 0,  0,  0,  0,   0, false, ""},
    {"tiny", A::qwen3moe, 2,   64,   4,  2,  32,  128, 4096, 1000000.0f,     0.0f, 1e-6f,  0.0f,    0, 0,  4,  2,  64,  0, false, ""},
    {"tiny", A::qwen2moe, 2,   64,   4,  2,  16,  128, 4096, 1000000.0f,     0.0f, 1e-6f,  0.0f,    0, 0,  4,  2,  64, 128, false, ""},
    {"tiny", A::gemma3,   6,   64,   4,  2,  32,  128, 4096, 1000000.0f, 10000.0f, 1e-6f,  0.0f,    0, 16, 0,  0,  0,   0, true,  ""},
    {"tiny", A::gptoss,   4,   64,   4,  2,  32,   64, 131072, 150000.0f,    0.0f, 1e-5f, 32.0f, 4096, 8,  4,  2,  64,  0, false, ""},
    {"tiny", A::qwen35,   4,   64,   4,  2,  32,  128, 4096, 10000000.0f,    0.0f, 1e-6f,  0.0f,    0, 0,  0,  0,  0,   0, false, ""},
    {"tiny", A::qwen35moe, 4,  64,   4,  2,  32,  128, 4096, 10000000.0f,    0.0f, 1e-6f,  0.0f,    0, 0,  4,  2,  64, 64, false, ""},
};
// clang-format on

// Published models (HF config.json of each).
// clang-format off
constexpr Shape kNamed[] = {
    // preset          arch       layer embd  head kv  hdim  ff     ctx     rope_base  swa_base rms_eps yarn orig win ex  used fexp fshx tied
    {"llama-3-8b",     A::llama,    32, 4096, 32,  8, 128, 14336,  8192,  500000.0f,     0.0f, 1e-5f, 0.0f, 0, 0,   0, 0,    0, 0, false,
     "Llama 3 8B: 32 layers, 4096 wide, GQA 32/8, FFN 14336"},
    {"llama-3-70b",    A::llama,    80, 8192, 64,  8, 128, 28672,  8192,  500000.0f,     0.0f, 1e-5f, 0.0f, 0, 0,   0, 0,    0, 0, false,
     "Llama 3 70B: 80 layers, 8192 wide, GQA 64/8, FFN 28672"},
    {"mixtral-8x7b",   A::llama,    32, 4096, 32,  8, 128, 14336, 32768, 1000000.0f,     0.0f, 1e-5f, 0.0f, 0, 0,   8, 2,    0, 0, false,
     "Mixtral 8x7B (llama MoE): 32 layers, 8 experts top-2, FFN 14336"},
    {"qwen3-30b-a3b",  A::qwen3moe, 48, 2048, 32,  4, 128,  6144, 40960, 1000000.0f,     0.0f, 1e-6f, 0.0f, 0, 0, 128, 8,  768, 0, false,
     "Qwen3 30B-A3B (qwen3moe): 48 layers, 128 experts top-8, expert FFN 768"},
    {"smollm2-135m",   A::llama,    30,  576,  9,  3,  64,  1536,  8192,  100000.0f,     0.0f, 1e-5f, 0.0f, 0, 0,   0, 0,    0, 0, true,
     "SmolLM2 135M (llama): 30 layers, 576 wide, 9/3 heads, FFN 1536, tied head"},
    {"gemma-3-270m",   A::gemma3,   18,  640,  4,  1, 256,  2048, 32768, 1000000.0f, 10000.0f, 1e-6f, 0.0f, 0, 512, 0, 0,    0, 0, true,
     "Gemma 3 270M: 18 layers, 640 wide, 4/1 heads of 256, window 512"},
    // gpt-oss: 2880 wide, 64 query heads of 64, 8 KV heads, windows of 128 on even layers, expert
    // FFN 2880, YaRN 32 over 4096, rope base 150000.
    {"gpt-oss-20b",    A::gptoss,   24, 2880, 64,  8,  64,  2880, 131072, 150000.0f,     0.0f, 1e-5f, 32.0f, 4096, 128, 32, 4, 2880, 0, false,
     "gpt-oss-20b: 24 layers, 2880 wide, 64/8 heads of 64, 32 experts top-4 (MXFP4_MOE)"},
    {"gpt-oss-120b",   A::gptoss,   36, 2880, 64,  8,  64,  2880, 131072, 150000.0f,     0.0f, 1e-5f, 32.0f, 4096, 128, 128, 4, 2880, 0, false,
     "gpt-oss-120b: 36 layers, 2880 wide, 64/8 heads of 64, 128 experts top-4"},
    {"qwen3.5-35b-a3b", A::qwen35moe, 40, 2048, 16, 2, 256,  512, 262144, 10000000.0f,  0.0f, 1e-6f, 0.0f, 0, 0, 256, 8,  512, 512, false,
     "Qwen3.5 35B-A3B (qwen35moe): 40 layers, 3 of 4 gated delta-rule, 16/2 heads of 256, 256 experts top-8 + shared"},
    {"qwen3.5-layout",  A::qwen35moe,  4, 2048, 16, 2, 256,  512, 262144, 10000000.0f,  0.0f, 1e-6f, 0.0f, 0, 0,   8, 2,  512, 512, false,
     "Qwen3.5 35B-A3B's layout in 4 layers (3 delta-rule, 1 full attention) with 8 experts top-2: for per-layer checks"},
};
// clang-format on

// qwen3.5-35b-a3b checked (2026-12-07) against Qwen's published text_config of Qwen3.5-35B-A3B (the
// same as Qwen3.6-35B-A3B's): hidden 2048, 40 layers, 16/2 heads of 256, 256 experts top-8,
// moe_intermediate 512, shared expert 512, linear attention 16 key / 32 value heads of 128, conv 4,
// full_attention_interval 4, partial_rotary_factor 0.25 (64 dims), mrope_section [11, 11, 10],
// rope_theta 1e7, rms_norm_eps 1e-6, 262144 positions; llama.cpp writes ssm.inner_size 4096,
// state_size 128, group_count 16, time_step_rank 32. (Its one MTP layer is not forged.)
// The delta-rule side of the hybrid shapes (qwen35, qwen35moe), by preset. tiny: v heads twice
// the q/k heads (each v head reads q/k head h mod 2, as ggml broadcasts), a full-attention layer
// every second layer; the released models: every fourth, rope over a quarter of each head.
struct HybridShape {
  const char* preset;
  int n_rot, full_attn_interval, sections[3], ssm_d_conv, ssm_d_state, ssm_n_group, ssm_dt_rank;
};
// clang-format off
constexpr HybridShape kHybrid[] = {
    // preset           rot interval sections     conv state groups v-heads
    {"tiny",              8, 2,      {2, 1, 1},    4,   16,   2,     4},
    {"small",            32, 2,      {6, 5, 5},    4,   64,   2,     4},
    {"qwen3.5-35b-a3b",  64, 4,      {11, 11, 10}, 4,  128,  16,    32},
    {"qwen3.5-layout",   64, 4,      {11, 11, 10}, 4,  128,  16,    32},
};
// clang-format on

Hparams with_hybrid(Hparams h) {
  if (h.arch != ForgeArch::qwen35 && h.arch != ForgeArch::qwen35moe) return h;
  for (const HybridShape& s : kHybrid) {
    if (h.preset != s.preset) continue;
    h.n_rot = s.n_rot;
    h.full_attn_interval = s.full_attn_interval;
    for (int i = 0; i < 3; ++i) h.rope_sections[i] = s.sections[i];
    h.ssm_d_conv = s.ssm_d_conv;
    h.ssm_d_state = s.ssm_d_state;
    h.ssm_n_group = s.ssm_n_group;
    h.ssm_dt_rank = s.ssm_dt_rank;
    return h;
  }
  throw Error("forge: no delta-rule shape for preset '" + h.preset + "' of " + arch_name(h.arch) + " (internal error)");
}

Hparams from_shape(const Shape& s) {
  Hparams h;
  h.preset = s.preset;
  h.arch = s.arch;
  h.n_layer = s.n_layer;
  h.n_embd = s.n_embd;
  h.n_head = s.n_head;
  h.n_head_kv = s.n_head_kv;
  h.head_dim = s.head_dim;
  h.n_ff = s.n_ff;
  h.n_ctx = s.n_ctx;
  h.rope_base = s.rope_base;
  h.rope_base_swa = s.rope_base_swa;
  h.rms_eps = s.rms_eps;
  h.rope_yarn_factor = s.yarn_factor;
  h.rope_yarn_orig_ctx = s.yarn_orig_ctx;
  h.sliding_window = s.sliding_window;
  h.n_expert = s.n_expert;
  h.n_expert_used = s.n_expert_used;
  h.n_ff_exp = s.n_ff_exp;
  h.n_ff_shexp = s.n_ff_shexp;
  h.tied_output = s.tied_output;
  return h;
}

Hparams tiny(ForgeArch arch) {
  for (const Shape& s : kTiny)
    if (s.arch == arch) return from_shape(s);
  throw Error(std::string("forge: no tiny shape for ") + arch_name(arch) + " (internal error)");
}

// Every row a multiple of 256, so K-quants apply.
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
  for (const Shape& p : kNamed) {
    if (preset != p.preset) continue;
    Hparams h = with_hybrid(from_shape(p));
    if (!arch.empty() && parse_arch(arch) != h.arch)
      throw Error("forge: preset '" + preset + "' is a " + arch_name(h.arch) + " model, not " + arch);
    return h;
  }
  if (preset == "tiny" || preset == "small" || preset == "tiny-moe") {
    if (arch.empty()) throw Error("forge: preset '" + preset + "' needs --arch (" + known_archs() + ")");
    const ForgeArch a = parse_arch(arch);
    if (preset == "tiny") return with_hybrid(tiny(a));
    if (preset == "small") return with_hybrid(small(a));
    if (a != ForgeArch::llama)
      throw Error("forge: preset 'tiny-moe' is for llama (Mixtral form); use 'tiny' for " + arch);
    return tiny_moe();
  }
  std::string names = "tiny, small, tiny-moe";
  for (const Shape& p : kNamed) names += std::string(", ") + p.preset;
  throw Error("forge: unknown preset '" + preset + "' (known: " + names + ")");
}

std::string list_presets() {
  std::ostringstream os;
  os << "tiny           any architecture: 64 wide, 2 layers (gemma3: 6; gpt-oss, qwen35: 4), 4/2 heads, FFN 128, 4 "
        "experts top-2 for MoE\n";
  os << "small          any architecture: 256 wide, rows a multiple of 256 so K-quants apply everywhere\n";
  os << "tiny-moe       llama in Mixtral form: tiny with 4 experts top-2\n";
  for (const Shape& p : kNamed) {
    std::string name = p.preset;
    name.resize(std::max<size_t>(15, name.size() + 1), ' ');
    os << name << p.what << "\n";
  }
  os << "architectures: " << known_archs() << "\n";
  return os.str();
}

}  // namespace strata::forge
