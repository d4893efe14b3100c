#pragma once
// The memory budget all loaded models share, and which models go when a newcomer (or a larger
// context) needs room. The arbiter decides; the registry loads and unloads. It sees each loaded
// model as a Tenant: what its plan holds, whether a request holds it, and its keep-alive.
#include <cstdint>
#include <string>
#include <vector>

#include "server/keep_alive.h"

namespace strata::server {

struct Tenant {
  std::string name;
  uint64_t planned_bytes = 0;  // weights, KV cache, scratch and streaming pools its plan holds
  bool idle = false;           // no request runs on it or waits for it
  KeepAlive keep_alive;
};

class MemoryArbiter {
 public:
  // budget_bytes 0: what the machine or its cgroup has available now, less a margin
  // (tier::detect_memory_budget).
  explicit MemoryArbiter(uint64_t budget_bytes);
  uint64_t budget_bytes() const { return budget_bytes_; }

  struct Room {
    std::vector<std::string> evict;  // tenants to unload, in order
    uint64_t available = 0;          // the budget left for the newcomer once they are gone
  };
  // Making room for `need` bytes: idle tenants go, the one whose keep-alive ends first first (kept
  // forever: last), until need fits or no idle tenant is left; the newcomer is then planned under
  // what is available (streaming what does not fit). `replanning` names a tenant being planned
  // again: neither counted nor evicted.
  Room make_room(const std::vector<Tenant>& tenants, uint64_t need, const std::string& replanning = "") const;
  // Bytes the tenants' plans hold together (less `replanning`'s).
  static uint64_t used_bytes(const std::vector<Tenant>& tenants, const std::string& replanning = "");

 private:
  uint64_t budget_bytes_;
};

}  // namespace strata::server
