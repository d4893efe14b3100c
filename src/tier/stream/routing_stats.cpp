#include "tier/stream/routing_stats.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "util/error.h"

namespace strata::tier {

namespace {

constexpr char kMagic[8] = {'S', 'T', 'R', 'O', 'U', 'T', 'E', '1'};
constexpr uint64_t kMinSeen = 32;  // co-activations from a layer before they predict anything
// A guess costs a read whether or not it is used; on a busy disk one that is more often wrong
// than right delays the reads that are needed. (Forged models route uniformly: no expert of the
// next layer follows with probability 1/2 there, and nothing is guessed.)
constexpr double kMinProbability = 0.5;

}  // namespace

RoutingStats::RoutingStats(int n_layer, int n_expert, int n_expert_used)
    : n_layer_(n_layer),
      n_expert_(n_expert),
      k_(n_expert_used),
      freq_(size_t(n_layer) * size_t(n_expert), 0),
      co_(size_t(std::max(0, n_layer - 1)) * size_t(n_expert) * size_t(n_expert), 0),
      seen_(size_t(n_layer), 0),
      score_(size_t(n_expert), 0) {}

void RoutingStats::record(int layer, const int32_t* chosen, int n_tokens) {
  if (layer < 0 || layer >= n_layer_) return;
  const int n = n_tokens * k_;
  for (int i = 0; i < n; ++i)
    if (chosen[i] >= 0 && chosen[i] < n_expert_) ++freq_[size_t(layer) * n_expert_ + size_t(chosen[i])];
  if (layer == 0) tokens_ += uint64_t(n_tokens);
  if (prev_layer_ == layer - 1 && prev_tokens_ == n_tokens && layer > 0) {
    for (int t = 0; t < n_tokens; ++t)
      for (int i = 0; i < k_; ++i)
        for (int j = 0; j < k_; ++j) {
          const int from = prev_[size_t(t * k_ + i)], to = chosen[t * k_ + j];
          if (from >= 0 && from < n_expert_ && to >= 0 && to < n_expert_) ++co(layer - 1, from, to);
        }
    seen_[size_t(layer - 1)] += uint64_t(n_tokens);
  }
  prev_layer_ = layer;
  prev_tokens_ = n_tokens;
  prev_.assign(chosen, chosen + n);
}

int RoutingStats::predict_next(int layer, const int32_t* now, int n_now, int count, int32_t* out) const {
  if (layer < 0 || layer + 1 >= n_layer_ || seen_[size_t(layer)] < kMinSeen || count <= 0) return 0;
  std::fill(score_.begin(), score_.end(), 0);
  uint64_t chosen = 0;  // times the experts `now` were chosen at `layer` (k co-activations each)
  for (int i = 0; i < n_now; ++i)
    if (now[i] >= 0 && now[i] < n_expert_)
      for (int e = 0; e < n_expert_; ++e) {
        score_[size_t(e)] += co(layer, now[i], e);
        chosen += co(layer, now[i], e);
      }
  chosen /= uint64_t(k_);
  // score / chosen: how often e followed, averaged over the experts now.
  const double min_score = std::max(1.0, kMinProbability * double(chosen));
  int n = 0;
  for (; n < count; ++n) {
    int best = -1;
    for (int e = 0; e < n_expert_; ++e)
      if (double(score_[size_t(e)]) >= min_score && (best < 0 || score_[size_t(e)] > score_[size_t(best)])) best = e;
    if (best < 0) break;
    out[n] = best;
    score_[size_t(best)] = 0;
  }
  std::sort(out, out + n);
  return n;
}

std::vector<std::vector<double>> RoutingStats::frequencies() const {
  std::vector<std::vector<double>> f(size_t(n_layer_), std::vector<double>(size_t(n_expert_), 0.0));
  for (int l = 0; l < n_layer_; ++l)
    for (int e = 0; e < n_expert_; ++e) f[size_t(l)][size_t(e)] = double(freq_[size_t(l) * n_expert_ + size_t(e)]);
  return f;
}

bool RoutingStats::load(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  char magic[8];
  uint32_t dims[3];
  uint64_t tokens = 0;
  bool ok = std::fread(magic, 1, 8, f) == 8 && std::memcmp(magic, kMagic, 8) == 0 &&
            std::fread(dims, sizeof(uint32_t), 3, f) == 3 && int(dims[0]) == n_layer_ && int(dims[1]) == n_expert_ &&
            int(dims[2]) == k_ && std::fread(&tokens, sizeof tokens, 1, f) == 1;
  std::vector<uint64_t> freq(freq_.size()), seen(seen_.size());
  std::vector<uint32_t> co(co_.size());
  ok = ok && std::fread(freq.data(), sizeof(uint64_t), freq.size(), f) == freq.size() &&
       std::fread(seen.data(), sizeof(uint64_t), seen.size(), f) == seen.size() &&
       std::fread(co.data(), sizeof(uint32_t), co.size(), f) == co.size();
  std::fclose(f);
  if (!ok) return false;
  tokens_ = tokens;
  freq_.swap(freq);
  seen_.swap(seen);
  co_.swap(co);
  return true;
}

void RoutingStats::save(const std::string& path) const {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error("routing statistics: cannot write " + tmp + ": " + std::strerror(errno));
  const uint32_t dims[3] = {uint32_t(n_layer_), uint32_t(n_expert_), uint32_t(k_)};
  bool ok = std::fwrite(kMagic, 1, 8, f) == 8 && std::fwrite(dims, sizeof(uint32_t), 3, f) == 3 &&
            std::fwrite(&tokens_, sizeof tokens_, 1, f) == 1 &&
            std::fwrite(freq_.data(), sizeof(uint64_t), freq_.size(), f) == freq_.size() &&
            std::fwrite(seen_.data(), sizeof(uint64_t), seen_.size(), f) == seen_.size() &&
            std::fwrite(co_.data(), sizeof(uint32_t), co_.size(), f) == co_.size();
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error("routing statistics: cannot write " + path);
  }
}

std::string RoutingStats::default_path(const std::string& model_path, uint64_t model_bytes) {
  const char* home = std::getenv("HOME");
  const std::string base = std::filesystem::path(model_path).filename().string();
  return std::string(home && *home ? home : "/tmp") + "/.cache/strata/routing/" + base + "-" +
         std::to_string(model_bytes) + ".bin";
}

}  // namespace strata::tier
