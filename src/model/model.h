#pragma once
// A loaded model: its file, config and weights. Immutable after load, so sessions can share it.
#include <memory>
#include <string>

#include "gguf/gguf.h"
#include "model/config.h"
#include "model/weights.h"

namespace strata {

struct ForwardPass;

class Model {
 public:
  // Opens the GGUF file, reads the config and binds the weights; throws strata::Error naming
  // the file and the problem.
  static std::unique_ptr<Model> load(const std::string& path);

  const gguf::File& file() const { return *file_; }
  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  // Weight bytes a single token reads (every matrix once; experts: the used fraction).
  double weight_bytes_per_token() const;
  // Evaluates one batch (runs every layer through the architecture's forward pass).
  void forward(ForwardPass& pass) const;

 private:
  std::unique_ptr<gguf::File> file_;
  ModelConfig config_;
  ModelWeights weights_;
};

}  // namespace strata
