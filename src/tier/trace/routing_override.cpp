#include "tier/trace/routing_override.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "util/error.h"

namespace strata::tier {

RoutingOverride::RoutingOverride(const std::string& path, const ModelConfig& c) {
  const std::string what = "--routing-override " + path;
  if (c.n_expert <= 0 || c.n_expert_used <= 0) throw Error(what + ": the model has no experts to route");
  std::ifstream in(path);
  if (!in) throw Error(what + ": cannot open");
  n_layer_ = c.n_layer;
  k_ = c.n_expert_used;
  std::string line;
  uint64_t line_no = 0;
  auto fail = [&](const std::string& why) -> Error {
    return Error(what + ":" + std::to_string(line_no) + ": " + why);
  };
  bool shape_seen = false;
  std::vector<int32_t> row(static_cast<size_t>(k_));
  while (std::getline(in, line)) {
    if (++line_no > kMaxLines) throw fail("more than " + std::to_string(kMaxLines) + " lines");
    std::istringstream fields(line);
    std::string tag;
    fields >> tag;
    if (line_no == 1) {
      int version = 0;
      if (tag != "strata-routing-trace" || !(fields >> version) || version != 1)
        throw fail("not a routing trace (expected \"strata-routing-trace 1\")");
      continue;
    }
    if (tag == "n_layer") {
      std::string e_key, k_key;
      int L = 0, E = 0, K = 0;
      if (!(fields >> L >> e_key >> E >> k_key >> K) || e_key != "n_expert" || k_key != "n_expert_used")
        throw fail("malformed shape line");
      if (L != c.n_layer || E != c.n_expert || K != c.n_expert_used)
        throw fail("a trace of " + std::to_string(L) + " layers x " + std::to_string(E) + " experts, top-" +
                   std::to_string(K) + "; the model has " + std::to_string(c.n_layer) + " x " +
                   std::to_string(c.n_expert) + ", top-" + std::to_string(c.n_expert_used));
      shape_seen = true;
      continue;
    }
    if (tag != "r") continue;  // model, expert_bytes, guesses
    if (!shape_seen) throw fail("routing before the shape line");
    int layer = -1;
    long long pos = -1;
    if (!(fields >> layer >> pos)) throw fail("malformed routing record");
    if (layer < 0 || layer >= c.n_layer || !c.is_moe_layer(layer))
      throw fail("layer " + std::to_string(layer) + " is not a MoE layer of the model");
    if (pos < 0 || pos >= kMaxPositions)
      throw fail("position " + std::to_string(pos) + " outside 0.." + std::to_string(kMaxPositions - 1));
    for (int j = 0; j < k_; ++j) {
      if (!(fields >> row[size_t(j)])) throw fail("fewer than " + std::to_string(k_) + " experts");
      const int32_t e = row[size_t(j)];
      if (e < 0 || e >= c.n_expert) throw fail("expert " + std::to_string(e) + " outside 0.." + std::to_string(c.n_expert - 1));
      if (std::find(row.begin(), row.begin() + j, e) != row.begin() + j)
        throw fail("expert " + std::to_string(e) + " twice in one token");
    }
    if (pos >= n_positions_) {
      n_positions_ = int(pos) + 1;
      table_.resize(size_t(n_positions_) * size_t(n_layer_) * size_t(k_), -1);
    }
    int32_t* at = table_.data() + (size_t(pos) * size_t(n_layer_) + size_t(layer)) * size_t(k_);
    if (at[0] < 0) std::copy(row.begin(), row.end(), at);  // a position traced twice: the first run's
  }
  if (!shape_seen) throw fail("no shape line (n_layer ... n_expert ... n_expert_used ...)");
  if (n_positions_ == 0) throw fail("no routing records");
  for (int p = 0; p < n_positions_; ++p)
    for (int l = 0; l < n_layer_; ++l)
      if (c.is_moe_layer(l) && table_[(size_t(p) * size_t(n_layer_) + size_t(l)) * size_t(k_)] < 0)
        throw Error(what + ": position " + std::to_string(p) + " has no routing for layer " + std::to_string(l) +
                    " (the trace covers positions 0.." + std::to_string(n_positions_ - 1) + ")");
}

void RoutingOverride::after_router(ForwardPass& p, int layer) {
  int32_t* chosen = p.buf.chosen.data();
  for (int t = 0; t < p.n_tokens; ++t) {
    const int32_t* e = experts(p.pos0 + t, layer);
    std::copy(e, e + k_, chosen + size_t(t) * size_t(k_));
  }
}

}  // namespace strata::tier
