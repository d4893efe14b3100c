#pragma once
// Synthetic GGUF tensor tables for planner tests: names, shapes and sizes only (no data), laid
// out one after another as a file would hold them.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "gguf/gguf.h"
#include "model/config.h"

namespace strata::test {

inline constexpr uint64_t kMiB = uint64_t(1) << 20;

struct TensorTable {
  std::vector<gguf::TensorInfo> tensors;
  uint64_t offset = 0;
  void add(const std::string& name, std::vector<int64_t> shape, uint64_t n_bytes) {
    gguf::TensorInfo t;
    t.name = name;
    t.shape = std::move(shape);
    t.n_elements = 1;
    for (int64_t d : t.shape) t.n_elements *= d;
    t.n_bytes = n_bytes;
    t.offset = t.file_offset = offset;
    offset += n_bytes;
    tensors.push_back(std::move(t));
  }
};

// A small llama-shaped config (256 wide, 4 heads); n_expert 0: dense.
inline ModelConfig small_plan_config(int n_layer, int n_expert, int n_expert_used) {
  ModelConfig c;
  c.arch_name = "llama";
  c.n_layer = n_layer;
  c.n_embd = 256;
  c.n_head = 4;
  c.n_head_kv = 2;
  c.head_dim_k = c.head_dim_v = 64;
  c.n_ff = 1024;
  c.n_vocab = 1000;
  c.n_expert = n_expert;
  c.n_expert_used = n_expert_used;
  c.n_ff_expert = n_expert ? 512 : 0;
  return c;
}

// Per layer: 4 attention tensors of 1 MiB, two norms, and either a dense FFN of 3 x 3 MiB or
// n_expert experts of 3 x 1 MiB each (plus a router); a 2 MiB embedding and output head.
inline TensorTable small_plan_table(const ModelConfig& c) {
  TensorTable t;
  t.add("token_embd.weight", {c.n_embd, c.n_vocab}, 2 * kMiB);
  for (int l = 0; l < c.n_layer; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    t.add(b + "attn_norm.weight", {c.n_embd}, 1024);
    for (const char* n : {"attn_q", "attn_k", "attn_v", "attn_output"})
      t.add(b + n + ".weight", {c.n_embd, 1024}, kMiB);
    t.add(b + "ffn_norm.weight", {c.n_embd}, 1024);
    if (c.n_expert == 0) {
      for (const char* n : {"ffn_gate", "ffn_up", "ffn_down"}) t.add(b + n + ".weight", {c.n_embd, 3072}, 3 * kMiB);
    } else {
      t.add(b + "ffn_gate_inp.weight", {c.n_embd, c.n_expert}, 4096);
      for (const char* n : {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"})
        t.add(b + n + ".weight", {c.n_embd, 1024, c.n_expert}, uint64_t(c.n_expert) * kMiB);
    }
  }
  t.add("output_norm.weight", {c.n_embd}, 1024);
  t.add("output.weight", {c.n_embd, c.n_vocab}, 2 * kMiB);
  return t;
}

}  // namespace strata::test

namespace strata::test {

// Mixtral 8x7B's table at Q4_K_M from shapes alone: Q4_K (144 bytes per 256 weights), with
// attn_v and ffn_down in Q6_K (210 bytes) in llama.cpp's "more bits" layers, the head in Q6_K.
inline TensorTable mixtral_q4_k_m_table(ModelConfig* config) {
  ModelConfig& c = *config;
  c = small_plan_config(32, 8, 2);
  c.n_embd = 4096, c.n_head = 32, c.n_head_kv = 8, c.head_dim_k = c.head_dim_v = 128;
  c.n_ff = c.n_ff_expert = 14336, c.n_vocab = 32000;
  auto q4k = [](int64_t n) { return uint64_t(n / 256 * 144); };
  auto q6k = [](int64_t n) { return uint64_t(n / 256 * 210); };
  auto more_bits = [](int l) { return l < 4 || l >= 28 || (l - 4) % 3 == 2; };
  TensorTable t;
  t.add("token_embd.weight", {4096, 32000}, q4k(4096LL * 32000));
  for (int l = 0; l < 32; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    t.add(b + "attn_norm.weight", {4096}, 4096 * 4);
    t.add(b + "attn_q.weight", {4096, 4096}, q4k(4096LL * 4096));
    t.add(b + "attn_k.weight", {4096, 1024}, q4k(4096LL * 1024));
    t.add(b + "attn_v.weight", {4096, 1024}, more_bits(l) ? q6k(4096LL * 1024) : q4k(4096LL * 1024));
    t.add(b + "attn_output.weight", {4096, 4096}, q4k(4096LL * 4096));
    t.add(b + "ffn_norm.weight", {4096}, 4096 * 4);
    t.add(b + "ffn_gate_inp.weight", {4096, 8}, 4096 * 8 * 4);
    t.add(b + "ffn_gate_exps.weight", {4096, 14336, 8}, q4k(4096LL * 14336 * 8));
    t.add(b + "ffn_up_exps.weight", {4096, 14336, 8}, q4k(4096LL * 14336 * 8));
    t.add(b + "ffn_down_exps.weight", {14336, 4096, 8},
          more_bits(l) ? q6k(4096LL * 14336 * 8) : q4k(4096LL * 14336 * 8));
  }
  t.add("output_norm.weight", {4096}, 4096 * 4);
  t.add("output.weight", {4096, 32000}, q6k(4096LL * 32000));
  return t;
}

}  // namespace strata::test
