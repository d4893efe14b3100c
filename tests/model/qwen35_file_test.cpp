// What released Qwen3.5 files hold and the forge does not write, on a forged tiny qwen35moe
// (recurrent layers 0 and 2, attention layers 1 and 3) rewritten:
// - per-layer head counts: attention.head_count and head_count_kv as arrays, one entry per layer
//   (llama.cpp's get_key_or_arr), 0 on the recurrent layers: run exactly as the scalar keys;
//   arrays Strata cannot run are refused naming the key and the layer;
// - a multi-token-prediction (nextn) block after the trunk (blk.4.*, nextn_predict_layers 1):
//   the trunk runs alone, as before (tests/tier/plan_test.cpp: the planner leaves the block out).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "gguf/writer.h"
#include "model/config.h"
#include "model/model.h"
#include "runtime/session.h"
#include "support/forge.h"
#include "support/paths.h"
#include "util/error.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

gguf::Value u32s(const std::vector<uint32_t>& v) {
  std::vector<gguf::Value> items;
  for (uint32_t x : v) items.push_back(gguf::Value::u32(x));
  return gguf::Value::array(gguf::ValueType::UINT32, std::move(items));
}

class Qwen35FileTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string tokenizer = test::model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
    if (!fs::exists(tokenizer)) return;
    dir_ = fs::temp_directory_path() / ("strata_qwen35_file_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    scalar_ = (dir_ / "scalar.gguf").string();
    if (!test::forge({"--arch", "qwen35moe", "--preset", "tiny", "--type", "Q8_0", "--seed", "4"}, tokenizer, scalar_))
      scalar_.clear();
  }
  static void TearDownTestSuite() {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  void SetUp() override {
    if (scalar_.empty()) GTEST_SKIP() << "SmolLM2 (the forge's tokenizer source) is not fetched, or forging failed";
  }

  // The forged file with head_count and head_count_kv replaced by these arrays.
  static std::string with_arrays(const std::string& name, const std::vector<uint32_t>& heads,
                                 const std::vector<uint32_t>& kv_heads) {
    auto f = gguf::File::open(scalar_);
    gguf::Writer w;
    for (const auto& [key, value] : f->metadata()) {
      if (key == "qwen35moe.attention.head_count")
        w.set(key, u32s(heads));
      else if (key == "qwen35moe.attention.head_count_kv")
        w.set(key, u32s(kv_heads));
      else
        w.set(key, value);
    }
    for (const gguf::TensorInfo& t : f->tensors()) {
      const uint8_t* data = f->tensor_data(t);
      w.add_tensor(t.name, t.type, t.shape, std::vector<uint8_t>(data, data + t.n_bytes));
    }
    const std::string path = (dir_ / name).string();
    w.write(path);
    return path;
  }

  // The forged file with an MTP block: blk.4.* copies of attention layer 3's tensors, the nextn
  // tensors (zeros), block_count 5 and nextn_predict_layers 1.
  static std::string with_nextn() {
    auto f = gguf::File::open(scalar_);
    const ModelConfig c = load_config(*f);
    gguf::Writer w;
    for (const auto& [key, value] : f->metadata())
      w.set(key, key == "qwen35moe.block_count" ? gguf::Value::u32(5) : value);
    w.set("qwen35moe.nextn_predict_layers", gguf::Value::u32(1));
    for (const gguf::TensorInfo& t : f->tensors()) {
      const uint8_t* data = f->tensor_data(t);
      w.add_tensor(t.name, t.type, t.shape, std::vector<uint8_t>(data, data + t.n_bytes));
      if (t.name.rfind("blk.3.", 0) == 0)
        w.add_tensor("blk.4." + t.name.substr(6), t.type, t.shape, std::vector<uint8_t>(data, data + t.n_bytes));
    }
    auto zeros = [](int64_t n) { return std::vector<uint8_t>(size_t(n) * sizeof(float), 0); };
    w.add_tensor("blk.4.nextn.eh_proj.weight", DType::F32, {2 * c.n_embd, c.n_embd}, zeros(2 * c.n_embd * c.n_embd));
    for (const char* n : {"enorm", "hnorm", "shared_head_norm"})
      w.add_tensor(std::string("blk.4.nextn.") + n + ".weight", DType::F32, {c.n_embd}, zeros(c.n_embd));
    const std::string path = (dir_ / "nextn.gguf").string();
    w.write(path);
    return path;
  }

  static std::vector<float> logits(const std::string& path) {
    auto model = Model::load(path);
    SessionParams sp;
    sp.n_ctx = 64;
    sp.n_threads = 1;
    Session s(*model, sp);
    const float* out = s.eval({1, 17, 300, 4000, 42, 9});
    return std::vector<float>(out, out + model->config().n_vocab);
  }

  static std::string load_error(const std::string& path) {
    auto f = gguf::File::open(path);
    try {
      load_config(*f);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }

  static inline fs::path dir_;
  static inline std::string scalar_;
};

TEST_F(Qwen35FileTest, ArraysWithZerosOnRecurrentLayersRunAsTheScalars) {
  const std::string path = with_arrays("arrays.gguf", {0, 4, 0, 4}, {0, 2, 0, 2});
  auto f = gguf::File::open(path);
  const ModelConfig c = load_config(*f);
  EXPECT_EQ(c.n_head, 4);
  EXPECT_EQ(c.n_head_kv, 2);
  EXPECT_EQ(c.layer_n_head, (std::vector<int>{0, 4, 0, 4}));
  EXPECT_EQ(c.layer_n_head_kv, (std::vector<int>{0, 2, 0, 2}));
  EXPECT_EQ(logits(path), logits(scalar_));
}

TEST_F(Qwen35FileTest, ScalarKeysGiveEveryLayerTheirCount) {
  auto f = gguf::File::open(scalar_);
  const ModelConfig c = load_config(*f);
  EXPECT_EQ(c.layer_n_head, (std::vector<int>(4, 4)));
  EXPECT_EQ(c.layer_n_head_kv, (std::vector<int>(4, 2)));
}

TEST_F(Qwen35FileTest, ArraysStrataCannotRunAreRefused) {
  // An attention layer without heads.
  std::string e = load_error(with_arrays("zero_attention.gguf", {0, 0, 0, 4}, {0, 0, 0, 2}));
  EXPECT_NE(e.find("head_count is 0 at layer 1"), std::string::npos) << e;
  // Attention layers of different widths.
  e = load_error(with_arrays("differ.gguf", {0, 4, 0, 8}, {0, 2, 0, 2}));
  EXPECT_NE(e.find("qwen35moe.attention.head_count gives layers different counts"), std::string::npos) << e;
  EXPECT_NE(e.find("at layer 3"), std::string::npos) << e;
  // Query heads without KV heads.
  e = load_error(with_arrays("kv_zero.gguf", {0, 4, 0, 4}, {0, 2, 0, 0}));
  EXPECT_NE(e.find("layer 3 has 4 query heads and 0 KV heads"), std::string::npos) << e;
  // Not one entry a layer.
  e = load_error(with_arrays("short.gguf", {4, 4, 4}, {2, 2, 2}));
  EXPECT_NE(e.find("has 3 entries, block_count is 4"), std::string::npos) << e;
}

TEST_F(Qwen35FileTest, NextnBlockIsLeftOut) {
  const std::string path = with_nextn();
  auto f = gguf::File::open(path);
  const ModelConfig c = load_config(*f);
  EXPECT_EQ(c.n_layer, 4);
  EXPECT_EQ(c.n_layer_nextn, 1);
  EXPECT_EQ(logits(path), logits(scalar_));
  // And `strata plan` plans it, the block left out (a layer past the trunk was an error).
  const std::string cmd = "timeout 60 " + test::shell_quote(test::strata_bin()) + " plan " + test::shell_quote(path) +
                          " --mem 1T -c 64 > /dev/null 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

}  // namespace
}  // namespace strata
