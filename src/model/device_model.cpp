#include "model/device_model.h"

#include <algorithm>

#include "util/error.h"

namespace strata {

namespace {

constexpr size_t kAlign = 256;  // device allocations' alignment, kept for every carved piece
size_t aligned(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

struct HostRange {
  const uint8_t* host;
  size_t bytes;
};

// Every tensor's bytes, ascending, overlapping ranges (a tied output head) merged.
std::vector<HostRange> host_ranges(const ModelWeights& w, bool routed_experts) {
  std::vector<HostRange> r;
  auto view = [&](const WeightView& v) {
    if (!v.empty()) r.push_back({v.data, v.row_bytes * size_t(v.n_rows)});
  };
  auto floats = [&](const std::vector<float>& v) {
    if (!v.empty()) r.push_back({reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(float)});
  };
  view(w.token_embd);
  view(w.output);
  floats(w.output_norm);
  floats(w.rope_freqs);
  for (const LayerWeights& L : w.layers) {
    for (const WeightView* v : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down, &L.router,
                                &L.shexp_gate_inp, &L.w_gate_shexp, &L.w_up_shexp, &L.w_down_shexp})
      view(*v);
    if (routed_experts)
      for (const WeightView* v : {&L.gate_exps, &L.up_exps, &L.down_exps}) view(*v);
    for (const std::vector<float>* v : {&L.attn_norm, &L.bq, &L.bk, &L.bv, &L.q_norm, &L.k_norm, &L.post_attn_norm,
                                        &L.ffn_norm, &L.post_ffn_norm})
      floats(*v);
    // gpt-oss: the output bias, sinks, router bias and every expert's biases (resident even where
    // the experts' matrices are not: they are small).
    for (const std::vector<float>* v : {&L.bo, &L.attn_sinks, &L.router_bias, &L.gate_exps_bias, &L.up_exps_bias,
                                        &L.down_exps_bias})
      floats(*v);
  }
  std::sort(r.begin(), r.end(), [](const HostRange& a, const HostRange& b) { return a.host < b.host; });
  std::vector<HostRange> merged;
  for (const HostRange& x : r) {
    if (!merged.empty() && x.host < merged.back().host + merged.back().bytes) {
      HostRange& m = merged.back();
      m.bytes = std::max(m.bytes, size_t(x.host + x.bytes - m.host));
    } else {
      merged.push_back(x);
    }
  }
  return merged;
}

}  // namespace

size_t DeviceWeights::bytes_for(const ModelWeights& weights, bool routed_experts) {
  size_t n = 0;
  for (const HostRange& r : host_ranges(weights, routed_experts)) n += aligned(r.bytes);
  return n;
}

DeviceWeights::DeviceWeights(const ModelWeights& weights, backend::Backend& device, bool routed_experts)
    : device_(device) {
  const std::vector<HostRange> host = host_ranges(weights, routed_experts);
  for (const HostRange& r : host) {
    ranges_.push_back({r.host, r.bytes, bytes_});
    bytes_ += aligned(r.bytes);
  }
  memory_ = static_cast<uint8_t*>(device_.alloc(bytes_));
  try {
    for (const Range& r : ranges_) device_.upload(memory_ + r.offset, r.host, r.bytes);
  } catch (...) {
    device_.free(memory_);
    throw;
  }
}

DeviceWeights::~DeviceWeights() { device_.free(memory_); }

const uint8_t* DeviceWeights::find(const void* host_ptr, size_t bytes) const {
  const auto* host = static_cast<const uint8_t*>(host_ptr);
  auto it = std::upper_bound(ranges_.begin(), ranges_.end(), host,
                             [](const uint8_t* h, const Range& r) { return h < r.host; });
  if (it == ranges_.begin() || host + bytes > std::prev(it)->host + std::prev(it)->bytes)
    throw Error("device weights: " + std::to_string(bytes) + " bytes asked for that were never uploaded");
  --it;
  return memory_ + it->offset + size_t(host - it->host);
}

WeightView DeviceWeights::view(const WeightView& host) const {
  WeightView v = host;
  if (!host.empty()) v.data = find(host.data, host.row_bytes * size_t(host.n_rows));
  return v;
}

const float* DeviceWeights::floats(const std::vector<float>& host) const {
  if (host.empty()) return nullptr;
  return reinterpret_cast<const float*>(find(host.data(), host.size() * sizeof(float)));
}

namespace {
// Elements (4 bytes each) of every activation array, in the order DeviceBuffers carves them; the
// MoE arrays are empty for a dense model.
std::vector<size_t> activation_sizes(const ModelConfig& c, int n_batch, int logits_rows) {
  const ForwardBuffers::Sizes s = ForwardBuffers::sizes(c, n_batch, 0, 1);
  return {s.x,      s.h,
          s.o,      s.q,
          s.k,      s.v,
          s.att,    s.gate,
          s.up,     size_t(logits_rows) * size_t(c.n_vocab),
          s.router_logits, s.chosen,
          s.chosen_weight, s.expert_results,
          s.expert_out,    s.shexp_scale};
}
}  // namespace

size_t DeviceBuffers::bytes_for(const ModelConfig& c, int n_batch, int logits_rows) {
  size_t n = aligned(size_t(n_batch) * sizeof(int32_t));
  for (size_t floats : activation_sizes(c, n_batch, logits_rows)) n += aligned(floats * sizeof(float));
  return n;
}

DeviceBuffers::DeviceBuffers(const ModelConfig& c, int n_batch, int logits_rows, backend::Backend& device)
    : device_(device) {
  bytes_ = bytes_for(c, n_batch, logits_rows);
  auto* base = static_cast<uint8_t*>(device_.alloc(bytes_));
  memory_ = base;
  size_t offset = 0;
  auto carve = [&](size_t bytes) {
    uint8_t* p = base + offset;
    offset += aligned(bytes);
    return p;
  };
  tokens_ = reinterpret_cast<int32_t*>(carve(size_t(n_batch) * sizeof(int32_t)));
  const std::vector<size_t> sizes = activation_sizes(c, n_batch, logits_rows);
  float* chosen = nullptr;  // int32 ids, carved as floats of the same size
  float** slots[] = {&act_.x,          &act_.h,       &act_.o,
                     &act_.q,          &act_.k,       &act_.v,
                     &act_.att,        &act_.gate,    &act_.up,
                     &act_.logits,     &act_.router_logits, &chosen,
                     &act_.chosen_weight, &act_.expert_results, &act_.shexp_out,
                     &act_.shexp_gate};
  static_assert(sizeof(int32_t) == sizeof(float));
  for (size_t i = 0; i < sizes.size(); ++i)
    *slots[i] = sizes[i] ? reinterpret_cast<float*>(carve(sizes[i] * sizeof(float))) : nullptr;
  act_.chosen = reinterpret_cast<int32_t*>(chosen);
  act_.logits_rows = logits_rows;
  act_.tokens = tokens_;
}

DeviceBuffers::~DeviceBuffers() { device_.free(memory_); }

}  // namespace strata
