#include "forge/forge.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "forge/weights.h"
#include "gguf/gguf.h"
#include "gguf/writer.h"
#include "util/error.h"

namespace strata::forge {
namespace {

using gguf::Value;

std::string upper(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return char(std::toupper(c)); });
  return s;
}

// llama.cpp's llama_ftype for a file whose matrices are all of one type.
struct PlainType {
  const char* name;
  DType type;
  uint32_t file_type;
};
constexpr PlainType kPlainTypes[] = {
    {"F32", DType::F32, 0},    {"F16", DType::F16, 1},    {"BF16", DType::BF16, 32}, {"Q4_0", DType::Q4_0, 2},
    {"Q4_1", DType::Q4_1, 3},  {"Q5_0", DType::Q5_0, 8},  {"Q5_1", DType::Q5_1, 9},  {"Q8_0", DType::Q8_0, 7},
    {"Q2_K", DType::Q2_K, 10}, {"Q3_K", DType::Q3_K, 11}, {"Q4_K", DType::Q4_K, 14}, {"Q5_K", DType::Q5_K, 16},
    {"Q6_K", DType::Q6_K, 18},
};

// llama.cpp's use_more_bits: the first and last eighth of the layers and every third one between.
bool use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Where rows don't split into 256-element super-blocks, llama.cpp's quantizer falls back to a
// 32-element type (IQ4_NL for Q2_K/Q3_K there; Strata has no IQ kernels, so Q4_0 as older llama.cpp).
DType fallback_type(DType t) {
  switch (t) {
    case DType::Q2_K:
    case DType::Q3_K: return DType::Q4_0;
    case DType::Q4_K: return DType::Q5_0;
    case DType::Q5_K: return DType::Q5_1;
    case DType::Q6_K: return DType::Q8_0;
    default: return DType::F16;
  }
}

// Copies every tokenizer.* key of another GGUF; returns the vocabulary size.
int copy_tokenizer(const std::string& path, gguf::Writer& writer) {
  if (!std::filesystem::exists(path))
    throw Error("forge: tokenizer source '" + path + "' does not exist (pass --tokenizer-from a GGUF with tokenizer.* keys)");
  auto file = gguf::File::open(path);
  const Value* tokens = file->find("tokenizer.ggml.tokens");
  if (!tokens || tokens->type != gguf::ValueType::ARRAY)
    throw Error("forge: tokenizer source '" + path + "' has no tokenizer.ggml.tokens array");
  const size_t n_vocab = tokens->as_array().items.size();
  if (n_vocab == 0) throw Error("forge: tokenizer source '" + path + "' has an empty tokenizer.ggml.tokens");
  for (const auto& [key, value] : file->metadata())
    if (key.rfind("tokenizer.", 0) == 0) writer.set(key, value);
  return int(n_vocab);
}

