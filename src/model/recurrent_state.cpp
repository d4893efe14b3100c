#include "model/recurrent_state.h"

#include <algorithm>

namespace strata {

namespace {

struct Sizes {
  size_t conv = 0, ssm = 0;  // per recurrent layer
  int n_recurrent = 0;
  size_t qkv = 0, z = 0, heads = 0, q_gate = 0, gate = 0;  // scratch, per batch
};

Sizes sizes(const ModelConfig& c, int n_batch) {
  Sizes s;
  for (int l = 0; l < c.n_layer; ++l) s.n_recurrent += c.is_recurrent_layer(l);
  if (s.n_recurrent == 0) return s;
  const size_t nb = size_t(std::max(1, n_batch));
  s.conv = size_t(c.ssm_conv_dim()) * size_t(std::max(0, c.ssm_d_conv - 1));
  s.ssm = size_t(c.ssm_dt_rank) * size_t(c.ssm_d_state) * size_t(c.ssm_d_state);
  s.qkv = nb * size_t(c.ssm_conv_dim());
  s.z = nb * size_t(c.ssm_d_inner);
  s.heads = nb * size_t(c.ssm_dt_rank);
  if (c.has_attn_output_gate) {
    s.gate = nb * size_t(c.n_head) * size_t(c.head_dim_k);
    s.q_gate = 2 * s.gate;
  }
  return s;
}

void fit(std::vector<float>& v, size_t n) {
  v.assign(n, 0.0f);
  v.shrink_to_fit();
}

}  // namespace

void RecurrentState::init(const ModelConfig& c, int n_batch) {
  const Sizes s = sizes(c, n_batch);
  *this = RecurrentState{};
  if (s.n_recurrent == 0) return;
  layers.assign(size_t(c.n_layer), Layer{});
  saved.assign(size_t(c.n_layer), Layer{});
  for (int l = 0; l < c.n_layer; ++l) {
    if (!c.is_recurrent_layer(l)) continue;
    for (auto* set : {&layers, &saved}) {
      fit((*set)[size_t(l)].conv, s.conv);
      fit((*set)[size_t(l)].ssm, s.ssm);
    }
  }
  fit(scratch.qkv, s.qkv);
  fit(scratch.conv, s.qkv);
  fit(scratch.z, s.z);
  fit(scratch.beta, s.heads);
  fit(scratch.alpha, s.heads);
  fit(scratch.core, s.z);
  fit(scratch.q_gate, s.q_gate);
  fit(scratch.gate, s.gate);
}

uint64_t RecurrentState::bytes_for(const ModelConfig& c, int n_batch) {
  const Sizes s = sizes(c, n_batch);
  const uint64_t state = uint64_t(s.n_recurrent) * (s.conv + s.ssm) * 2;  // the state and its checkpoint
  const uint64_t batch = 2 * s.qkv + 2 * s.z + 2 * s.heads + s.q_gate + s.gate;
  return (state + batch) * sizeof(float);
}

size_t RecurrentState::bytes() const {
  size_t n = 0;
  for (const auto* set : {&layers, &saved})
    for (const Layer& L : *set) n += L.conv.capacity() + L.ssm.capacity();
  for (const auto* v : {&scratch.qkv, &scratch.conv, &scratch.z, &scratch.beta, &scratch.alpha, &scratch.core,
                        &scratch.q_gate, &scratch.gate})
    n += v->capacity();
  return n * sizeof(float);
}

void RecurrentState::reset() {
  for (Layer& L : layers) {
    std::fill(L.conv.begin(), L.conv.end(), 0.0f);
    std::fill(L.ssm.begin(), L.ssm.end(), 0.0f);
  }
  pos = 0;
  saved_pos = -1;
}

void RecurrentState::checkpoint() {
  if (empty() || pos < 0) return;
  for (size_t l = 0; l < layers.size(); ++l) {
    std::copy(layers[l].conv.begin(), layers[l].conv.end(), saved[l].conv.begin());
    std::copy(layers[l].ssm.begin(), layers[l].ssm.end(), saved[l].ssm.begin());
  }
  saved_pos = pos;
}

bool RecurrentState::rewind(int64_t n) {
  if (empty() || n == pos) return true;
  if (n == saved_pos) {
    for (size_t l = 0; l < layers.size(); ++l) {
      std::copy(saved[l].conv.begin(), saved[l].conv.end(), layers[l].conv.begin());
      std::copy(saved[l].ssm.begin(), saved[l].ssm.end(), layers[l].ssm.begin());
    }
    pos = n;
    return true;
  }
  saved_pos = -1;
  pos = -1;  // the sequence starts over (a batch at position 0 resets the state)
  return false;
}

}  // namespace strata
