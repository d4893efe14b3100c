#include "server/digest_cache.h"

#include <sys/syscall.h>
#include <unistd.h>

#include "server/errors.h"
#include "server/sha256.h"

namespace strata::server {

namespace {

// The idle I/O class for the calling thread (linux/ioprio.h, which Debian's libc does not wrap):
// with a scheduler that honours it (mq-deadline, bfq), hashing reads only when streaming does not.
void lower_io_priority() {
  constexpr int kWhoProcess = 1, kClassIdle = 3, kClassShift = 13;
  ::syscall(SYS_ioprio_set, kWhoProcess, 0, kClassIdle << kClassShift);  // best effort: no error to report
}

}  // namespace

DigestCache::~DigestCache() {
  stop_ = true;
  if (background_.joinable()) background_.join();
}

void DigestCache::hash_in_background(std::vector<FileVersion> files) {
  if (background_.joinable()) return;
  background_ = std::thread([this, files = std::move(files)] {
    lower_io_priority();  // a digest can wait; the weights being streamed cannot
    for (const FileVersion& f : files) {
      if (stop_) return;
      try {
        get(f);
      } catch (const std::exception&) {
        // an unreadable file: the request that needs its digest hashes it again and says why
      }
    }
  });
}

std::string DigestCache::get(const FileVersion& file) {
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    auto it = digests_.find(file.path);
    if (it != digests_.end() && it->second.size_bytes == file.size_bytes &&
        it->second.modified_unix == file.modified_unix)
      return it->second.sha256;
    if (!hashing_.count(file.path)) break;
    hashed_.wait(lock);  // another thread is hashing this path; it may be the version asked for
  }
  hashing_.insert(file.path);
  lock.unlock();
  std::string hex;
  try {
    hex = hash(file.path);
  } catch (...) {
    lock.lock();
    hashing_.erase(file.path);
    hashed_.notify_all();
    throw;
  }
  lock.lock();
  hashing_.erase(file.path);
  digests_[file.path] = Cached{file.size_bytes, file.modified_unix, hex};
  hashed_.notify_all();
  return hex;
}

std::string DigestCache::hash(const std::string& path) const { return sha256_file(path, &stop_); }

}  // namespace strata::server
