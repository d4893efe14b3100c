#include "tier/io/reader.h"

#include <unistd.h>

#include "tier/io/pread_reader.h"
#include "util/error.h"

namespace strata::tier::io {

namespace detail {
std::unique_ptr<RangeReader> make_uring_reader(const std::string& path, OpenFile file, const ReaderOptions& options,
                                               std::string* why_not);
}

std::unique_ptr<RangeReader> open_range_reader(const std::string& path, const ReaderOptions& options) {
  if (options.piece_bytes > (size_t{1} << 30)) throw Error("reader for " + path + ": piece size above 1 GiB");
  detail::OpenFile file = detail::open_file(path, options.direct);
  // From here the reader owns the fd.
  if (options.backend != Backend::threads) {
    std::string why_not;
    if (auto r = detail::make_uring_reader(path, file, options, &why_not)) return r;
    if (options.backend == Backend::uring) {
      ::close(file.fd);
      throw Error("reading " + path + ": io_uring unavailable: " + why_not);
    }
  }
  return std::make_unique<detail::PreadReader>(path, file, options);
}

}  // namespace strata::tier::io
