// strata pull URL: downloads a GGUF model by http(s) URL into the models folder (server/download.h:
// resumable, digest-checked, renamed into place only when whole), with a progress bar.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>

#include "commands.h"
#include "server/download.h"

namespace strata::app {

namespace {

struct PullOptions {
  std::string url;
  std::string models_dir;
  std::string name;
};

std::string human_bytes(uint64_t n) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  double v = double(n);
  int u = 0;
  while (v >= 1000 && u < 4) v /= 1000, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

// On a terminal: one line redrawn in place. Elsewhere (logs, tests): a line per 10%.
class ProgressBar {
 public:
  explicit ProgressBar(std::string label) : label_(std::move(label)), tty_(::isatty(2)) {}
  void set_label(std::string label) { label_ = std::move(label); }
  void update(const server::DownloadProgress& p) {
    const auto now = std::chrono::steady_clock::now();
    if (!started_) start_ = now, started_ = true, first_ = p.completed;
    const double secs = std::chrono::duration<double>(now - start_).count();
    const double rate = secs > 0.2 ? double(p.completed - first_) / secs : 0;
    const int pct = p.total ? int(100.0 * double(p.completed) / double(p.total)) : -1;
    if (!tty_) {
      if (pct / 10 == last_decile_ && pct >= 0) return;
      if (pct < 0 && p.completed < last_bytes_ + (uint64_t(100) << 20)) return;
      last_decile_ = pct / 10;
      last_bytes_ = p.completed;
    }
    std::string bar;
    if (pct >= 0) {
      const int width = 30, filled = pct * width / 100;
      bar = " [" + std::string(size_t(filled), '#') + std::string(size_t(width - filled), ' ') + "] " +
            std::to_string(pct) + "%";
    }
    const std::string size = human_bytes(p.completed) + (p.total ? "/" + human_bytes(p.total) : "");
    const std::string speed = rate > 0 ? "  " + human_bytes(uint64_t(rate)) + "/s" : "";
    std::fprintf(stderr, "%s%s%s %s%s%s", tty_ ? "\r" : "", label_.c_str(), bar.c_str(), size.c_str(), speed.c_str(),
                 tty_ ? "\033[K" : "\n");
    drawn_ = true;
  }
  void finish() {
    if (tty_ && drawn_) std::fputc('\n', stderr);
    drawn_ = false;
  }

 private:
  std::string label_;
  bool tty_;
  bool started_ = false, drawn_ = false;
  std::chrono::steady_clock::time_point start_;
  uint64_t first_ = 0, last_bytes_ = 0;
  int last_decile_ = -1;
};

}  // namespace

void add_pull_command(CLI::App& app) {
  auto opts = std::make_shared<PullOptions>();
  CLI::App* cmd = app.add_subcommand(
      "pull", "download a GGUF model by http(s) URL (e.g. a Hugging Face resolve link) into the models folder");
  cmd->add_option("url", opts->url, "http:// or https:// URL of a .gguf file")->required();
  cmd->add_option("--models", opts->models_dir, "folder of *.gguf models (default: ~/.strata/models)");
  cmd->add_option("--name", opts->name, "model name (default: the URL's file name without .gguf)");
  cmd->callback([opts] {
    if (!server::is_download_url(opts->url))
      throw server::DownloadError(400, "strata pull takes an http:// or https:// URL, not \"" + opts->url +
                                           "\" (to add a local file, copy it into the models folder)");
    server::DownloadRequest req;
    req.url = opts->url;
    req.models_dir = opts->models_dir.empty() ? default_models_dir() : opts->models_dir;
    req.name = opts->name;
    auto bar = std::make_shared<ProgressBar>("pulling");
    req.on_status = [bar](const std::string& s) {
      bar->finish();
      if (s.rfind("pulling ", 0) == 0) return bar->set_label(s);  // the bar names the model
      std::fprintf(stderr, "%s\n", s.c_str());
    };
    req.on_progress = [bar](const server::DownloadProgress& p) {
      bar->update(p);
      return true;
    };
    server::DownloadResult r;
    try {
      r = server::download_model(req);
    } catch (...) {
      bar->finish();
      throw;
    }
    bar->finish();
    if (r.already_present) {
      std::printf("%s is already in %s (delete it to pull again)\n", r.name.c_str(), req.models_dir.c_str());
      return;
    }
    std::printf("pulled %s: %s, %llu bytes, sha256 %s (%s)%s\n", r.name.c_str(), r.path.c_str(),
                (unsigned long long)r.size_bytes, r.sha256.c_str(),
                r.digest_checked ? "matches the source's digest" : "the source publishes no digest",
                r.resumed_from ? (", resumed at byte " + std::to_string(r.resumed_from)).c_str() : "");
  });
}

}  // namespace strata::app