void set_metadata(const Hparams& h, const TypeRecipe& recipe, const ForgeOptions& o, gguf::Writer& w) {
  const std::string a = arch_name(h.arch);
  auto key = [&](const char* suffix) { return a + "." + suffix; };
  w.set("general.architecture", Value::str(a));
  w.set("general.type", Value::str("model"));
  w.set("general.name", Value::str("forged " + h.preset + " " + a + " (random weights)"));
  w.set("general.file_type", Value::u32(recipe.file_type));
  w.set("general.quantization_version", Value::u32(2));
  w.set("general.alignment", Value::u32(32));
  w.set("strata.forge.preset", Value::str(h.preset));
  w.set("strata.forge.seed", Value::u64(o.seed));
  w.set("strata.forge.type", Value::str(recipe.name));

  w.set(key("vocab_size"), Value::u32(uint32_t(h.n_vocab)));
  w.set(key("context_length"), Value::u32(uint32_t(h.n_ctx)));
  w.set(key("embedding_length"), Value::u32(uint32_t(h.n_embd)));
  w.set(key("block_count"), Value::u32(uint32_t(h.n_layer)));
  w.set(key("feed_forward_length"), Value::u32(uint32_t(h.n_ff)));
  w.set(key("attention.head_count"), Value::u32(uint32_t(h.n_head)));
  w.set(key("attention.head_count_kv"), Value::u32(uint32_t(h.n_head_kv)));
  w.set(key("attention.layer_norm_rms_epsilon"), Value::f32(h.rms_eps));
  w.set(key("rope.freq_base"), Value::f32(h.rope_base));
  switch (h.arch) {
    case ForgeArch::llama:
      w.set(key("rope.dimension_count"), Value::u32(uint32_t(h.head_dim)));
      break;
    case ForgeArch::qwen2:
    case ForgeArch::qwen2moe:
      break;
    case ForgeArch::qwen3:
    case ForgeArch::qwen3moe:
    case ForgeArch::gemma3:
      w.set(key("attention.key_length"), Value::u32(uint32_t(h.head_dim)));
      w.set(key("attention.value_length"), Value::u32(uint32_t(h.head_dim)));
      break;
    case ForgeArch::gptoss:  // as convert_hf_to_gguf writes gpt-oss
      w.set(key("rope.dimension_count"), Value::u32(uint32_t(h.head_dim)));
      w.set(key("attention.key_length"), Value::u32(uint32_t(h.head_dim)));
      w.set(key("attention.value_length"), Value::u32(uint32_t(h.head_dim)));
      w.set(key("attention.sliding_window"), Value::u32(uint32_t(h.sliding_window)));
      break;
    case ForgeArch::qwen35:  // as convert_hf_to_gguf writes Qwen3.5
    case ForgeArch::qwen35moe:
      w.set(key("attention.key_length"), Value::u32(uint32_t(h.head_dim)));
      w.set(key("attention.value_length"), Value::u32(uint32_t(h.head_dim)));
      w.set(key("rope.dimension_count"), Value::u32(uint32_t(h.rot_dims())));
      w.set(key("rope.dimension_sections"), Value::i32s({h.rope_sections[0], h.rope_sections[1], h.rope_sections[2], 0}));
      w.set(key("ssm.conv_kernel"), Value::u32(uint32_t(h.ssm_d_conv)));
      w.set(key("ssm.state_size"), Value::u32(uint32_t(h.ssm_d_state)));
      w.set(key("ssm.group_count"), Value::u32(uint32_t(h.ssm_n_group)));
      w.set(key("ssm.time_step_rank"), Value::u32(uint32_t(h.ssm_dt_rank)));
      w.set(key("ssm.inner_size"), Value::u32(uint32_t(h.ssm_d_state * h.ssm_dt_rank)));
      w.set(key("full_attention_interval"), Value::u32(uint32_t(h.full_attn_interval)));
      break;
  }
  if (h.rope_yarn_factor > 0) {
    w.set(key("rope.scaling.type"), Value::str("yarn"));
    w.set(key("rope.scaling.factor"), Value::f32(h.rope_yarn_factor));
    w.set(key("rope.scaling.original_context_length"), Value::u32(uint32_t(h.rope_yarn_orig_ctx)));
  }
  if (h.is_moe()) {
    w.set(key("expert_count"), Value::u32(uint32_t(h.n_expert)));
    w.set(key("expert_used_count"), Value::u32(uint32_t(h.n_expert_used)));
    if (h.n_ff_exp > 0) w.set(key("expert_feed_forward_length"), Value::u32(uint32_t(h.n_ff_exp)));
    if (h.n_ff_shexp > 0) w.set(key("expert_shared_feed_forward_length"), Value::u32(uint32_t(h.n_ff_shexp)));
  }
  if (h.arch == ForgeArch::gemma3) {
    // llama.cpp's gemma3 takes the layer pattern (5 local, 1 global) as fixed.
    w.set(key("attention.sliding_window"), Value::u32(uint32_t(h.sliding_window)));
    w.set(key("rope.freq_base_swa"), Value::f32(h.rope_base_swa));
  }
}

}  // namespace

