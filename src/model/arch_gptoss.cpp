// gpt-oss (llama.cpp's LLM_ARCH_OPENAI_MOE, general.architecture "gpt-oss"): pre-norm layers whose
// attention alternates sliding-window (even layers) and full (odd layers), with biases on q, k, v
// and the output and a learned sink logit per head; the FFN input norm is stored as
// post_attention_norm; every layer is a mixture of experts with a biased router (top k of the
// logits, then a softmax over those k), biases on every expert matrix and the clamped SwiGLU
// below. The experts are usually MXFP4.
//   x += attn(norm(x)) + bo;  x += moe(norm'(x));  logits = output(norm(x))
#include <algorithm>
#include <cmath>

#include "gguf/gguf.h"
#include "model/architectures.h"
#include "model/blocks.h"
#include "model/device_model.h"
#include "util/error.h"

namespace strata {

void configure_gptoss(const gguf::File& f, ModelConfig& c) {
  const std::string& a = c.arch_name;
  c.sliding_window = int(f.get_int(a + ".attention.sliding_window"));
  if (c.sliding_window <= 0 || c.sliding_window > (1 << 24))
    throw Error(f.path() + ": " + a + ".attention.sliding_window " + std::to_string(c.sliding_window) +
                " is out of range");
  // As llama.cpp's load_swa_pattern(2): a per-layer array if the file has one, else a period n in
  // which the first n - 1 layers are local (default 2: even layers local, odd layers global).
  const std::string pattern_key = a + ".attention.sliding_window_pattern";
  const gguf::Value* pattern = f.find(pattern_key);
  if (pattern && pattern->type == gguf::ValueType::ARRAY) {
    const auto& items = pattern->as_array().items;
    if (items.size() != size_t(c.n_layer))
      throw Error(f.path() + ": " + pattern_key + " has " + std::to_string(items.size()) + " entries, expected " +
                  std::to_string(c.n_layer));
    for (int l = 0; l < c.n_layer; ++l) c.layer_swa[size_t(l)] = items[size_t(l)].as_bool();
  } else {
    const int64_t n = f.get_int(pattern_key, 2);
    if (n < 0 || n > c.n_layer + 1)
      throw Error(f.path() + ": " + pattern_key + " " + std::to_string(n) + " is out of range");
    for (int l = 0; l < c.n_layer; ++l) c.layer_swa[size_t(l)] = n == 0 || (l % n) < n - 1;
  }
  c.rope_base_swa = float(f.get_float(a + ".rope.freq_base_swa", c.rope_base));
  c.rope_scale_swa = c.rope_scale;
  if (c.n_expert <= 0) throw Error(f.path() + ": gpt-oss needs " + a + ".expert_count");
}

namespace {

// Where the pass computes: the bound view or norm, or the device's copy.
WeightView on_device(const ForwardPass& p, const WeightView& w) { return p.device ? p.device->view(w) : w; }
const float* on_device(const ForwardPass& p, const std::vector<float>& v) {
  if (v.empty()) return nullptr;
  return p.device ? p.device->floats(v) : v.data();
}

// The MoE FFN of `layer`, reading p.act.h, writing p.act.o, through the backend: the router
// (logits + bias, the top k logits, then a softmax over those k: llama.cpp's softmax-weight
// gating), the experts with a bias after each matrix and ggml_swiglu_oai between (alpha 1.702,
// limit 7: llama.cpp's LLM_FFN_SWIGLU_OAI_MOE), and the weighted outputs summed in routing order.
// The experts come from p.source as in blocks::moe_ffn: resident ones in one op over the stacked
// tensors (the routing stays on the device), streamed ones as they arrive.
void moe(ForwardPass& p, int layer) {
  const ModelConfig& c = p.config;
  const LayerWeights& L = p.weights.layers[size_t(layer)];
  ForwardBuffers& b = p.buf;
  backend::Backend& be = *p.backend;
  const Activations& a = p.act;
  const int n = p.n_tokens, k = c.n_expert_used;
  if (p.expert_compute && p.expert_compute->computes(layer))
    throw Error("layer " + std::to_string(layer) +
                ": gpt-oss's experts (biases, clamped SwiGLU) have no path in the GPU expert tier yet");

  be.matmul(on_device(p, L.router), a.h, c.n_embd, n, a.router_logits, c.n_expert);
  be.add_bias(a.router_logits, on_device(p, L.router_bias), c.n_expert, n);
  be.route_top_k_softmax(a.router_logits, n, c.n_expert, k, a.chosen, a.chosen_weight);
  const bool resident = p.source.experts_resident(layer);
  if ((p.routing_observer || p.hook || !resident) && a.chosen != b.chosen.data())
    be.download(b.chosen.data(), a.chosen, size_t(n) * size_t(k) * sizeof(int32_t));
  if (p.hook) {  // may rewrite the host copy (a benchmark's routing override)
    p.hook->after_router(p, layer);
    if (a.chosen != b.chosen.data()) be.upload(a.chosen, b.chosen.data(), size_t(n) * size_t(k) * sizeof(int32_t));
  }
  if (p.routing_observer) p.routing_observer->routed(layer, p.pos0, b.chosen.data(), n);

  backend::ExpertBatch batch;
  batch.x = a.h;
  batch.n_tokens = n;
  batch.n_expert = c.n_expert;
  batch.k = k;
  batch.chosen = a.chosen;
  batch.weights = a.chosen_weight;
  batch.out = a.expert_results;
  batch.host = {b.expert_in.data(), b.gate.data(), b.up.data(), b.expert_out.data(), b.expert_tokens.data()};
  backend::ExpertBiases bias;
  bias.gate = on_device(p, L.gate_exps_bias);
  bias.up = on_device(p, L.up_exps_bias);
  bias.down = on_device(p, L.down_exps_bias);
  if (resident) {
    if (p.hook) p.hook->after_routing(p, layer);
    const WeightView gate = on_device(p, L.gate_exps), up = on_device(p, L.up_exps), down = on_device(p, L.down_exps);
    backend::ExpertWeights w;
    w.gate = gate.rows(0, c.n_ff_expert);
    w.up = up.rows(0, c.n_ff_expert);
    w.down = down.rows(0, c.n_embd);
    w.gate_stride = size_t(c.n_ff_expert) * gate.row_bytes;
    w.up_stride = size_t(c.n_ff_expert) * up.row_bytes;
    w.down_stride = size_t(c.n_embd) * down.row_bytes;
    be.moe_experts_biased(w, bias, batch);
  } else {
    const int n_used = blocks::distinct_experts(b.chosen.data(), n * k, c.n_expert, b.experts_used.data());
    p.source.begin_experts(layer, b.experts_used.data(), n_used, b.chosen.data(), n);
    if (p.hook) p.hook->after_routing(p, layer);
    struct Done {  // hands the expert back even if its compute throws
      WeightSource& source;
      int expert;
      ~Done() { source.expert_done(expert); }
    };
    WeightView gate, up, down;
    for (int e; (e = p.source.next_expert(gate, up, down)) >= 0;) {
      Done done{p.source, e};
      backend::ExpertWeights w;
      w.gate = on_device(p, gate);
      w.up = on_device(p, up);
      w.down = on_device(p, down);
      w.single = e;
      be.moe_experts_biased(w, bias, batch);
    }
  }
  be.moe_sum(a.expert_results, n, k, c.n_embd, a.o);
}

}  // namespace

void forward_gptoss(ForwardPass& p) {
  const ModelConfig& c = p.config;
  const Activations& a = p.act;
  const AttentionSpec global{c.rope_base, c.rope_scale, /*sliding=*/false, /*scale_q_first=*/false};
  const AttentionSpec local{c.rope_base_swa, c.rope_scale_swa, /*sliding=*/true, /*scale_q_first=*/false};
  blocks::embed(p);
  for (int l = 0; l < c.n_layer; ++l) {
    const LayerWeights& L = p.weights.layers[size_t(l)];
    blocks::norm_rows(p, a.x, a.h, L.attn_norm);
    blocks::attention(p, l, c.layer_swa[size_t(l)] ? local : global);  // biases and sinks from L
    blocks::add_rows(p, a.x, a.o);
    blocks::norm_rows(p, a.x, a.h, L.post_attn_norm);
    moe(p, l);
    blocks::add_rows(p, a.x, a.o);
    blocks::after_ffn(p, l);
  }
  blocks::output_head(p);
}

}  // namespace strata
