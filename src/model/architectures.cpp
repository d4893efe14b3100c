#include "model/architectures.h"

namespace strata {

void configure_llama(const gguf::File&, ModelConfig&);
void configure_qwen2(const gguf::File&, ModelConfig&);
void configure_qwen3(const gguf::File&, ModelConfig&);
void configure_gemma3(const gguf::File&, ModelConfig&);
void forward_llama(ForwardPass&);
void forward_qwen2(ForwardPass&);
void forward_qwen3(ForwardPass&);
void forward_gemma3(ForwardPass&);

namespace {
const ArchitectureEntry kArchitectures[] = {
    {"llama", Arch::llama, configure_llama, forward_llama},
    {"qwen2", Arch::qwen2, configure_qwen2, forward_qwen2},
    {"qwen3", Arch::qwen3, configure_qwen3, forward_qwen3},
    {"qwen3moe", Arch::qwen3moe, configure_qwen3, forward_qwen3},
    {"gemma3", Arch::gemma3, configure_gemma3, forward_gemma3},
};
}  // namespace

const ArchitectureEntry* find_architecture(const std::string& name) {
  for (const auto& a : kArchitectures)
    if (name == a.name) return &a;
  return nullptr;
}

const ArchitectureEntry& architecture(Arch arch) {
  for (const auto& a : kArchitectures)
    if (a.arch == arch) return a;
  return kArchitectures[0];
}

std::string supported_architectures() {
  std::string s;
  for (const auto& a : kArchitectures) s += (s.empty() ? "" : ", ") + std::string(a.name);
  return s;
}

}  // namespace strata
