#pragma once
// Back ends of RangeReader (see reader.h); internal to src/tier/io.
#include <thread>
#include <vector>

#include "tier/io/queued_reader.h"

struct io_uring;

namespace strata::tier::io::detail {

class PreadReader final : public QueuedReader {
 public:
  PreadReader(std::string path, OpenFile file, const ReaderOptions& options);
  ~PreadReader() override;
  const char* backend_name() const override { return "pread"; }

 private:
  void work(int slot_index);
  std::vector<std::thread> workers_;
};

}  // namespace strata::tier::io::detail
