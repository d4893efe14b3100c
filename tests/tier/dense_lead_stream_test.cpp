// A MoE model whose first layers are dense (leading_dense_block_count, as DeepSeek's): those
// layers' FFN streams like any dense FFN while the MoE layers' experts come from the expert
// cache, bit-identical to a resident run.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <random>

#include "gguf/gguf.h"
#include "gguf/writer.h"
#include "runtime/session.h"
#include "support/forge.h"
#include "support/logits.h"
#include "support/paths.h"
#include "tier/stream/dense_ffn_streamer.h"
#include "tier/stream/expert_streamer.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

class DenseLeadStreamTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string tokenizer = test::model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
    if (!fs::exists(tokenizer)) return;
    // On the real filesystem next to the model cache: O_DIRECT does not work on tmpfs.
    dir_ = fs::path(test::models_dir()).parent_path() / ("dense_lead_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    const std::string moe = (dir_ / "qwen3moe.gguf").string();
    if (!test::forge({"--arch", "qwen3moe", "--preset", "tiny", "--type", "Q8_0", "--seed", "9"}, tokenizer, moe))
      return;
    // The same model with layer 0 dense: its router and experts replaced by an F32 FFN.
    auto f = gguf::File::open(moe);
    const int64_t n_embd = f->get_int("qwen3moe.embedding_length");
    const int64_t n_ff = f->get_int("qwen3moe.feed_forward_length");
    gguf::Writer w;
    for (const auto& [key, value] : f->metadata()) w.set(key, value);
    w.set("qwen3moe.leading_dense_block_count", gguf::Value::u32(1));
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 0.05f);
    auto floats = [&](int64_t n) {
      std::vector<uint8_t> bytes(size_t(n) * 4);
      for (int64_t i = 0; i < n; ++i) {
        const float v = normal(rng);
        std::memcpy(bytes.data() + i * 4, &v, 4);
      }
      return bytes;
    };
    for (const gguf::TensorInfo& t : f->tensors()) {
      if (t.name.starts_with("blk.0.ffn_") && t.name != "blk.0.ffn_norm.weight") continue;
      const uint8_t* data = f->tensor_data(t);
      w.add_tensor(t.name, t.type, t.shape, std::vector<uint8_t>(data, data + t.n_bytes));
      if (t.name == "blk.0.ffn_norm.weight") {
        w.add_tensor("blk.0.ffn_gate.weight", DType::F32, {n_embd, n_ff}, floats(n_embd * n_ff));
        w.add_tensor("blk.0.ffn_up.weight", DType::F32, {n_embd, n_ff}, floats(n_embd * n_ff));
        w.add_tensor("blk.0.ffn_down.weight", DType::F32, {n_ff, n_embd}, floats(n_ff * n_embd));
      }
    }
    path_ = (dir_ / "qwen3moe-dense-lead.gguf").string();
    w.write(path_);
  }
  static void TearDownTestSuite() {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  void SetUp() override {
    if (path_.empty()) GTEST_SKIP() << "SmolLM2 (the forge's tokenizer source) is not fetched, or forging failed";
  }

  static std::vector<float> run(const Model& model, FfnSource* ffn, ExpertSource* experts) {
    return test::run_logits(
        model, ffn, experts,
        {.n_prompt = 10, .prompt_first = 60, .prompt_step = 23, .single_first = 200, .single_step = 31});
  }

  static inline fs::path dir_;
  static inline std::string path_;
};

TEST_F(DenseLeadStreamTest, LeadingDenseLayerStreamsBitIdentically) {
  auto model = Model::load(path_);
  const ModelConfig& c = model->config();
  ASSERT_EQ(c.n_layer_dense_lead, 1);
  EXPECT_FALSE(c.is_moe_layer(0));
  EXPECT_TRUE(c.is_moe_layer(1));
  EXPECT_FALSE(model->weights().layers[0].w_gate.empty());
  EXPECT_TRUE(model->weights().layers[0].gate_exps.empty());
  const std::vector<float> resident = run(*model, nullptr, nullptr);

  std::vector<int> all;
  for (int l = 0; l < c.n_layer; ++l) all.push_back(l);
  const auto matrices = tier::DenseFfnStreamer::whole_layers(c, all);
  ASSERT_EQ(matrices.size(), 3u);  // layer 0's FFN; the MoE layers have no shared expert
  tier::DenseFfnStreamer dense(*model, matrices, size_t(64) << 10, size_t(16) << 10);
  EXPECT_TRUE(dense.streams(0, FfnPart::down));
  tier::ExpertStreamerOptions o;
  o.n_pool_slots = 1;
  tier::ExpertStreamer experts(*model, o);
  EXPECT_FALSE(experts.streams(0));
  EXPECT_TRUE(experts.streams(1));
  const std::vector<float> streamed = run(*model, &dense, &experts);
  ASSERT_EQ(streamed.size(), resident.size());
  EXPECT_EQ(0, std::memcmp(streamed.data(), resident.data(), resident.size() * sizeof(float)));
  EXPECT_EQ(dense.stats().matrices_used, uint64_t(5 * 3));  // a prompt batch and 4 tokens
  EXPECT_GT(dense.stats().pieces_used, dense.stats().matrices_used);
  EXPECT_GT(experts.stats().bytes_read, 0u);
}

}  // namespace
}  // namespace strata
