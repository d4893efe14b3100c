#include "forge/forge.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>

#include "forge/weights.h"
#include "gguf/gguf.h"
#include "gguf/writer.h"
#include "model/config.h"
#include "tensor/kernels.h"
#include "util/error.h"

namespace strata::forge {
namespace {

namespace fs = std::filesystem;
using gguf::Value;

// A scratch directory with a small hermetic tokenizer GGUF (300 tokens) in it.
class ForgeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("strata_forge_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    gguf::Writer w;
    std::vector<std::string> tokens;
    for (int i = 0; i < 300; ++i) tokens.push_back("t" + std::to_string(i));
    w.set("general.architecture", Value::str("llama"));
    w.set("tokenizer.ggml.model", Value::str("gpt2"));
    w.set("tokenizer.ggml.pre", Value::str("default"));
    w.set("tokenizer.ggml.tokens", Value::strings(tokens));
    w.set("tokenizer.ggml.token_type", Value::i32s(std::vector<int32_t>(300, 1)));
    w.set("tokenizer.ggml.merges", Value::strings({"t 1"}));
    w.set("tokenizer.ggml.bos_token_id", Value::u32(1));
    w.set("tokenizer.ggml.eos_token_id", Value::u32(2));
    w.set("some.other.key", Value::u32(7));
    tokenizer_ = (dir_ / "tok.gguf").string();
    w.write(tokenizer_);
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static ForgeOptions options(const std::string& arch, const std::string& preset, const std::string& type) {
    ForgeOptions o;
    o.arch = arch;
    o.preset = preset;
    o.type = type;
    o.tokenizer_from = tokenizer_;
    o.out = (dir_ / (arch + "-" + preset + "-" + type + ".gguf")).string();
    return o;
  }

  static std::vector<uint8_t> bytes_of(const ForgeOptions& o) {
    gguf::Writer w(32);
    ForgeResult r;
    build(o, w, r);
    return w.to_bytes();
  }

  static inline fs::path dir_;
  static inline std::string tokenizer_;
};

const char* kArchs[] = {"llama", "qwen2", "qwen3", "qwen3moe", "gemma3", "qwen35", "qwen35moe"};

std::vector<float> dequantize(const gguf::File& f, const gguf::TensorInfo& t) {
  std::vector<float> out(static_cast<size_t>(t.n_elements));
  const uint8_t* src = f.tensor_data(t);
  if (t.type == DType::F32) {
    std::memcpy(out.data(), src, out.size() * 4);
  } else {
    kernels::kernels_for(t.type).dequantize(src, out.data(), t.n_elements);
  }
  return out;
}

void mean_std(const std::vector<float>& v, double& mean, double& std) {
  double s = 0, s2 = 0;
  for (float x : v) {
    s += x;
    s2 += double(x) * x;
  }
  mean = s / double(v.size());
  std = std::sqrt(std::max(0.0, s2 / double(v.size()) - mean * mean));
}

TEST_F(ForgeTest, EveryTinyArchRoundTrips) {
  for (const char* arch : kArchs) {
    SCOPED_TRACE(arch);
    ForgeOptions o = options(arch, "tiny", "Q8_0");
    const ForgeResult r = forge(o);
    auto f = gguf::File::open(o.out);
    EXPECT_EQ(f->architecture(), arch);
    const std::string a = arch;
    const Hparams& h = r.hparams;
    EXPECT_EQ(f->get_int(a + ".block_count"), h.n_layer);
    EXPECT_EQ(f->get_int(a + ".embedding_length"), 64);
    EXPECT_EQ(f->get_int(a + ".feed_forward_length"), 128);
    EXPECT_EQ(f->get_int(a + ".attention.head_count"), 4);
    EXPECT_EQ(f->get_int(a + ".attention.head_count_kv"), 2);
    EXPECT_EQ(f->get_int(a + ".context_length"), h.n_ctx);
    EXPECT_GT(f->get_float(a + ".rope.freq_base"), 0.0);
    EXPECT_GT(f->get_float(a + ".attention.layer_norm_rms_epsilon"), 0.0);
    EXPECT_EQ(f->get_int("general.file_type"), 7);
    EXPECT_EQ(f->get_int("general.alignment"), 32);
    // The tokenizer is copied whole, nothing else from its file.
    EXPECT_EQ(f->get("tokenizer.ggml.tokens").as_array().items.size(), 300u);
    EXPECT_EQ(f->get_string("tokenizer.ggml.model"), "gpt2");
    EXPECT_EQ(f->get_int("tokenizer.ggml.eos_token_id"), 2);
    EXPECT_EQ(f->find("some.other.key"), nullptr);
    EXPECT_EQ(f->get_int(a + ".vocab_size"), 300);

    // Tensors exactly as listed, in order, with their types.
    const auto specs = tensor_list(h);
    ASSERT_EQ(f->tensors().size(), specs.size());
    for (size_t i = 0; i < specs.size(); ++i) {
      const auto& t = f->tensors()[i];
      EXPECT_EQ(t.name, specs[i].name);
      EXPECT_EQ(t.shape, specs[i].shape) << t.name;
      const bool f32 = specs[i].kind == TensorKind::norm || specs[i].kind == TensorKind::bias ||
                       specs[i].kind == TensorKind::router;
      EXPECT_EQ(t.type, f32 ? DType::F32 : DType::Q8_0) << t.name;
    }
    EXPECT_EQ(r.n_tensors, specs.size());
    EXPECT_EQ(r.n_bytes, f->file_size());
    EXPECT_LT(r.n_bytes, 2u << 20);
  }
}

TEST_F(ForgeTest, ArchitectureSpecificTensorsAndKeys) {
  auto open = [&](const std::string& arch, const std::string& preset = "tiny") {
    ForgeOptions o = options(arch, preset, "F16");
    forge(o);
    return gguf::File::open(o.out);
  };
  using Shape = std::vector<int64_t>;
  {
    auto f = open("llama");
    EXPECT_EQ(f->get_int("llama.rope.dimension_count"), 16);
    EXPECT_EQ(f->find_tensor("blk.1.ffn_gate.weight")->shape, (Shape{64, 128}));
    EXPECT_EQ(f->find_tensor("blk.1.ffn_down.weight")->shape, (Shape{128, 64}));
    EXPECT_EQ(f->find_tensor("blk.0.attn_k.weight")->shape, (Shape{64, 32}));
    EXPECT_EQ(f->find_tensor("output.weight")->shape, (Shape{64, 300}));
    EXPECT_EQ(f->find_tensor("token_embd.weight")->type, DType::F16);
    EXPECT_EQ(f->find("llama.expert_count"), nullptr);
  }
  {
    auto f = open("llama", "tiny-moe");  // Mixtral form
    EXPECT_EQ(f->get_int("llama.expert_count"), 4);
    EXPECT_EQ(f->get_int("llama.expert_used_count"), 2);
    EXPECT_EQ(f->find_tensor("blk.0.ffn_gate_inp.weight")->shape, (Shape{64, 4}));
    EXPECT_EQ(f->find_tensor("blk.0.ffn_gate_inp.weight")->type, DType::F32);
    EXPECT_EQ(f->find_tensor("blk.0.ffn_gate_exps.weight")->shape, (Shape{64, 128, 4}));
    EXPECT_EQ(f->find_tensor("blk.0.ffn_up_exps.weight")->shape, (Shape{64, 128, 4}));
    EXPECT_EQ(f->find_tensor("blk.0.ffn_down_exps.weight")->shape, (Shape{128, 64, 4}));
    EXPECT_EQ(f->find_tensor("blk.0.ffn_gate.weight"), nullptr);
  }
  {
    auto f = open("qwen2");
    EXPECT_EQ(f->find_tensor("blk.0.attn_q.bias")->shape, (Shape{64}));
    EXPECT_EQ(f->find_tensor("blk.0.attn_k.bias")->shape, (Shape{32}));
    EXPECT_EQ(f->find_tensor("blk.0.attn_v.bias")->shape, (Shape{32}));
    EXPECT_EQ(f->find_tensor("output.weight"), nullptr);  // tied
  }
  {
    auto f = open("qwen3");
    EXPECT_EQ(f->get_int("qwen3.attention.key_length"), 32);
    EXPECT_EQ(f->get_int("qwen3.attention.value_length"), 32);
    EXPECT_EQ(f->find_tensor("blk.0.attn_q.weight")->shape, (Shape{64, 128}));
    EXPECT_EQ(f->find_tensor("blk.0.attn_output.weight")->shape, (Shape{128, 64}));
    EXPECT_EQ(f->find_tensor("blk.0.attn_q_norm.weight")->shape, (Shape{32}));
    EXPECT_EQ(f->find_tensor("blk.0.attn_k_norm.weight")->shape, (Shape{32}));
    EXPECT_EQ(f->find_tensor("blk.0.attn_q.bias"), nullptr);
  }
  {
    auto f = open("qwen3moe");
    EXPECT_EQ(f->get_int("qwen3moe.expert_count"), 4);
    EXPECT_EQ(f->get_int("qwen3moe.expert_used_count"), 2);
    EXPECT_EQ(f->get_int("qwen3moe.expert_feed_forward_length"), 64);
    EXPECT_EQ(f->get_int("qwen3moe.attention.key_length"), 32);
    EXPECT_EQ(f->find_tensor("blk.1.ffn_gate_inp.weight")->shape, (Shape{64, 4}));
    EXPECT_EQ(f->find_tensor("blk.1.ffn_gate_exps.weight")->shape, (Shape{64, 64, 4}));
    EXPECT_EQ(f->find_tensor("blk.1.ffn_down_exps.weight")->shape, (Shape{64, 64, 4}));
    EXPECT_NE(f->find_tensor("blk.1.attn_k_norm.weight"), nullptr);
  }
  {
    auto f = open("gemma3");
    EXPECT_EQ(f->get_int("gemma3.block_count"), 6);
    EXPECT_EQ(f->get_int("gemma3.attention.sliding_window"), 16);
    EXPECT_FLOAT_EQ(float(f->get_float("gemma3.rope.freq_base")), 1e6f);
    EXPECT_FLOAT_EQ(float(f->get_float("gemma3.rope.freq_base_swa")), 1e4f);
    EXPECT_EQ(f->get_int("gemma3.attention.key_length"), 32);
    EXPECT_NE(f->find_tensor("blk.5.post_attention_norm.weight"), nullptr);
    EXPECT_NE(f->find_tensor("blk.5.post_ffw_norm.weight"), nullptr);
    EXPECT_NE(f->find_tensor("blk.5.attn_q_norm.weight"), nullptr);
    EXPECT_EQ(f->find_tensor("output.weight"), nullptr);  // tied
  }
}

TEST_F(ForgeTest, SameSeedSameBytesOtherSeedOtherBytes) {
  for (const char* type : {"Q4_0", "Q6_K", "BF16"}) {
    SCOPED_TRACE(type);
    ForgeOptions o = options("qwen3moe", "tiny", type);
    const auto a = bytes_of(o);
    const auto b = bytes_of(o);
    EXPECT_EQ(a, b);
    o.seed = 43;
    EXPECT_NE(a, bytes_of(o));
  }
  // The file on disk is the same bytes as the in-memory serialization.
  ForgeOptions o = options("llama", "tiny", "Q4_1");
  forge(o);
  std::ifstream in(o.out, std::ios::binary);
  std::vector<uint8_t> disk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(disk, bytes_of(o));
}

TEST_F(ForgeTest, ValueWeightsHaveTheIntendedStatistics) {
  ForgeOptions o = options("gemma3", "tiny", "Q8_0");
  forge(o);
  auto f = gguf::File::open(o.out);
  double mean, std;
  mean_std(dequantize(*f, *f->find_tensor("blk.0.ffn_up.weight")), mean, std);
  EXPECT_NEAR(mean, 0.0, 0.003);
  EXPECT_NEAR(std, 0.02, 0.002);
  mean_std(dequantize(*f, *f->find_tensor("blk.0.attn_norm.weight")), mean, std);
  EXPECT_NEAR(mean, 1.0, 0.01);
  EXPECT_NEAR(std, 0.02, 0.01);
}

TEST_F(ForgeTest, KQuantsFallBackOnNarrowRowsAndApplyOnSmall) {
  ForgeOptions o = options("llama", "tiny", "Q4_K");
  gguf::Writer w;
  ForgeResult r;
  build(o, w, r);
  EXPECT_FALSE(r.fallbacks.empty());
  Hparams h = find_preset("tiny", "llama");
  h.n_vocab = 300;
  const TypeRecipe q4k = parse_type_recipe("q4_k");
  for (const auto& t : tensor_list(h)) {
    if (t.kind == TensorKind::matrix) EXPECT_EQ(tensor_type(q4k, h, t), DType::Q5_0) << t.name;
  }
  Hparams s = find_preset("small", "qwen3moe");
  s.n_vocab = 300;
  for (const auto& t : tensor_list(s)) {
    if (t.kind == TensorKind::matrix || t.kind == TensorKind::embedding || t.kind == TensorKind::output)
      EXPECT_EQ(tensor_type(q4k, s, t), DType::Q4_K) << t.name;
  }
  // Q6_K on 32-multiples falls back to Q8_0; a row of 48 is no block multiple at all and goes F16.
  TensorSpec odd{"x", {48, 2}, TensorKind::matrix, 0};
  EXPECT_EQ(tensor_type(parse_type_recipe("Q6_K"), h, odd), DType::F16);
  TensorSpec row64{"x", {64, 2}, TensorKind::matrix, 0};
  EXPECT_EQ(tensor_type(parse_type_recipe("Q6_K"), h, row64), DType::Q8_0);
}

TEST_F(ForgeTest, Q4KMMixtureUpgradesOutputAttnVAndFfnDown) {
  Hparams h = find_preset("llama-3-8b", "");
  h.n_vocab = 49152;
  const TypeRecipe m = parse_type_recipe("Q4_K_M");
  EXPECT_EQ(m.file_type, 15u);
  std::map<std::string, DType> types;
  for (const auto& t : tensor_list(h)) types[t.name] = tensor_type(m, h, t);
  EXPECT_EQ(types["output.weight"], DType::Q6_K);
  EXPECT_EQ(types["token_embd.weight"], DType::Q4_K);
  EXPECT_EQ(types["blk.0.attn_v.weight"], DType::Q6_K);   // first eighth
  EXPECT_EQ(types["blk.4.attn_v.weight"], DType::Q4_K);
  EXPECT_EQ(types["blk.6.ffn_down.weight"], DType::Q6_K);  // (6 - 4) % 3 == 2
  EXPECT_EQ(types["blk.31.ffn_down.weight"], DType::Q6_K);  // last eighth
  EXPECT_EQ(types["blk.10.attn_q.weight"], DType::Q4_K);
  EXPECT_EQ(types["blk.10.attn_norm.weight"], DType::F32);
}

TEST_F(ForgeTest, FullSizePresetsHaveTheRealShapes) {
  struct Want {
    const char* preset;
    const char* arch;
    size_t n_tensors;
    double billions;  // with the 300-token test vocabulary
  };
  // Llama 3 8B: 8.03 B with its 128256-token vocabulary, less 2 x 4096 x (128256 - 300).
  const Want wants[] = {
      {"llama-3-8b", "llama", 2 + 32 * 9 + 1, 8.030 - 2 * 4096 * (128256 - 300) / 1e9},
      {"llama-3-70b", "llama", 2 + 80 * 9 + 1, 70.554 - 2 * 8192 * (128256 - 300) / 1e9},
      {"mixtral-8x7b", "llama", 2 + 32 * 10 + 1, 46.703 - 2 * 4096 * (32000 - 300) / 1e9},
      {"qwen3-30b-a3b", "qwen3moe", 2 + 48 * 12 + 1, 30.532 - 2 * 2048 * (151936 - 300) / 1e9},
  };
  for (const auto& want : wants) {
    SCOPED_TRACE(want.preset);
    ForgeOptions o = options("", want.preset, "Q4_K");
    gguf::Writer w;
    ForgeResult r;
    build(o, w, r);
    EXPECT_EQ(arch_name(r.hparams.arch), std::string(want.arch));
    EXPECT_EQ(r.n_tensors, want.n_tensors);
    EXPECT_NEAR(double(r.n_params) / 1e9, want.billions, 0.01);
    EXPECT_TRUE(r.fallbacks.empty());
  }
  Hparams q = find_preset("qwen3-30b-a3b", "qwen3moe");
  q.n_vocab = 300;
  for (const auto& t : tensor_list(q)) {
    if (t.name == "blk.47.ffn_down_exps.weight") EXPECT_EQ(t.shape, (std::vector<int64_t>{768, 2048, 128}));
    if (t.name == "blk.0.attn_q.weight") EXPECT_EQ(t.shape, (std::vector<int64_t>{2048, 4096}));
  }
}

// A preset's shape changed for the smallest model that shows a large one's behaviour: gpt-oss-20b's
// width and 64/8 heads, with 2 layers and 4 experts.
TEST_F(ForgeTest, ShapeOverrideChangesOnlyWhatItNames) {
  ForgeOptions o = options("", "gpt-oss-20b", "MXFP4_MOE");
  o.shape.n_layer = 2;
  o.shape.n_expert = 4;
  o.shape.n_expert_used = 2;
  gguf::Writer w;
  ForgeResult r;
  build(o, w, r);
  const Hparams& h = r.hparams;
  EXPECT_EQ(h.n_layer, 2);
  EXPECT_EQ(h.n_expert, 4);
  EXPECT_EQ(h.n_expert_used, 2);
  EXPECT_EQ(h.n_embd, 2880);
  EXPECT_EQ(h.n_head, 64);
  EXPECT_EQ(h.n_head_kv, 8);
  EXPECT_EQ(h.sliding_window, 128);
  EXPECT_EQ(r.n_tensors, 3 + 2 * 19u);
  Hparams base = find_preset("tiny", "gpt-oss");
  ShapeOverride heads;
  heads.n_head = 8;
  heads.n_head_kv = 4;
  heads.n_ff = 96;
  const Hparams t = with_override(base, heads);
  EXPECT_EQ(t.n_head, 8);
  EXPECT_EQ(t.n_head_kv, 4);
  EXPECT_EQ(t.n_ff, 96);
  EXPECT_EQ(t.n_ff_exp, 96);
  EXPECT_EQ(t.n_layer, base.n_layer);
  ShapeOverride bad;
  bad.n_head = 6;  // over the tiny preset's 2 KV heads: fine; over 4: not
  bad.n_head_kv = 4;
  EXPECT_THROW(with_override(base, bad), Error);
  bad = {};
  bad.n_expert_used = 5;  // of 4
  EXPECT_THROW(with_override(base, bad), Error);
  bad = {};
  bad.n_expert = 4;
  EXPECT_THROW(with_override(find_preset("tiny", "llama"), bad), Error);  // dense
  bad = {};
  bad.n_layer = -1;
  EXPECT_THROW(with_override(base, bad), Error);
}

TEST_F(ForgeTest, BadArgumentsGiveClearErrors) {
  auto message = [&](ForgeOptions o) -> std::string {
    try {
      forge(o);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(message(options("gpt9", "tiny", "Q8_0")).find("unknown architecture 'gpt9'"), std::string::npos);
  EXPECT_NE(message(options("llama", "huge", "Q8_0")).find("unknown preset 'huge'"), std::string::npos);
  EXPECT_NE(message(options("llama", "tiny", "Q7_K")).find("unsupported type 'Q7_K'"), std::string::npos);
  EXPECT_NE(message(options("qwen2", "mixtral-8x7b", "Q8_0")).find("is a llama model"), std::string::npos);
  EXPECT_NE(message(options("", "tiny", "Q8_0")).find("needs --arch"), std::string::npos);
  EXPECT_NE(message(options("qwen3", "tiny-moe", "Q8_0")).find("tiny-moe"), std::string::npos);
  ForgeOptions o = options("llama", "tiny", "Q8_0");
  o.tokenizer_from = (dir_ / "missing.gguf").string();
  EXPECT_NE(message(o).find("does not exist"), std::string::npos);
  o = options("llama", "tiny", "Q8_0");
  o.out = "";
  EXPECT_NE(message(o).find("--out"), std::string::npos);
  EXPECT_THROW(parse_fill_mode("fast"), Error);
}

TEST(ForgeBlocks, RandomBlocksDequantizeToSaneWeights) {
  const DType types[] = {DType::F32, DType::F16, DType::BF16, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,
                         DType::Q8_0, DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K};
  const int64_t n = 256 * 1024;
  for (DType type : types) {
    SCOPED_TRACE(type_name(type));
    std::vector<uint8_t> buf(row_bytes(type, n));
    fill_blocks(type, 7, buf.data(), buf.size(), 1);
    std::vector<uint8_t> again(buf.size());
    fill_blocks(type, 7, again.data(), again.size(), 3);  // the thread count never changes the bytes
    EXPECT_EQ(buf, again);
    std::vector<float> w(static_cast<size_t>(n));
    if (type == DType::F32) {
      std::memcpy(w.data(), buf.data(), buf.size());
    } else {
      kernels::kernels_for(type).dequantize(buf.data(), w.data(), n);
    }
    double mean, std;
    for (float x : w) ASSERT_TRUE(std::isfinite(x));
    mean_std(w, mean, std);
    EXPECT_GT(std, 0.005);
    EXPECT_LT(std, 0.08);
    EXPECT_LT(std::fabs(mean), 0.03);
  }
}

TEST_F(ForgeTest, BlockFillWritesAValidFile) {
  ForgeOptions o = options("qwen3moe", "small", "Q4_K_M");
  o.fill = FillMode::blocks;
  const ForgeResult r = forge(o);
  EXPECT_EQ(r.fill, FillMode::blocks);
  auto f = gguf::File::open(o.out);
  for (const auto& t : f->tensors()) {
    const auto w = dequantize(*f, t);
    for (float x : w) ASSERT_TRUE(std::isfinite(x)) << t.name;
  }
  EXPECT_EQ(f->find_tensor("output.weight")->type, DType::Q6_K);
}

TEST_F(ForgeTest, DefaultTokenizerWhenPresent) {
  if (!fs::exists(default_tokenizer_path())) GTEST_SKIP() << default_tokenizer_path() << " not present";
  ForgeOptions o = options("llama", "tiny", "Q4_0");
  o.tokenizer_from = "";
  const ForgeResult r = forge(o);
  EXPECT_EQ(r.hparams.n_vocab, 49152);
  auto f = gguf::File::open(o.out);
  EXPECT_EQ(f->find_tensor("token_embd.weight")->shape, (std::vector<int64_t>{64, 49152}));
  EXPECT_NE(f->find("tokenizer.chat_template"), nullptr);
  EXPECT_LT(r.n_bytes, 8u << 20);
}

// The forged SmolLM2 135M has exactly the tensors of the published GGUF.
TEST_F(ForgeTest, SmolLM2PresetMatchesTheRealModelWhenPresent) {
  const std::string real = default_tokenizer_path();
  if (!fs::exists(real)) GTEST_SKIP() << real << " not present";
  auto f = gguf::File::open(real);
  ForgeOptions o = options("", "smollm2-135m", "Q8_0");
  o.tokenizer_from = real;
  gguf::Writer w;
  ForgeResult r;
  build(o, w, r);
  std::map<std::string, std::vector<int64_t>> forged, published;
  for (const auto& t : tensor_list(r.hparams)) forged[t.name] = t.shape;
  for (const auto& t : f->tensors()) published[t.name] = t.shape;
  EXPECT_EQ(forged, published);
  const Hparams& h = r.hparams;
  const std::map<std::string, int64_t> mine = {
      {"llama.block_count", h.n_layer},
      {"llama.embedding_length", h.n_embd},
      {"llama.feed_forward_length", h.n_ff},
      {"llama.attention.head_count", h.n_head},
      {"llama.attention.head_count_kv", h.n_head_kv},
      {"llama.rope.dimension_count", h.head_dim},
      {"llama.context_length", h.n_ctx},
      {"llama.vocab_size", h.n_vocab},
  };
  for (const auto& [key, value] : mine) {
    EXPECT_EQ(f->get_int(key), value) << key;
  }
  EXPECT_FLOAT_EQ(float(f->get_float("llama.rope.freq_base")), h.rope_base);
}

// The forged Gemma 3 270M has exactly the tensors (names and shapes) of the published GGUF.
TEST_F(ForgeTest, Gemma3PresetMatchesTheRealModelWhenPresent) {
  const char* home = std::getenv("HOME");
  const std::string real = std::string(home ? home : "") + "/.cache/strata/models/gemma-3-270m-q4_k_m.gguf";
  if (!fs::exists(real)) GTEST_SKIP() << real << " not present";
  auto f = gguf::File::open(real);
  ForgeOptions o = options("", "gemma-3-270m", "Q8_0");
  o.tokenizer_from = real;
  gguf::Writer w;
  ForgeResult r;
  build(o, w, r);
  std::map<std::string, std::vector<int64_t>> forged, published;
  for (const auto& t : tensor_list(r.hparams)) forged[t.name] = t.shape;
  for (const auto& t : f->tensors()) published[t.name] = t.shape;
  EXPECT_EQ(forged, published);
  const Hparams& h = r.hparams;
  const std::map<std::string, int64_t> mine = {
      {"gemma3.block_count", h.n_layer},
      {"gemma3.embedding_length", h.n_embd},
      {"gemma3.feed_forward_length", h.n_ff},
      {"gemma3.attention.head_count", h.n_head},
      {"gemma3.attention.head_count_kv", h.n_head_kv},
      {"gemma3.attention.key_length", h.head_dim},
      {"gemma3.attention.sliding_window", h.sliding_window},
      {"gemma3.context_length", h.n_ctx},
  };
  for (const auto& [key, value] : mine) {
    EXPECT_EQ(f->get_int(key), value) << key;
  }
}

}  // namespace
}  // namespace strata::forge

namespace strata::forge {
namespace {

// qwen2moe (Qwen1.5-MoE): qwen2 attention with biases, routed experts, and a shared expert with
// its 1-D gate, as llama.cpp's loader expects them; the model loads it with its traits.
TEST_F(ForgeTest, Qwen2MoeHasASharedExpert) {
  ForgeOptions o = options("qwen2moe", "tiny", "Q8_0");
  forge(o);
  auto f = gguf::File::open(o.out);
  using Shape = std::vector<int64_t>;
  EXPECT_EQ(f->get_int("qwen2moe.expert_count"), 4);
  EXPECT_EQ(f->get_int("qwen2moe.expert_feed_forward_length"), 64);
  EXPECT_EQ(f->get_int("qwen2moe.expert_shared_feed_forward_length"), 128);
  EXPECT_EQ(f->find_tensor("blk.1.ffn_gate_inp_shexp.weight")->shape, (Shape{64}));
  EXPECT_EQ(f->find_tensor("blk.1.ffn_gate_inp_shexp.weight")->type, DType::F32);
  EXPECT_EQ(f->find_tensor("blk.1.ffn_gate_shexp.weight")->shape, (Shape{64, 128}));
  EXPECT_EQ(f->find_tensor("blk.1.ffn_down_shexp.weight")->shape, (Shape{128, 64}));
  EXPECT_EQ(f->find_tensor("blk.1.ffn_up_exps.weight")->shape, (Shape{64, 64, 4}));
  EXPECT_EQ(f->find_tensor("blk.0.attn_q.bias")->shape, (Shape{64}));
  EXPECT_EQ(f->find_tensor("blk.0.ffn_gate.weight"), nullptr);
  const ModelConfig c = load_config(*f);
  EXPECT_EQ(c.arch, Arch::qwen2moe);
  EXPECT_TRUE(c.has_shared_expert);
  EXPECT_TRUE(c.has_qkv_bias);
  EXPECT_EQ(c.n_ff_shexp, 128);
}

// gpt-oss as it ships (MXFP4_MOE): routed experts MXFP4, other matrices Q8_0, biases, sinks and
// router F32; the keys llama.cpp's openai-moe loader reads; the model loads with its traits.
TEST_F(ForgeTest, GptOssWithMxfp4Experts) {
  ForgeOptions o = options("gpt-oss", "tiny", "MXFP4_MOE");
  o.fill = FillMode::blocks;  // the random-block generator writes valid MXFP4 blocks too
  forge(o);
  auto f = gguf::File::open(o.out);
  EXPECT_EQ(f->architecture(), "gpt-oss");
  EXPECT_EQ(f->get_int("general.file_type"), 38);
  EXPECT_EQ(f->get_int("gpt-oss.attention.sliding_window"), 8);
  EXPECT_EQ(f->get_string("gpt-oss.rope.scaling.type"), "yarn");
  EXPECT_EQ(f->get_int("gpt-oss.rope.scaling.original_context_length"), 4096);
  EXPECT_EQ(f->get_int("gpt-oss.expert_feed_forward_length"), 64);
  int n_mxfp4 = 0;
  for (const auto& t : f->tensors()) {
    const bool experts = t.name.ends_with("_exps.weight");
    const bool vector = t.name.ends_with(".bias") || t.name.ends_with("norm.weight") ||
                        t.name.ends_with("attn_sinks.weight") || t.name.ends_with("ffn_gate_inp.weight");
    EXPECT_EQ(t.type, experts ? DType::MXFP4 : vector ? DType::F32 : DType::Q8_0) << t.name;
    n_mxfp4 += experts;
    if (experts) {  // every value finite and small
      for (float x : dequantize(*f, t)) ASSERT_TRUE(std::isfinite(x) && std::fabs(x) < 1.0f) << t.name;
    }
  }
  EXPECT_EQ(n_mxfp4, 3 * 4);
  ASSERT_NE(f->find_tensor("blk.0.attn_sinks.weight"), nullptr);
  EXPECT_EQ(f->find_tensor("blk.0.attn_sinks.weight")->shape, (std::vector<int64_t>{4}));
  EXPECT_EQ(f->find_tensor("blk.3.ffn_down_exps.bias")->shape, (std::vector<int64_t>{64, 4}));
  EXPECT_NE(f->find_tensor("blk.1.post_attention_norm.weight"), nullptr);
  EXPECT_EQ(f->find_tensor("blk.1.ffn_norm.weight"), nullptr);
  const ModelConfig c = load_config(*f);
  EXPECT_EQ(c.arch, Arch::gptoss);
  EXPECT_EQ(c.activation, Activation::swiglu_oai);
  EXPECT_EQ(c.gating, ExpertGating::softmax_weight);
  EXPECT_TRUE(c.has_attn_sinks && c.has_attn_out_bias && c.has_expert_biases && c.has_qkv_bias);
  EXPECT_EQ(c.sliding_window, 8);
  EXPECT_EQ(c.layer_swa, (std::vector<bool>{true, false, true, false}));  // llama.cpp's pattern of 2
  EXPECT_EQ(c.rope_ext_factor, 1.0f);
  EXPECT_FLOAT_EQ(c.rope_scale, 1.0f / 32);
}

// Qwen3.5 MoE as convert_hf_to_gguf writes it: the ssm.* keys, full_attention_interval and the
// M-RoPE sections llama.cpp's qwen35moe loader reads; delta-rule tensors on the recurrent layers,
// gated q (twice the heads' width) on the full-attention ones; the model loads as a hybrid.
TEST_F(ForgeTest, Qwen35MoeHybridLayers) {
  ForgeOptions o = options("qwen35moe", "tiny", "Q8_0");
  forge(o);
  auto f = gguf::File::open(o.out);
  using Shape = std::vector<int64_t>;
  EXPECT_EQ(f->get_int("qwen35moe.ssm.conv_kernel"), 4);
  EXPECT_EQ(f->get_int("qwen35moe.ssm.state_size"), 16);
  EXPECT_EQ(f->get_int("qwen35moe.ssm.group_count"), 2);
  EXPECT_EQ(f->get_int("qwen35moe.ssm.time_step_rank"), 4);
  EXPECT_EQ(f->get_int("qwen35moe.ssm.inner_size"), 64);
  EXPECT_EQ(f->get_int("qwen35moe.full_attention_interval"), 2);
  EXPECT_EQ(f->get_int("qwen35moe.rope.dimension_count"), 8);
  EXPECT_EQ(f->get("qwen35moe.rope.dimension_sections").as_array().items.size(), 4u);
  // Layer 0 (delta rule): conv_dim = 2 * 2 * 16 + 64 = 128.
  EXPECT_EQ(f->find_tensor("blk.0.attn_qkv.weight")->shape, (Shape{64, 128}));
  EXPECT_EQ(f->find_tensor("blk.0.attn_gate.weight")->shape, (Shape{64, 64}));
  EXPECT_EQ(f->find_tensor("blk.0.ssm_conv1d.weight")->shape, (Shape{4, 128}));
  EXPECT_EQ(f->find_tensor("blk.0.ssm_conv1d.weight")->type, DType::F32);
  EXPECT_EQ(f->find_tensor("blk.0.ssm_a")->shape, (Shape{4}));
  EXPECT_EQ(f->find_tensor("blk.0.ssm_dt.bias")->shape, (Shape{4}));
  EXPECT_EQ(f->find_tensor("blk.0.ssm_norm.weight")->shape, (Shape{16}));
  EXPECT_EQ(f->find_tensor("blk.0.ssm_out.weight")->shape, (Shape{64, 64}));
  EXPECT_EQ(f->find_tensor("blk.0.attn_q.weight"), nullptr);
  // Layer 1 (full attention): q and its gate, 4 heads of 32 each.
  EXPECT_EQ(f->find_tensor("blk.1.attn_q.weight")->shape, (Shape{64, 256}));
  EXPECT_EQ(f->find_tensor("blk.1.attn_output.weight")->shape, (Shape{128, 64}));
  EXPECT_EQ(f->find_tensor("blk.1.attn_qkv.weight"), nullptr);
  EXPECT_NE(f->find_tensor("blk.1.post_attention_norm.weight"), nullptr);
  EXPECT_EQ(f->find_tensor("blk.1.ffn_norm.weight"), nullptr);
  EXPECT_EQ(f->find_tensor("blk.3.ffn_gate_inp_shexp.weight")->shape, (Shape{64}));
  // The decay rate is negative (a decay below 1 a token).
  for (float a : dequantize(*f, *f->find_tensor("blk.2.ssm_a"))) EXPECT_LT(a, 0.0f);
  const ModelConfig c = load_config(*f);
  EXPECT_EQ(c.arch, Arch::qwen35moe);
  EXPECT_EQ(c.layer_recurrent, (std::vector<bool>{true, false, true, false}));
  EXPECT_TRUE(c.has_attn_output_gate && c.has_shared_expert && c.ffn_norm_post_attn && c.has_qk_norm);
  EXPECT_EQ(c.ssm_conv_dim(), 128);
  EXPECT_EQ(c.n_rot, 8);

  Hparams q = find_preset("qwen3.5-35b-a3b", "qwen35moe");
  q.n_vocab = 300;
  size_t n_recurrent = 0;
  for (const auto& t : tensor_list(q)) {
    n_recurrent += t.name.ends_with(".ssm_out.weight");
    if (t.name == "blk.0.attn_qkv.weight") EXPECT_EQ(t.shape, (Shape{2048, 8192}));
    if (t.name == "blk.0.ssm_out.weight") EXPECT_EQ(t.shape, (Shape{4096, 2048}));
    if (t.name == "blk.3.attn_q.weight") EXPECT_EQ(t.shape, (Shape{2048, 8192}));
    if (t.name == "blk.3.attn_k.weight") EXPECT_EQ(t.shape, (Shape{2048, 512}));
    if (t.name == "blk.39.ffn_down_exps.weight") EXPECT_EQ(t.shape, (Shape{512, 2048, 256}));
  }
  EXPECT_EQ(n_recurrent, 30u);  // 3 of every 4 of 40 layers
}

}  // namespace
}  // namespace strata::forge
