#include "model/kv_cache.h"

namespace strata {

void KvCache::init(const ModelConfig& c, int ctx) {
  n_ctx = ctx;
  k_width = int64_t(c.n_head_kv) * c.head_dim_k;
  v_width = int64_t(c.n_head_kv) * c.head_dim_v;
  k.assign(size_t(c.n_layer), std::vector<uint16_t>(size_t(ctx) * size_t(k_width)));
  v.assign(size_t(c.n_layer), std::vector<uint16_t>(size_t(ctx) * size_t(v_width)));
}

size_t KvCache::bytes() const {
  size_t n = 0;
  for (const auto& l : k) n += l.size() * sizeof(uint16_t);
  for (const auto& l : v) n += l.size() * sizeof(uint16_t);
  return n;
}

}  // namespace strata
