#pragma once
// Pulling a GGUF model by http(s) URL into the models folder (`strata pull URL`, /api/pull with a
// URL), over libcurl. The file lands as NAME.gguf.partial beside the models and is renamed to
// NAME.gguf only once it is whole: its size matches what the source announced, its SHA-256
// matches the digest the source publishes (Hugging Face's X-Linked-Etag, or an ETag of 64 hex
// digits), and the GGUF reader accepts it (magic, header, every tensor inside the file).
//
// What stays behind on failure: a transfer that stops (dropped connection, stall, timeout, the
// caller cancelling) keeps NAME.gguf.partial so that the next pull of the same URL resumes it with
// a Range request (If-Range on the source's validator, so a changed file starts over). A file that
// is wrong (not GGUF, wrong digest, wrong size, refused by the GGUF reader, too large) or an HTTP
// error leaves nothing: the partial is deleted.
#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>

namespace strata::server {

namespace download_limits {
constexpr size_t kMaxUrlBytes = 8192;                          // longer URLs are refused
constexpr long kMaxRedirects = 10;                             // Hugging Face redirects once, to its CDN
constexpr long kConnectTimeoutSeconds = 30;                    // per connection attempt
constexpr long kStallSeconds = 60;                             // no byte for this long: the transfer stops
constexpr uint64_t kMaxFileBytes = uint64_t(2) << 40;          // 2 TiB: larger announced or received: refused
constexpr uint64_t kFreeSpaceMarginBytes = uint64_t(1) << 30;  // left free on the models folder's disk
constexpr size_t kMaxValidatorBytes = 256;                     // an ETag kept for If-Range
}  // namespace download_limits

struct DownloadProgress {
  std::string digest;      // "sha256:HEX" when the source publishes it, else empty
  uint64_t total = 0;      // bytes of the whole file; 0 while unknown
  uint64_t completed = 0;  // bytes on disk, resumed bytes included
};

struct DownloadRequest {
  std::string url;         // http:// or https://
  std::string models_dir;  // where NAME.gguf (and NAME.gguf.partial while it comes) goes
  std::string name;        // the model's name; empty: derived from the URL's file name
  // Called as bytes arrive (at most ~10 times a second, and once at the end); false cancels
  // the transfer (the partial is kept, as for a dropped connection).
  std::function<bool(const DownloadProgress&)> on_progress;
  // Called once per step: "pulling NAME", "verifying sha256 digest", "writing model".
  std::function<void(const std::string&)> on_status;
};

struct DownloadResult {
  std::string name;    // the model's name (file stem)
  std::string path;    // MODELS/NAME.gguf
  std::string sha256;  // of the file, lower-case hex
  uint64_t size_bytes = 0;
  uint64_t resumed_from = 0;     // bytes a previous partial contributed
  bool already_present = false;  // NAME.gguf was there: nothing downloaded
  bool digest_checked = false;   // the source published a digest and it matched
};

// Why a download failed, with an HTTP status for the API (400: the request or the file is wrong;
// 502: the source failed; 500: local disk).
class DownloadError : public std::runtime_error {
 public:
  DownloadError(int status, const std::string& what) : std::runtime_error(what), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

bool is_download_url(const std::string& text);
// The model name a URL's last path segment gives: ".../resolve/main/SmolLM2-135M.Q4_1.gguf?download=true"
// -> "SmolLM2-135M.Q4_1". Throws DownloadError(400) when the URL names no usable .gguf file.
std::string model_name_from_url(const std::string& url);
// Downloads (or resumes) req.url into req.models_dir; throws DownloadError naming the URL and the
// problem.
DownloadResult download_model(const DownloadRequest& req);

}  // namespace strata::server
