#include "model/config.h"

#include <algorithm>
#include <cmath>

#include "gguf/gguf.h"
#include "model/architectures.h"
#include "util/error.h"

namespace strata {

const char* arch_name(Arch arch) { return architecture(arch).name; }

int ModelConfig::max_ff() const { return std::max({n_ff, n_expert > 0 ? n_ff_expert : 0, has_shared_expert ? n_ff_shexp : 0}); }

bool ModelConfig::has_recurrent_layers() const {
  for (bool r : layer_recurrent)
    if (r) return true;
  return false;
}

namespace {

// A head count key: one number, or one per layer (llama.cpp's get_key_or_arr), each 0..2^24.
// fallback < 0: the key is required.
std::vector<int> per_layer_heads(const gguf::File& f, const std::string& key, int n_layer, int64_t fallback) {
  const gguf::Value* v = f.find(key);
  std::vector<int64_t> raw;
  if (v && v->type == gguf::ValueType::ARRAY) {
    const auto& items = v->as_array().items;
    if (items.size() != size_t(n_layer))
      throw Error(f.path() + ": " + key + " has " + std::to_string(items.size()) + " entries, block_count is " +
                  std::to_string(n_layer));
    for (const gguf::Value& item : items) raw.push_back(item.as_int());
  } else {
    raw.assign(size_t(n_layer), fallback < 0 ? f.get_int(key) : f.get_int(key, fallback));
  }
  std::vector<int> out;
  for (size_t l = 0; l < raw.size(); ++l) {
    if (raw[l] < 0 || raw[l] > (int64_t(1) << 24))
      throw Error(f.path() + ": " + key + " " + std::to_string(raw[l]) + (raw.size() > 1 ? " at layer " + std::to_string(l) : "") +
                  " is out of range");
    out.push_back(int(raw[l]));
  }
  return out;
}

// The count the attention layers share (the non-zero entries); layers of one model with different
// counts are refused. 0 when no layer has heads (positive() then names the key).
int attention_heads(const gguf::File& f, const std::string& key, const std::vector<int>& per_layer) {
  int n = 0;
  for (size_t l = 0; l < per_layer.size(); ++l) {
    if (per_layer[l] == 0) continue;
    if (n != 0 && per_layer[l] != n)
      throw Error(f.path() + ": " + key + " gives layers different counts (" + std::to_string(n) + ", then " +
                  std::to_string(per_layer[l]) + " at layer " + std::to_string(l) +
                  "): attention layers of differing widths are not supported");
    n = per_layer[l];
  }
  return n;
}

}  // namespace

void read_common_config(const gguf::File& f, ModelConfig& c) {
  const std::string& a = c.arch_name;
  auto positive = [&](const std::string& key, int64_t v) {
    if (v <= 0 || v > (int64_t(1) << 24))
      throw Error(f.path() + ": metadata '" + key + "' = " + std::to_string(v) + " is out of range");
    return int(v);
  };
  c.n_layer = positive(a + ".block_count", f.get_int(a + ".block_count"));
  c.n_embd = positive(a + ".embedding_length", f.get_int(a + ".embedding_length"));
  c.layer_n_head = per_layer_heads(f, a + ".attention.head_count", c.n_layer, -1);
  c.n_head = positive(a + ".attention.head_count", attention_heads(f, a + ".attention.head_count", c.layer_n_head));
  const std::string kv_key = a + ".attention.head_count_kv";
  c.layer_n_head_kv = f.find(kv_key) ? per_layer_heads(f, kv_key, c.n_layer, -1) : c.layer_n_head;  // MHA if absent
  c.n_head_kv = positive(kv_key, attention_heads(f, kv_key, c.layer_n_head_kv));
  for (int l = 0; l < c.n_layer; ++l)
    if ((c.layer_n_head[size_t(l)] == 0) != (c.layer_n_head_kv[size_t(l)] == 0))
      throw Error(f.path() + ": layer " + std::to_string(l) + " has " + std::to_string(c.layer_n_head[size_t(l)]) +
                  " query heads and " + std::to_string(c.layer_n_head_kv[size_t(l)]) + " KV heads");
  if (c.n_head % c.n_head_kv != 0)
    throw Error(f.path() + ": head_count " + std::to_string(c.n_head) + " is not a multiple of head_count_kv " +
                std::to_string(c.n_head_kv));
  c.head_dim_k = positive(a + ".attention.key_length", f.get_int(a + ".attention.key_length", c.n_embd / c.n_head));
  c.head_dim_v = positive(a + ".attention.value_length", f.get_int(a + ".attention.value_length", c.n_embd / c.n_head));
  c.n_ff = int(f.get_int(a + ".feed_forward_length", 0));
  c.n_ctx_train = positive(a + ".context_length", f.get_int(a + ".context_length", 2048));
  c.rms_eps = float(f.get_float(a + ".attention.layer_norm_rms_epsilon", 1e-5));
  c.n_rot = positive(a + ".rope.dimension_count", f.get_int(a + ".rope.dimension_count", c.head_dim_k));
  if (c.n_rot > c.head_dim_k) throw Error(f.path() + ": rope.dimension_count exceeds the head size");
  c.rope_base = float(f.get_float(a + ".rope.freq_base", 10000.0));
  const std::string scaling = f.get_string(a + ".rope.scaling.type", "none");
  const double factor = f.get_float(a + ".rope.scaling.factor", 0.0);
  // As llama.cpp: linear and YaRN divide the frequencies by the factor; YaRN also mixes in the
  // unscaled angles of the fast-rotating dimensions and scales the magnitude (ops::RopeParams).
  if (scaling != "none" && scaling != "linear" && scaling != "yarn")
    throw Error(f.path() + ": rope scaling '" + scaling + "' is not supported (none, linear, yarn)");
  if (factor < 0 || factor > 1024)
    throw Error(f.path() + ": rope.scaling.factor " + std::to_string(factor) + " is out of range");
  if (scaling != "none" && factor > 0) c.rope_scale = float(1.0 / factor);
  if (scaling == "yarn") {
    c.rope_ext_factor = 1.0f;
    if (f.get_float(a + ".rope.scaling.yarn_log_multiplier", 0.0) != 0.0)
      throw Error(f.path() + ": rope.scaling.yarn_log_multiplier (DeepSeek's YaRN) is not supported");
  }
  c.rope_attn_factor = float(f.get_float(a + ".rope.scaling.attn_factor", 1.0));
  c.rope_n_ctx_orig = int(f.get_int(a + ".rope.scaling.original_context_length", c.n_ctx_train));
  c.n_expert = int(f.get_int(a + ".expert_count", 0));
  c.n_expert_used = int(f.get_int(a + ".expert_used_count", 0));
  if (c.n_expert > 0 && (c.n_expert_used <= 0 || c.n_expert_used > c.n_expert))
    throw Error(f.path() + ": expert_used_count " + std::to_string(c.n_expert_used) + " invalid for " +
                std::to_string(c.n_expert) + " experts");
  c.n_ff_expert = int(f.get_int(a + ".expert_feed_forward_length", c.n_ff));
  c.n_ff_shexp = int(f.get_int(a + ".expert_shared_feed_forward_length", c.n_ff));
  c.n_layer_dense_lead = int(f.get_int(a + ".leading_dense_block_count", 0));
  if (c.n_layer_dense_lead < 0 || c.n_layer_dense_lead > c.n_layer)
    throw Error(f.path() + ": leading_dense_block_count " + std::to_string(c.n_layer_dense_lead) + " is out of range");
  c.layer_swa.assign(size_t(c.n_layer), false);
  c.layer_recurrent.assign(size_t(c.n_layer), false);
  c.attn_scale = 1.0f / std::sqrt(float(c.head_dim_k));
  // The vocabulary size is the token table's length (some files omit <arch>.vocab_size).
  const gguf::Value* tokens = f.find("tokenizer.ggml.tokens");
  c.n_vocab = tokens ? int(tokens->as_array().items.size()) : int(f.get_int(a + ".vocab_size", 0));
}

ModelConfig load_config(const gguf::File& file) {
  ModelConfig c;
  c.arch_name = file.architecture();
  if (c.arch_name.empty()) throw Error(file.path() + ": missing general.architecture");
  const ArchitectureEntry& entry = require_architecture(c.arch_name, file.path());
  apply_traits(entry, c);
  read_common_config(file, c);
  if (entry.configure) entry.configure(file, c);
  // A layer the file gives no attention heads must be one that runs without attention.
  for (int l = 0; l < c.n_layer; ++l)
    if (c.layer_n_head[size_t(l)] == 0 && !c.is_recurrent_layer(l))
      throw Error(file.path() + ": " + c.arch_name + ".attention.head_count is 0 at layer " + std::to_string(l) +
                  ", an attention layer");
  return c;
}

}  // namespace strata
