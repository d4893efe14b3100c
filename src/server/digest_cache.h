#pragma once
// The SHA-256 digests of the model files (/api/tags, /api/show, /api/ps), computed once per file
// version (path, size, modification time). Hashing takes about a second per GB, so the server
// hashes every model on a background thread when it starts; a request that needs a digest not
// yet known waits for the hash in progress, or hashes the file itself.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace strata::server {

struct FileVersion {
  std::string path;
  uint64_t size_bytes = 0;
  int64_t modified_unix = 0;  // seconds
};

class DigestCache {
 public:
  DigestCache() = default;
  ~DigestCache();  // stops the background hashing within one chunk and waits for it
  DigestCache(const DigestCache&) = delete;
  DigestCache& operator=(const DigestCache&) = delete;

  // Starts hashing these files one after another on a background thread (once per cache).
  void hash_in_background(std::vector<FileVersion> files);
  // The lower-case hex SHA-256 of this version of the file. Throws internal_error (errors.h) when the file
  // cannot be read (or the cache is being destroyed).
  std::string get(const FileVersion& file);

 private:
  std::string hash(const std::string& path) const;  // reads in chunks, checking stop_

  std::mutex mutex_;  // guards digests_ and hashing_; never held while hashing
  std::condition_variable hashed_;
  struct Cached {
    uint64_t size_bytes;
    int64_t modified_unix;
    std::string sha256;
  };
  std::map<std::string, Cached> digests_;  // by path
  std::set<std::string> hashing_;          // paths some thread is hashing now
  std::atomic<bool> stop_{false};
  std::thread background_;
};

}  // namespace strata::server
