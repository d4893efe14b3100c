#include "server/keep_alive.h"

#include <cctype>
#include <cmath>
#include <cstdlib>

#include "server/limits.h"
#include "util/error.h"

namespace strata::server {

std::optional<double> parse_duration_seconds(const std::string& s) {
  // Go's time.ParseDuration, whose numbers strtod reads (so "1e300h" is a duration, and forever),
  // or one bare number: seconds.
  size_t i = 0;
  double sign = 1;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) sign = s[i++] == '-' ? -1 : 1;
  double total = 0;
  bool any = false;
  while (i < s.size()) {
    if (!std::isdigit((unsigned char)s[i]) && s[i] != '.') return std::nullopt;
    char* end = nullptr;
    const double v = std::strtod(s.c_str() + i, &end);
    if (end == s.c_str() + i) return std::nullopt;
    i = size_t(end - s.c_str());
    std::string unit;
    while (i < s.size() && !std::isdigit((unsigned char)s[i]) && s[i] != '.') unit += s[i++];
    double scale;
    if (unit.empty()) {
      if (any || i != s.size()) return std::nullopt;
      scale = 1;  // a bare number: seconds
    } else if (unit == "ns") {
      scale = 1e-9;
    } else if (unit == "us" || unit == "\xC2\xB5s" || unit == "\xCE\xBCs") {  // µs: micro sign or Greek mu
      scale = 1e-6;
    } else if (unit == "ms") {
      scale = 1e-3;
    } else if (unit == "s") {
      scale = 1;
    } else if (unit == "m") {
      scale = 60;
    } else if (unit == "h") {
      scale = 3600;
    } else {
      return std::nullopt;
    }
    total += v * scale;
    any = true;
  }
  if (!any || std::isnan(total)) return std::nullopt;
  return sign * total;
}

double keep_alive_from_env(const char* value) {
  if (!value || !*value) return kDefaultKeepAliveSeconds;
  const auto seconds = parse_duration_seconds(value);
  if (!seconds)
    throw Error(std::string("OLLAMA_KEEP_ALIVE=\"") + value +
                "\" is not a duration (like \"5m\", \"1h30m\", \"-1\" for forever, or a number of seconds)");
  return *seconds;
}

void KeepAlive::restart(double seconds, Clock::time_point now) {
  forever = seconds < 0 || !(seconds < limits::kKeepAliveForeverSeconds);
  expires_at = now + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(forever ? 0 : seconds));
}

KeepAliveReaper::KeepAliveReaper(Reap reap) : reap_(std::move(reap)) {
  thread_ = std::thread([this] { loop(); });
}

KeepAliveReaper::~KeepAliveReaper() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void KeepAliveReaper::wake() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    woken_ = true;
  }
  cv_.notify_all();
}

void KeepAliveReaper::loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  std::optional<Clock::time_point> next;
  while (!stopping_) {
    auto ready = [&] { return stopping_ || woken_; };
    if (next)
      cv_.wait_until(lock, *next, ready);
    else
      cv_.wait(lock, ready);
    if (stopping_) break;
    woken_ = false;
    lock.unlock();
    next = reap_(Clock::now());
    lock.lock();
  }
}

}  // namespace strata::server
