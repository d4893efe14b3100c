#include "model/kv_cache.h"

#include <algorithm>

#include "backend/backend.h"
#include "util/error.h"

namespace strata {

namespace {
// Slots a layer needs: every position, or for a sliding-window layer its window plus a batch
// (a batch's first query still sees positions its last key must not overwrite).
int64_t slots_for(const ModelConfig& c, int layer, int n_ctx, int n_batch) {
  if (c.is_recurrent_layer(layer)) return 0;
  const bool ring = c.sliding_window > 0 && size_t(layer) < c.layer_swa.size() && c.layer_swa[size_t(layer)];
  return ring ? std::min<int64_t>(n_ctx, int64_t(c.sliding_window) + std::max(1, n_batch)) : n_ctx;
}
}  // namespace

void KvCache::init(const ModelConfig& c, int ctx, DType kv_type, int n_batch, backend::Backend* device) {
  n_ctx = ctx;
  type = kv_type;
  k_row_bytes = ops::kv_row_bytes(kv_type, c.n_head_kv, c.head_dim_k);
  v_row_bytes = ops::kv_row_bytes(kv_type, c.n_head_kv, c.head_dim_v);
  k_head_bytes = k_row_bytes / size_t(c.n_head_kv);
  v_head_bytes = v_row_bytes / size_t(c.n_head_kv);
  window = c.sliding_window;
  layers.assign(size_t(c.n_layer), Layer{});
  recurrent.init(c, n_batch);  // in RAM: the delta-rule layers run on the CPU only
  device_memory_.reset();
  device_bytes_ = 0;
  if (device) {
    device_bytes_ = bytes_for(c, ctx, kv_type, n_batch) - RecurrentState::bytes_for(c, n_batch);
    device_memory_ = std::shared_ptr<uint8_t>(static_cast<uint8_t*>(device->alloc(device_bytes_)),
                                              [device](uint8_t* p) { device->free(p); });
  }
  size_t offset = 0;
  for (int l = 0; l < c.n_layer; ++l) {
    Layer& L = layers[size_t(l)];
    L.n_slots = slots_for(c, l, ctx, n_batch);
    const size_t k_bytes = size_t(L.n_slots) * k_row_bytes, v_bytes = size_t(L.n_slots) * v_row_bytes;
    if (device) {  // the device copy starts as it would in RAM: zeros
      L.device_k = device_memory_.get() + offset;
      L.device_v = L.device_k + k_bytes;
      offset += k_bytes + v_bytes;
      const std::vector<uint8_t> zeros(std::max(k_bytes, v_bytes), 0);
      device->upload(L.device_k, zeros.data(), k_bytes);
      device->upload(L.device_v, zeros.data(), v_bytes);
    } else {
      L.k.assign(k_bytes, 0);
      L.v.assign(v_bytes, 0);
    }
    if (L.n_slots < ctx) L.slot_pos.assign(size_t(L.n_slots), -1);
  }
}

size_t KvCache::device_bytes() const { return device_bytes_; }

uint64_t KvCache::bytes_for(const ModelConfig& c, int ctx, DType kv_type, int n_batch) {
  const uint64_t row = ops::kv_row_bytes(kv_type, c.n_head_kv, c.head_dim_k) +
                       ops::kv_row_bytes(kv_type, c.n_head_kv, c.head_dim_v);
  uint64_t n = 0;
  for (int l = 0; l < c.n_layer; ++l) n += uint64_t(slots_for(c, l, ctx, n_batch)) * row;
  return n + RecurrentState::bytes_for(c, n_batch);
}

size_t KvCache::bytes() const {
  size_t n = 0;
  for (const Layer& L : layers) n += L.k.size() + L.v.size();
  return n + recurrent.bytes();
}

ops::KvLayerView KvCache::k_view(int layer) {
  Layer& L = layers[size_t(layer)];
  return {L.device_k ? L.device_k : L.k.data(), type, k_row_bytes, k_head_bytes, L.n_slots};
}

ops::KvLayerView KvCache::v_view(int layer) {
  Layer& L = layers[size_t(layer)];
  return {L.device_v ? L.device_v : L.v.data(), type, v_row_bytes, v_head_bytes, L.n_slots};
}

void KvCache::written(int layer, int64_t pos0, int n) {
  Layer& L = layers[size_t(layer)];
  if (L.slot_pos.empty()) return;
  for (int64_t p = pos0; p < pos0 + n; ++p) L.slot_pos[size_t(p % L.n_slots)] = p;
}

bool KvCache::can_keep(int64_t n) const {
  for (const Layer& L : layers) {
    if (L.slot_pos.empty()) continue;
    // Position n sees n - window + 1 .. n - 1: each must still be in its slot.
    for (int64_t p = std::max<int64_t>(0, n - window + 1); p < n; ++p)
      if (L.slot_pos[size_t(p % L.n_slots)] != p) return false;
  }
  return true;
}

bool KvCache::rewind(int64_t n) { return can_keep(n) && recurrent.rewind(n); }

}  // namespace strata
