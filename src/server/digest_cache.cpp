#include "server/digest_cache.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "server/errors.h"

namespace strata::server {

DigestCache::~DigestCache() {
  stop_ = true;
  if (background_.joinable()) background_.join();
}

void DigestCache::hash_in_background(std::vector<FileVersion> files) {
  if (background_.joinable()) return;
  background_ = std::thread([this, files = std::move(files)] {
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

std::string DigestCache::hash(const std::string& path) const {
  // OpenSSL's EVP digest, as sha256_file() (server/sha256.cpp) uses, fed chunk by chunk so that
  // a stop is seen within one chunk rather than after a whole multi-GB file.
  struct File {
    int fd;
    ~File() {
      if (fd >= 0) ::close(fd);
    }
  } f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) throw HttpError(500, "cannot read " + path + ": " + std::strerror(errno));
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1)
    throw HttpError(500, "SHA-256 is unavailable (OpenSSL)");
  std::vector<unsigned char> buf(size_t(1) << 20);
  while (true) {
    if (stop_) throw HttpError(500, "the server is stopping; " + path + " was not hashed");
    const ssize_t n = ::read(f.fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw HttpError(500, "cannot read " + path + ": " + std::strerror(errno));
    if (n == 0) break;
    EVP_DigestUpdate(ctx.get(), buf.data(), size_t(n));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n_digest = 0;
  EVP_DigestFinal_ex(ctx.get(), digest, &n_digest);
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < n_digest; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 15];
  }
  return out;
}

}  // namespace strata::server
