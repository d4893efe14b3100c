#include "server/memory_arbiter.h"

#include <algorithm>

#include "tier/tiering.h"

namespace strata::server {

MemoryArbiter::MemoryArbiter(uint64_t budget_bytes)
    : budget_bytes_(budget_bytes > 0 ? budget_bytes : tier::detect_memory_budget()) {}

uint64_t MemoryArbiter::used_bytes(const std::vector<Tenant>& tenants, const std::string& replanning) {
  uint64_t n = 0;
  for (const Tenant& t : tenants)
    if (t.name != replanning || replanning.empty()) n += t.planned_bytes;
  return n;
}

MemoryArbiter::Room MemoryArbiter::make_room(const std::vector<Tenant>& tenants, uint64_t need,
                                             const std::string& replanning) const {
  // Candidates in the order they go: a keep-alive that ends first before a later one, any before
  // forever; names break ties so the order never depends on the map's.
  std::vector<const Tenant*> idle;
  for (const Tenant& t : tenants)
    if (t.idle && (replanning.empty() || t.name != replanning)) idle.push_back(&t);
  std::sort(idle.begin(), idle.end(), [](const Tenant* a, const Tenant* b) {
    if (a->keep_alive.forever != b->keep_alive.forever) return !a->keep_alive.forever;
    if (!a->keep_alive.forever && a->keep_alive.expires_at != b->keep_alive.expires_at)
      return a->keep_alive.expires_at < b->keep_alive.expires_at;
    return a->name < b->name;
  });
  Room room;
  uint64_t used = used_bytes(tenants, replanning);
  for (const Tenant* t : idle) {
    if (used + need <= budget_bytes_) break;
    room.evict.push_back(t->name);
    used -= t->planned_bytes;
  }
  room.available = budget_bytes_ > used ? budget_bytes_ - used : 0;
  return room;
}

}  // namespace strata::server
