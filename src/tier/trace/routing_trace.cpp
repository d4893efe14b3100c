#include "tier/trace/routing_trace.h"

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "util/error.h"

namespace strata::tier {

std::vector<uint64_t> expert_bytes_per_layer(const Model& model) {
  const ModelConfig& c = model.config();
  std::vector<uint64_t> bytes(size_t(c.n_layer), 0);
  for (int l = 0; l < c.n_layer; ++l) {
    const LayerWeights& L = model.weights().layers[size_t(l)];
    if (L.gate_exps.n_rows == 0) continue;
    bytes[size_t(l)] = uint64_t(L.gate_exps.row_bytes) * uint64_t(c.n_ff_expert) +
                       uint64_t(L.up_exps.row_bytes) * uint64_t(c.n_ff_expert) +
                       uint64_t(L.down_exps.row_bytes) * uint64_t(c.n_embd);
  }
  return bytes;
}

RoutingTraceWriter::RoutingTraceWriter(const std::string& path, const Model& model)
    : path_(path), guesser_(model.config(), nullptr) {
  const ModelConfig& c = model.config();
  if (c.n_expert <= 0) throw Error("--trace-routing " + path + ": the model has no experts to trace");
  n_layer_ = c.n_layer;
  n_expert_ = c.n_expert;
  k_ = c.n_expert_used;
  file_ = std::fopen(path.c_str(), "w");
  if (!file_) throw Error("--trace-routing " + path + ": cannot create: " + std::strerror(errno));
  std::fprintf(file_, "strata-routing-trace 1\nmodel %s\nn_layer %d n_expert %d n_expert_used %d\nexpert_bytes",
               std::filesystem::path(model.file().path()).filename().string().c_str(), n_layer_, n_expert_, k_);
  for (uint64_t b : expert_bytes_per_layer(model)) std::fprintf(file_, " %llu", static_cast<unsigned long long>(b));
  std::fputc('\n', file_);
}

RoutingTraceWriter::~RoutingTraceWriter() {
  if (file_) std::fclose(file_);
}

void RoutingTraceWriter::check(int layer, const char* what) const {
  if (layer < 0 || layer >= n_layer_)
    throw Error("--trace-routing " + path_ + ": " + what + " of layer " + std::to_string(layer) + " outside 0.." +
                std::to_string(n_layer_ - 1));
}

void RoutingTraceWriter::routed(int layer, int64_t pos0, const int32_t* chosen, int n_tokens) {
  check(layer, "routing");
  for (int t = 0; t < n_tokens; ++t) {
    std::fprintf(file_, "r %d %lld", layer, static_cast<long long>(pos0 + t));
    for (int j = 0; j < k_; ++j) std::fprintf(file_, " %d", chosen[size_t(t) * size_t(k_) + size_t(j)]);
    std::fputc('\n', file_);
    ++n_records_;
  }
}

void RoutingTraceWriter::guessed(int layer, const int32_t* experts, int n_experts, bool refined) {
  check(layer, "a guess");
  std::fprintf(file_, "g %d %d", layer, refined ? 1 : 0);
  for (int i = 0; i < n_experts; ++i) std::fprintf(file_, " %d", experts[i]);
  std::fputc('\n', file_);
  ++n_records_;
}

void RoutingTraceWriter::flush() {
  if (std::fflush(file_) != 0 || std::ferror(file_))
    throw Error("--trace-routing " + path_ + ": write failed: " + std::strerror(errno));
}

}  // namespace strata::tier
