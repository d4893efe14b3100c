#pragma once
// Reads exact byte ranges of one file (a model) into caller memory, bypassing the page cache.
//
// GGUF aligns tensors to 32 bytes, O_DIRECT needs 4096: each request is widened to its 4096-aligned
// superset, split into pieces of `piece_bytes`, read into aligned staging slots and the interior
// copied out. A request whose offset, length and dst are all 4096-aligned is read straight into
// dst. Up to `queue_depth` pieces are in flight. Nothing is allocated per request in steady state:
// a staging slot is allocated once, when it is first needed, and queues keep their capacity.
//
// Two back ends behind one interface: io_uring (one I/O thread owns the ring) and a pool of threads
// doing pread (where io_uring_queue_init fails, or by option). Where O_DIRECT is refused (tmpfs),
// reads are buffered and followed by posix_fadvise(DONTNEED); `direct()` says which.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace strata::tier::io {

struct ReadRequest {
  uint64_t offset = 0;  // byte offset in the file, any alignment
  uint64_t length = 0;  // bytes; 0 is a no-op
  void* dst = nullptr;  // caller memory of `length` bytes, valid until the ticket is waited
};

enum class Backend { automatic, uring, threads };

struct ReaderOptions {
  Backend backend = Backend::automatic;  // automatic: io_uring, else the pread pool
  bool direct = true;                    // false: buffered reads + fadvise(DONTNEED), as on tmpfs
  size_t piece_bytes = size_t{1} << 20;  // rounded up to 4096; 1–4 MiB saturates an NVMe disk
  int queue_depth = 32;                  // pieces in flight; also the number of staging slots
  // Staging memory (direct reads of unaligned ranges only): up to queue_depth × (piece_bytes +
  // 4 KiB), each slot allocated when it first stages a piece.
};

// Telemetry; monotonically increasing over the reader's life.
struct IoCounters {
  uint64_t n_requests = 0;       // ranges submitted (zero-length ones included)
  uint64_t n_pieces = 0;         // reads issued to the disk
  uint64_t bytes_requested = 0;  // sum of request lengths
  uint64_t bytes_read = 0;       // bytes read from the disk, alignment padding included
  uint64_t wait_ns = 0;          // time callers spent blocked in wait()
  uint64_t idle_ns = 0;          // time with no read at the disk
};

using Ticket = uint64_t;  // one per submit(); 0 is never issued

class RangeReader {
 public:
  virtual ~RangeReader() = default;

  // Queues the ranges and returns at once; reads proceed in the background. Throws strata::Error
  // (naming file, offset, length) for a range past the end of the file, before anything is queued.
  virtual Ticket submit(std::span<const ReadRequest> requests) = 0;
  // Blocks until every range of `ticket` is in its dst. Throws strata::Error (file, offset, cause)
  // on EIO, a short read, or a file whose size or mtime changed since open; dst is then undefined.
  // Each ticket is waited at most once.
  virtual void wait(Ticket ticket) = 0;
  // Whether every range of `ticket` has arrived (or failed), so that wait(ticket) returns at once.
  virtual bool ready(Ticket ticket) = 0;
  // Waits every ticket not yet waited; throws the first error among them.
  virtual void wait_all() = 0;
  // Drops the pieces of `ticket` not yet issued to the disk and returns their bytes (alignment
  // padding included; 0 when every piece was issued). Pieces in flight still land: the ticket
  // must still be waited before its memory is reused, and its dst then holds partial data.
  // For reads started on a guess that turned out wrong: the disk goes on to what is needed.
  virtual uint64_t cancel(Ticket ticket) = 0;

  void read(std::span<const ReadRequest> requests) { wait(submit(requests)); }
  void read(uint64_t offset, uint64_t length, void* dst) {
    ReadRequest r{offset, length, dst};
    read(std::span<const ReadRequest>(&r, 1));
  }

  virtual IoCounters counters() const = 0;
  virtual bool direct() const = 0;               // false: O_DIRECT was refused, reads are buffered
  virtual const char* backend_name() const = 0;  // "io_uring" or "pread"
  virtual uint64_t file_bytes() const = 0;
  virtual const std::string& path() const = 0;
};

// Opens `path` for reading. Throws strata::Error if the file cannot be opened, or if the io_uring
// back end was asked for explicitly and is unavailable.
std::unique_ptr<RangeReader> open_range_reader(const std::string& path, const ReaderOptions& options = {});

}  // namespace strata::tier::io