FillMode parse_fill_mode(const std::string& name) {
  if (name == "auto") return FillMode::automatic;
  if (name == "values") return FillMode::values;
  if (name == "blocks") return FillMode::blocks;
  throw Error("forge: unknown fill mode '" + name + "' (expected auto, values or blocks)");
}

TypeRecipe parse_type_recipe(const std::string& name) {
  const std::string u = upper(name);
  TypeRecipe r;
  r.name = u;
  if (u == "Q4_K_M" || u == "Q5_K_M") {
    r.base = u == "Q4_K_M" ? DType::Q4_K : DType::Q5_K;
    r.k_mixture = true;
    r.file_type = u == "Q4_K_M" ? 15 : 17;
    return r;
  }
  if (u == "MXFP4_MOE") {  // llama.cpp's LLAMA_FTYPE_MOSTLY_MXFP4_MOE, as gpt-oss ships
    r.base = DType::Q8_0;
    r.mxfp4_experts = true;
    r.file_type = 38;
    return r;
  }
  for (const auto& p : kPlainTypes) {
    if (u != p.name) continue;
    r.base = p.type;
    r.file_type = p.file_type;
    return r;
  }
  std::string names;
  for (const auto& p : kPlainTypes) names += std::string(p.name) + " ";
  throw Error("forge: unsupported type '" + name + "' (expected one of " + names + "Q4_K_M Q5_K_M MXFP4_MOE)");
}

namespace {

// Tensors whose values must not centre on zero (suffix, mean): a delta-rule layer's decay rate
// a = -exp(A_log) is negative (here a decay of about 0.93 a token), and its conv1d kernels average
// their window rather than cancel it.
struct FillMean {
  const char* suffix;
  float mean;
};
constexpr FillMean kFillMeans[] = {{".ssm_a", -0.1f}, {".ssm_conv1d.weight", 0.25f}};

float fill_mean(const std::string& name) {
  for (const FillMean& f : kFillMeans)
    if (ends_with(name, f.suffix)) return f.mean;
  return 0.0f;
}

bool is_f32_kind(TensorKind k) { return k == TensorKind::norm || k == TensorKind::bias || k == TensorKind::router; }

// The type the recipe asks for, before any fallback.
DType intended_type(const TypeRecipe& recipe, const Hparams& h, const TensorSpec& t) {
  if (is_f32_kind(t.kind)) return DType::F32;
  DType type = recipe.base;
  if (recipe.mxfp4_experts && ends_with(t.name, "_exps.weight")) return DType::MXFP4;
  if (recipe.k_mixture) {
    if (t.kind == TensorKind::output) type = DType::Q6_K;
    const bool v_or_down = ends_with(t.name, ".attn_v.weight") || ends_with(t.name, ".ffn_down.weight") ||
                           ends_with(t.name, ".ffn_down_exps.weight");
    if (v_or_down && use_more_bits(t.layer, h.n_layer)) type = DType::Q6_K;
  }
  return type;
}

}  // namespace

DType tensor_type(const TypeRecipe& recipe, const Hparams& h, const TensorSpec& t) {
  DType type = intended_type(recipe, h, t);
  while (t.shape[0] % type_info(type).block_elems != 0) type = fallback_type(type);
  return type;
}

std::string default_tokenizer_path() {
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "") + "/.cache/strata/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

