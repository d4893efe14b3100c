#pragma once
// A model placed on a compute device: its weights copied into the device's memory once
// (DeviceWeights) and the activations of one batch (DeviceBuffers). The forward pass asks
// DeviceWeights for the device's copy of a tensor it names by its bound (host) view, so compute
// is written once and never cares where the bytes came from.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "model/blocks.h"
#include "model/config.h"
#include "model/weights.h"

namespace strata {

class DeviceWeights {
 public:
  // Uploads every tensor of `weights` (tied tensors once) into one allocation of `device`;
  // throws strata::Error naming the size when the device's memory is too small. Without
  // routed_experts, the MoE layers' routed expert tensors stay on the host (an ExpertCompute
  // places them).
  DeviceWeights(const ModelWeights& weights, backend::Backend& device, bool routed_experts = true);
  ~DeviceWeights();
  DeviceWeights(const DeviceWeights&) = delete;
  DeviceWeights& operator=(const DeviceWeights&) = delete;

  // The device's copy of a bound view (or of rows of one: an expert's slice); throws
  // strata::Error for bytes that were not uploaded.
  WeightView view(const WeightView& host) const;
  const float* floats(const std::vector<float>& host) const;
  size_t bytes() const { return bytes_; }
  // What the constructor uploads for these weights (tied tensors once, each range aligned).
  static size_t bytes_for(const ModelWeights& weights, bool routed_experts = true);

 private:
  struct Range {
    const uint8_t* host;
    size_t bytes;
    size_t offset;  // into the allocation
  };
  const uint8_t* find(const void* host, size_t bytes) const;
  backend::Backend& device_;
  std::vector<Range> ranges_;  // ascending host addresses, disjoint
  uint8_t* memory_ = nullptr;
  size_t bytes_ = 0;
};

// The activations of a batch of up to n_batch tokens in a device's memory, sized as
// ForwardBuffers sizes its own, with logits for up to logits_rows tokens and the batch's ids.
class DeviceBuffers {
 public:
  DeviceBuffers(const ModelConfig& config, int n_batch, int logits_rows, backend::Backend& device);
  ~DeviceBuffers();
  DeviceBuffers(const DeviceBuffers&) = delete;
  DeviceBuffers& operator=(const DeviceBuffers&) = delete;
  const Activations& activations() const { return act_; }
  int32_t* tokens() const { return tokens_; }
  size_t bytes() const { return bytes_; }
  static size_t bytes_for(const ModelConfig& config, int n_batch, int logits_rows);

 private:
  backend::Backend& device_;
  Activations act_;
  int32_t* tokens_ = nullptr;
  void* memory_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace strata
