// Sizes: parsing "8G", the memory budget this process may use, and what the engine allocates
// (KV cache, scratch), asked of the engine's own sizing functions.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>

#include "model/blocks.h"
#include "model/kv_cache.h"
#include "tier/plan/plan.h"
#include "util/error.h"

namespace strata::tier {

uint64_t parse_size(std::string_view text) {
  std::string s(text);
  auto bad = [&] { return Error("memory size '" + s + "': expected a number with an optional K/M/G/T suffix"); };
  size_t end = 0;
  double value = 0;
  try {
    value = std::stod(s, &end);
  } catch (const std::exception&) {
    throw bad();
  }
  std::string suffix = s.substr(end);
  for (auto& c : suffix) c = char(std::toupper(static_cast<unsigned char>(c)));
  if (suffix.size() >= 2 && suffix.ends_with("IB"))
    suffix.resize(suffix.size() - 2);
  else if (suffix.size() >= 2 && suffix.back() == 'B')
    suffix.pop_back();
  double scale = 1;
  if (suffix.empty() || suffix == "B")
    scale = 1;
  else if (suffix == "K")
    scale = 1024.0;
  else if (suffix == "M")
    scale = 1024.0 * 1024;
  else if (suffix == "G")
    scale = 1024.0 * 1024 * 1024;
  else if (suffix == "T")
    scale = 1024.0 * 1024 * 1024 * 1024;
  else
    throw bad();
  if (!(value >= 0) || !std::isfinite(value)) throw bad();
  return uint64_t(std::llround(value * scale));
}

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (std::abs(bytes) >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", bytes, units[u]);
  return buf;
}

namespace {

// A number from a one-line file; 0 when missing, unlimited ("max") or absurdly large.
uint64_t read_limit(const char* path) {
  std::ifstream in(path);
  std::string s;
  if (!(in >> s) || s == "max") return 0;
  try {
    uint64_t v = std::stoull(s);
    return v >= (uint64_t(1) << 60) ? 0 : v;  // v1 reports "unlimited" as ~2^63
  } catch (const std::exception&) {
    return 0;
  }
}

uint64_t mem_available() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  while (in >> key >> kib) {
    std::getline(in, unit);
    if (key == "MemAvailable:") return kib * 1024;
  }
  return 0;
}

// A key's value in a cgroup's memory.stat; 0 when missing.
uint64_t stat_value(const std::string& path, const std::string& want) {
  std::ifstream in(path);
  std::string key;
  uint64_t value = 0;
  while (in >> key >> value)
    if (key == want) return value;
  return 0;
}

// Memory left under this process's cgroup and every cgroup above it (v2, then v1): the limit
// less what is in use, not counting inactive page cache, which the kernel reclaims first.
// 0: no limit anywhere.
uint64_t cgroup_left() {
  std::ifstream in("/proc/self/cgroup");
  std::string line, v2_path, v1_path;
  while (std::getline(in, line)) {
    const size_t a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    if (controllers.empty())
      v2_path = path;
    else if (("," + controllers + ",").find(",memory,") != std::string::npos)
      v1_path = path;
  }
  struct Hierarchy {
    std::string root, path, limit, usage, inactive;
  };
  uint64_t best = 0;
  for (const Hierarchy& h : {Hierarchy{"/sys/fs/cgroup", v2_path, "memory.max", "memory.current", "inactive_file"},
                             Hierarchy{"/sys/fs/cgroup/memory", v1_path, "memory.limit_in_bytes",
                                       "memory.usage_in_bytes", "total_inactive_file"}}) {
    if (h.path.empty() && h.root == "/sys/fs/cgroup") continue;
    for (std::string p = h.path;; p = p.substr(0, p.rfind('/'))) {
      const std::string dir = h.root + (p == "/" ? "" : p);
      const uint64_t limit = read_limit((dir + "/" + h.limit).c_str());
      if (limit > 0) {
        const uint64_t usage = read_limit((dir + "/" + h.usage).c_str());
        const uint64_t inactive = stat_value(dir + "/memory.stat", h.inactive);
        const uint64_t used = usage > inactive ? usage - inactive : 0;
        const uint64_t left = limit > used ? limit - used : 0;
        best = best == 0 ? left : std::min(best, left);
      }
      if (p.empty() || p == "/") break;
    }
    if (best > 0) break;
  }
  return best;
}

}  // namespace

uint64_t detect_memory_budget() {
  const uint64_t machine = mem_available();
  const uint64_t left = cgroup_left();
  if (machine == 0 && left == 0) throw Error("cannot determine available memory (/proc/meminfo, cgroup): pass --mem");
  // Under a cgroup limit the limit is what binds and nothing else competes inside it: keep only
  // what the process holds beyond its plan (heap, code, thread stacks). Without one, other
  // programs may grow into what is free now: keep more.
  const bool cgroup_binds = left > 0 && (machine == 0 || left <= machine);
  const uint64_t avail = cgroup_binds ? left : machine;
  const uint64_t margin = cgroup_binds ? std::max<uint64_t>(avail * 3 / 100, uint64_t(96) << 20)
                                       : std::max<uint64_t>(avail / 20, uint64_t(256) << 20);
  return avail > margin ? avail - margin : 0;
}

uint64_t kv_cache_bytes(const ModelConfig& c, int n_ctx, int n_batch, DType type) {
  // KvCache::init's allocation (the engine's own function): per layer k and v in the cache's type,
  // sliding-window layers as rings of window + batch positions.
  return KvCache::bytes_for(c, n_ctx, type, n_batch);
}

uint64_t scratch_bytes(const ModelConfig& c, int n_ctx, int n_batch, int n_threads) {
  return ForwardBuffers::bytes_for(c, n_batch, n_ctx, std::max(1, n_threads));
}

}  // namespace strata::tier
