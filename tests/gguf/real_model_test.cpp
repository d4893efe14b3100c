// Real small models, when present in the model cache: parse, inspect, and re-serialize.
#include <cstdlib>
#include <filesystem>
#include <set>
#include <sstream>

#include "gguf/gguf.h"
#include "gguf/inspect.h"
#include "gguf/writer.h"
#include "gguf_test_util.h"

namespace strata::gguf {
namespace {

std::string model_path(const std::string& name) {
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "") + "/.cache/strata/models/" + name;
}

void check_model(const File& f) {
  uint64_t prev_end = 0;
  std::vector<const TensorInfo*> sorted;
  for (const auto& t : f.tensors()) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (const TensorInfo* t : sorted) {
    EXPECT_GE(t->offset, prev_end) << t->name;
    EXPECT_EQ(t->offset % f.alignment(), 0u) << t->name;
    EXPECT_LE(t->file_offset + t->n_bytes, f.file_size()) << t->name;
    EXPECT_EQ(t->n_bytes, row_bytes(t->type, t->shape[0]) * uint64_t(t->n_rows())) << t->name;
    prev_end = t->offset + t->n_bytes;
  }
  std::ostringstream out;
  print_inspect(f, out, false);
  EXPECT_NE(out.str().find("token_embd.weight"), std::string::npos);
}

TEST(GgufRealModel, SmolLM2) {
  std::string path = model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not present";
  auto f = File::open(path);
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->tensors().size(), 272u);
  EXPECT_EQ(f->architecture(), "llama");
  EXPECT_EQ(f->get_int("llama.block_count"), 30);
  EXPECT_EQ(f->get_int("llama.embedding_length"), 576);
  EXPECT_EQ(f->get("tokenizer.ggml.tokens").as_array().items.size(), 49152u);
  const TensorInfo* embd = f->find_tensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->shape, (std::vector<int64_t>{576, 49152}));
  check_model(*f);

  // Our writer reproduces the file byte for byte from what the reader parsed.
  Writer w(f->alignment());
  for (const auto& [key, value] : f->metadata()) w.set(key, value);
  for (const auto& t : f->tensors()) {
    const uint8_t* src = f->tensor_data(t);
    w.add_tensor(t.name, t.type, t.shape, [src](uint8_t* dst, uint64_t n) { std::memcpy(dst, src, n); });
  }
  std::vector<uint8_t> bytes = w.to_bytes();
  ASSERT_EQ(bytes.size(), f->file_size());
  EXPECT_EQ(0, std::memcmp(bytes.data(), f->base(), bytes.size()));
}

TEST(GgufRealModel, Gemma3) {
  std::string path = model_path("gemma-3-270m-q4_k_m.gguf");
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not present";
  auto f = File::open(path);
  EXPECT_EQ(f->tensors().size(), 236u);
  EXPECT_EQ(f->architecture(), "gemma3");
  EXPECT_GT(f->get_int("gemma3.block_count"), 0);
  std::set<DType> types;
  for (const auto& t : f->tensors()) types.insert(t.type);
  EXPECT_TRUE(types.count(DType::Q4_K) || types.count(DType::Q5_0) || types.count(DType::Q8_0));
  check_model(*f);
}

}  // namespace
}  // namespace strata::gguf
