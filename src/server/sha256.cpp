#include "server/sha256.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <vector>

#include "server/errors.h"

namespace strata::server {

namespace {

// OpenSSL's EVP digest (SHA-NI or AVX2 where the CPU has them).
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
    if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1)
      throw internal_error("SHA-256 is unavailable (OpenSSL)");
  }
  void update(const void* data, size_t n) { EVP_DigestUpdate(ctx_.get(), data, n); }
  std::string hex() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx_.get(), digest, &n);
    static const char* kHex = "0123456789abcdef";
    std::string out;
    for (unsigned int i = 0; i < n; ++i) {
      out += kHex[digest[i] >> 4];
      out += kHex[digest[i] & 15];
    }
    return out;
  }

 private:
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx_;
};

}  // namespace

std::string sha256_hex(const void* data, size_t n_bytes) {
  Sha256 s;
  s.update(data, n_bytes);
  return s.hex();
}

std::string sha256_file(const std::string& path, const std::atomic<bool>* stop) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw internal_error("cannot read " + path + ": " + std::strerror(errno));
  Sha256 s;
  std::vector<uint8_t> buf(size_t(1) << 20);
  off_t done = 0;
  while (true) {
    if (stop && stop->load()) {
      ::close(fd);
      throw internal_error("stopped before " + path + " was hashed");
    }
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      throw internal_error("cannot read " + path + ": " + std::strerror(err));
    }
    if (n == 0) break;
    s.update(buf.data(), size_t(n));
    ::posix_fadvise(fd, done, n, POSIX_FADV_DONTNEED);
    done += n;
  }
  ::close(fd);
  return s.hex();
}

}  // namespace strata::server