Hparams with_override(Hparams h, const ShapeOverride& o) {
  if (!h.is_moe() && (o.n_expert || o.n_expert_used))
    throw Error("forge: preset '" + h.preset + "' is dense: no experts to change");
  auto set = [](int& field, int value, const char* what) {
    if (value == 0) return;
    if (value < 0 || value > 65536) throw Error(std::string("forge: ") + what + " " + std::to_string(value) + " is out of range 1..65536");
    field = value;
  };
  set(h.n_layer, o.n_layer, "layers");
  set(h.n_embd, o.n_embd, "width");
  set(h.n_head, o.n_head, "heads");
  set(h.n_head_kv, o.n_head_kv, "KV heads");
  set(h.n_ff, o.n_ff, "FFN width");
  if (o.n_ff != 0 && h.n_ff_exp > 0) h.n_ff_exp = o.n_ff;
  set(h.n_expert, o.n_expert, "experts");
  set(h.n_expert_used, o.n_expert_used, "experts used");
  if (h.n_head % h.n_head_kv != 0)
    throw Error("forge: " + std::to_string(h.n_head) + " heads do not group over " + std::to_string(h.n_head_kv) +
                " KV heads");
  if (h.is_moe() && h.n_expert_used > h.n_expert)
    throw Error("forge: " + std::to_string(h.n_expert_used) + " experts used of " + std::to_string(h.n_expert));
  return h;
}

void build(const ForgeOptions& o, gguf::Writer& writer, ForgeResult& result) {
  Hparams h = with_override(find_preset(o.preset, o.arch), o.shape);
  const TypeRecipe recipe = parse_type_recipe(o.type);
  const std::string tokenizer = o.tokenizer_from.empty() ? default_tokenizer_path() : o.tokenizer_from;

  // Metadata first (general.*, arch keys), then the tokenizer's keys, as convert_hf_to_gguf orders them.
  h.n_vocab = 1;  // placeholder: set_metadata is rerun below with the real count
  set_metadata(h, recipe, o, writer);
  h.n_vocab = copy_tokenizer(tokenizer, writer);
  set_metadata(h, recipe, o, writer);

  const std::vector<TensorSpec> specs = tensor_list(h);
  uint64_t total_bytes = 0;
  std::vector<DType> types;
  for (const auto& t : specs) {
    const DType type = tensor_type(recipe, h, t);
    types.push_back(type);
    total_bytes += row_bytes(type, t.shape[0]) * uint64_t(t.n_elements() / t.shape[0]);
    result.n_params += uint64_t(t.n_elements());
    const DType wanted = intended_type(recipe, h, t);
    if (type != wanted)
      result.fallbacks.push_back(t.name + ": " + type_name(wanted) + " -> " + type_name(type));
  }
  FillMode fill = o.fill;
  if (fill == FillMode::automatic) fill = total_bytes > kBlocksThreshold ? FillMode::blocks : FillMode::values;
  const int n_threads = o.n_threads > 0 ? o.n_threads : int(std::max(1u, std::thread::hardware_concurrency()));

  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorSpec& t = specs[i];
    const DType type = types[i];
    const uint64_t seed = tensor_seed(o.seed, t.name);
    // Matrices about N(0, 0.02) as in initialisation; norms near 1 (gemma3's stored norms are 1 + w).
    const float mean = t.kind == TensorKind::norm ? 1.0f : fill_mean(t.name);
    const bool as_blocks = fill == FillMode::blocks && !is_f32_kind(t.kind);
    gguf::Writer::Fill filler;
    if (as_blocks) {
      filler = [type, seed, n_threads](uint8_t* dst, uint64_t n) { fill_blocks(type, seed, dst, n, n_threads); };
    } else {
      filler = [type, shape = t.shape, mean, seed](uint8_t* dst, uint64_t n) {
        fill_values(type, shape, mean, 0.02f, seed, dst, n);
      };
    }
    writer.add_tensor(t.name, type, t.shape, std::move(filler));
  }
  result.hparams = h;
  result.fill = fill;
  result.n_tensors = specs.size();
}

ForgeResult forge(const ForgeOptions& o) {
  if (o.out.empty()) throw Error("forge: no output path (--out)");
  ForgeResult result;
  gguf::Writer writer(32);
  build(o, writer, result);
  const auto t0 = std::chrono::steady_clock::now();
  writer.write(o.out);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::error_code ec;
  result.n_bytes = std::filesystem::file_size(o.out, ec);
  if (ec) throw Error("forge: cannot stat the written file '" + o.out + "': " + ec.message());
  return result;
}

}  // namespace strata::forge
