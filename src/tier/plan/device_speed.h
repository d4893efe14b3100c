#pragma once
// The two speeds the planner's time model rests on, measured on this machine rather than assumed:
// RAM read bandwidth with the threads that will run the model, and the SSD's direct-read
// bandwidth on the file system that holds the model. Measuring takes about two seconds, so results
// are kept in ~/.cache/strata/device-speed.json (per file-system device and thread count) and
// measured again when a week old or when asked. Only a plan that streams needs them: a model
// that fits is all-resident whatever the speeds.
#include <string>

#include "tier/plan/plan.h"

namespace strata::tier {

struct DeviceSpeed {
  double ram_gbps = 0;
  double ssd_gbps = 0;
  std::string source;  // for people: "measured now", "measured 2026-11-26 (cached)", ...
};

// Bytes per second summing a buffer much larger than the caches with n_threads threads, best of 3.
double measure_ram_gbps(int n_threads);
// Random 4 MiB O_DIRECT reads of `path`, 8 in flight (as the streamers read), for about `seconds`
// after a quarter second of warm-up. Throws strata::Error when the file cannot be read.
double measure_ssd_gbps(const std::string& path, double seconds = 1.5);

// The cached speeds for `model_path`'s device and n_threads, measuring what is missing, stale or
// (remeasure) asked for. A cache that cannot be written is only a cost: nothing throws for it.
DeviceSpeed device_speed(const std::string& model_path, int n_threads, bool remeasure = false,
                         double ssd_seconds = 1.5);

// make_plan, with this machine's speeds in place of `in`'s wherever they were not given
// (ram_given, ssd_given) and the plan streams, or remeasure asks for them.
Plan plan_on_this_machine(const gguf::File& file, const ModelConfig& config, PlanInputs in, bool ram_given,
                          bool ssd_given, int n_threads, bool remeasure = false);

}  // namespace strata::tier
