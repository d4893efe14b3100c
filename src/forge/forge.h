#pragma once
// `strata forge`: GGUF files with a real architecture's tensors and metadata (as llama.cpp loads
// them), the tokenizer of another GGUF, and deterministic random weights.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "forge/presets.h"
#include "forge/tensors.h"
#include "tensor/type.h"

namespace strata::gguf { class Writer; }

namespace strata::forge {

enum class FillMode {
  automatic,  // values below kBlocksThreshold bytes, blocks above
  values,     // floats through the reference quantizer
  blocks,     // random valid blocks at disk speed
};
constexpr uint64_t kBlocksThreshold = 256ull << 20;
FillMode parse_fill_mode(const std::string& name);

// The weight types of a file: one type for every matrix, or a llama.cpp mixture (Q4_K_M, Q5_K_M).
struct TypeRecipe {
  std::string name;   // as given: "Q4_K", "Q4_K_M", ...
  DType base = DType::Q8_0;
  bool k_mixture = false;  // *_K_M: Q6_K for output, and attn_v / ffn_down in some layers
  bool mxfp4_experts = false;  // MXFP4_MOE: routed experts MXFP4, other matrices `base` (Q8_0)
  uint32_t file_type = 0;  // general.file_type (llama_ftype)
};
// Accepts F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K Q4_K_M Q5_K_M MXFP4_MOE (any case).
TypeRecipe parse_type_recipe(const std::string& name);
// The type one tensor is stored in. Rows that do not split into the type's blocks fall back as in
// llama.cpp's quantizer (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, Q2_K/Q3_K -> Q4_0, then F16).
DType tensor_type(const TypeRecipe& recipe, const Hparams& h, const TensorSpec& t);

// Changes to a preset's shape (0: the preset's value), for the smallest model that shows a
// behaviour of a large one (e.g. gpt-oss-20b's width and heads with 2 layers).
struct ShapeOverride {
  int n_layer = 0;
  int n_embd = 0;
  int n_head = 0;
  int n_head_kv = 0;
  int n_ff = 0;  // the dense FFN and the expert width
  int n_expert = 0;
  int n_expert_used = 0;
  bool any() const { return n_layer || n_embd || n_head || n_head_kv || n_ff || n_expert || n_expert_used; }
};
// The preset with the override applied; throws strata::Error on an inconsistent result (heads
// that do not group, more experts used than exist, a value out of 1..65536).
Hparams with_override(Hparams h, const ShapeOverride& o);

struct ForgeOptions {
  std::string arch;            // may be empty for a named model preset
  std::string preset;
  ShapeOverride shape;
  std::string type;            // a TypeRecipe name
  std::string out;
  uint64_t seed = 42;
  std::string tokenizer_from;  // empty: default_tokenizer_path()
  FillMode fill = FillMode::automatic;
  int n_threads = 0;           // for block filling; 0: hardware concurrency
};

struct ForgeResult {
  Hparams hparams;
  FillMode fill = FillMode::values;  // what automatic resolved to
  size_t n_tensors = 0;
  uint64_t n_params = 0;
  uint64_t n_bytes = 0;  // file size
  double seconds = 0.0;
  std::vector<std::string> fallbacks;  // "tensor: Q4_K -> Q5_0" for rows that did not fit the type
};

// $HOME/.cache/strata/models/SmolLM2-135M-Instruct.Q4_1.gguf
std::string default_tokenizer_path();

// Builds the writer for a forge without writing anything (tests and size estimates use it).
// result receives everything but n_bytes and seconds.
void build(const ForgeOptions& options, gguf::Writer& writer, ForgeResult& result);
// Writes options.out. Throws strata::Error on a bad arch, preset, type, tokenizer or I/O failure.
ForgeResult forge(const ForgeOptions& options);

}  // namespace strata::forge
