#pragma once
// How long a model stays loaded after its last request (Ollama's keep_alive), and the reaper that
// unloads it when that time is up. The reaper knows no models: it calls back the registry, which
// unloads what expired and says when the next one will.
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace strata::server {

using Clock = std::chrono::steady_clock;

// Ollama's default keep_alive (envconfig.KeepAlive): 5 minutes.
constexpr double kDefaultKeepAliveSeconds = 5 * 60;

// A duration in Ollama's syntax, in seconds: Go's time.ParseDuration ("5m", "1h30m", "1.5h",
// "-1s", "0"; units ns us µs ms s m h) or a bare number of seconds ("300", "-1"). nullopt when
// it is neither. A negative duration means forever.
std::optional<double> parse_duration_seconds(const std::string& text);

// OLLAMA_KEEP_ALIVE as Ollama reads it (a duration or a whole number of seconds; negative:
// forever); kDefaultKeepAliveSeconds when unset or empty. Throws strata::Error naming the
// variable for a value that is neither.
double keep_alive_from_env(const char* value);

// When a model that no request holds is unloaded.
struct KeepAlive {
  bool forever = true;
  Clock::time_point expires_at{};

  // After a request: keep the model `seconds` from now; < 0, or beyond
  // limits::kKeepAliveForeverSeconds (1e300 must not wrap to a past date), is forever.
  void restart(double seconds, Clock::time_point now);
  bool expired(Clock::time_point now) const { return !forever && expires_at <= now; }
};

// A thread that calls `reap(now)` whenever a keep-alive may have run out: at the time the last
// call returned (the next expiry; nullopt: none), and whenever wake() is called (a keep-alive
// changed). reap must not call back into the reaper.
class KeepAliveReaper {
 public:
  using Reap = std::function<std::optional<Clock::time_point>(Clock::time_point now)>;
  explicit KeepAliveReaper(Reap reap);
  ~KeepAliveReaper();  // stops and joins the thread
  KeepAliveReaper(const KeepAliveReaper&) = delete;
  KeepAliveReaper& operator=(const KeepAliveReaper&) = delete;

  void wake();

 private:
  void loop();

  Reap reap_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool woken_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace strata::server
