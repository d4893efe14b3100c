#pragma once
// The registry of architectures: each lives in its own file (arch_*.cpp) with the config keys it
// adds and its forward pass built from the shared blocks (model/blocks.h).
#include <string>

#include "model/config.h"

namespace strata::gguf { class File; }

namespace strata {

struct ForwardPass;  // model/blocks.h

struct ArchitectureEntry {
  const char* name;
  Arch arch;
  void (*configure)(const gguf::File& file, ModelConfig& config);  // arch-specific keys and flags
  void (*forward)(ForwardPass& pass);                               // all layers of one batch
};

const ArchitectureEntry* find_architecture(const std::string& name);
const ArchitectureEntry& architecture(Arch arch);
std::string supported_architectures();

// Shared by load_config and the architecture files.
void read_common_config(const gguf::File& file, ModelConfig& config);

}  // namespace strata
