#include "tier/io/queued_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "util/error.h"

namespace strata::tier::io::detail {

namespace {

int64_t mtime_ns_of(const struct stat& st) { return int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec; }

std::string errno_text(int err) { return std::strerror(err); }

uint64_t ns_since(std::chrono::steady_clock::time_point t) {
  return uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t).count());
}

}  // namespace

OpenFile open_file(const std::string& path, bool want_direct) {
  OpenFile f;
  if (want_direct) {
    f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
    f.direct = f.fd >= 0;
    if (f.fd < 0 && errno != EINVAL) throw Error("opening " + path + ": " + errno_text(errno));
  }
  if (f.fd < 0) f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0) throw Error("opening " + path + ": " + errno_text(errno));
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) {
    int err = errno;
    ::close(f.fd);
    throw Error("stat " + path + ": " + errno_text(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(f.fd);
    throw Error("opening " + path + ": not a regular file");
  }
  f.size_bytes = static_cast<uint64_t>(st.st_size);
  f.mtime_ns = mtime_ns_of(st);
  // Some filesystems accept O_DIRECT at open and refuse it at read time: probe one block.
  if (f.direct && f.size_bytes > 0) {
    AlignedBuffer probe(kDirectAlign);
    if (::pread(f.fd, probe.data(), kDirectAlign, 0) < 0) {
      if (errno != EINVAL) {
        int err = errno;
        ::close(f.fd);
        throw Error("reading " + path + " at offset 0: " + errno_text(err));
      }
      ::close(f.fd);
      f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (f.fd < 0) throw Error("opening " + path + ": " + errno_text(errno));
      f.direct = false;
    }
  }
  return f;
}

QueuedReader::QueuedReader(std::string path, OpenFile file, const ReaderOptions& options, int n_slots)
    : path_(std::move(path)),
      file_(file),
      piece_bytes_(align_up(std::max<uint64_t>(options.piece_bytes, kDirectAlign), kDirectAlign)),
      n_slots_(n_slots) {
  // Buffered reads go straight into the caller's memory; only direct reads of unaligned ranges
  // need staging. A slot is allocated the first time it stages a piece: the streamers read
  // aligned ranges into aligned memory and never need one, so their budget carries no staging.
  slots_.resize(size_t(n_slots));
}

QueuedReader::~QueuedReader() {
  if (file_.fd >= 0) ::close(file_.fd);
}

Ticket QueuedReader::submit(std::span<const ReadRequest> requests) {
  const uint64_t align = alignment();
  uint64_t n_pieces = 0, n_bytes = 0;
  for (const ReadRequest& r : requests) {
    if (r.offset > file_.size_bytes || r.length > file_.size_bytes - r.offset) {
      throw Error("reading " + path_ + ": range at offset " + std::to_string(r.offset) + " (" +
                  std::to_string(r.length) + " bytes) ends past the end of the file (" +
                  std::to_string(file_.size_bytes) + " bytes)");
    }
    if (r.length == 0) continue;
    uint64_t start = align_down(r.offset, align), end = align_up(r.offset + r.length, align);
    n_pieces += count_pieces(end - start);
    n_bytes += r.length;
  }
  Ticket t;
  {
    std::lock_guard lk(mu_);
    t = first_ticket_ + tickets_.size();
    tickets_.push_back(TicketState{n_pieces, false, {}});
    for (const ReadRequest& r : requests) {
      if (r.length == 0) continue;
      auto dst_addr = reinterpret_cast<uintptr_t>(r.dst);
      Job job;
      job.req = r;
      job.ticket = t;
      job.next_offset = align_down(r.offset, align);
      job.end_offset = align_up(r.offset + r.length, align);
      // Direct reads land in dst when they start at an aligned place of both; a piece that would
      // run past the request's end (an unaligned length, e.g. at the end of the file) is staged.
      job.to_dst = !file_.direct || (r.offset % kDirectAlign == 0 && dst_addr % kDirectAlign == 0);
      jobs_.push_back(job);
    }
  }
  n_requests_ += requests.size();
  bytes_requested_ += n_bytes;
  n_pieces_ += n_pieces;
  if (n_pieces > 0) work_cv_.notify_all();
  return t;
}

void QueuedReader::take_piece(Piece& p, int slot_index) {
  if (at_disk_++ == 0) idle_ns_ += ns_since(idle_since_);
  Job& job = jobs_.front();
  const uint64_t req_end = job.req.offset + job.req.length;
  const uint64_t start = job.next_offset;
  const uint64_t end = job.end_offset - start <= piece_bytes_ + kPieceSlack ? job.end_offset : start + piece_bytes_;
  auto* req_dst = static_cast<std::byte*>(job.req.dst);
  p.file_offset = start;
  p.read_bytes = static_cast<uint32_t>(end - start);
  p.need_bytes = static_cast<uint32_t>(std::min(end, req_end) - start);
  p.staged = !job.to_dst || (file_.direct && end > req_end);
  if (p.staged && !slots_[size_t(slot_index)].data())
    slots_[size_t(slot_index)] = AlignedBuffer(piece_bytes_ + kPieceSlack);
  std::byte* slot = slots_[size_t(slot_index)].data();
  // Not staged: start >= req.offset (aligned request, or buffered reads which are not widened).
  p.read_dst = p.staged ? slot : req_dst + (start - job.req.offset);
  p.req_offset = job.req.offset;
  p.req_dst = req_dst;
  p.ticket = job.ticket;
  job.next_offset = end;
  if (end >= job.end_offset) jobs_.pop_front();
}

void QueuedReader::complete_piece(const Piece& p, int64_t result) {
  std::string error;
  uint64_t got = result > 0 ? static_cast<uint64_t>(result) : 0;
  if (result < 0) {
    error = errno_text(static_cast<int>(-result));
  } else {
    // A short read that is not at the end of the file: read on (direct reads only from an aligned point).
    while (got < p.need_bytes && got > 0 && (!file_.direct || got % kDirectAlign == 0)) {
      ssize_t r = ::pread(file_.fd, p.read_dst + got, p.read_bytes - got, static_cast<off_t>(p.file_offset + got));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) {
        error = errno_text(errno);
        break;
      }
      if (r == 0) break;
      got += static_cast<uint64_t>(r);
    }
    if (error.empty() && got < p.need_bytes) {
      error = "short read (" + std::to_string(got) + " of " + std::to_string(p.need_bytes) +
              " bytes): the file shrank since it was opened";
    }
  }
  if (error.empty() && p.staged) {
    // Interior of the piece that belongs to the request.
    uint64_t lo = std::max(p.file_offset, p.req_offset);
    uint64_t hi = p.file_offset + p.need_bytes;
    std::memcpy(p.req_dst + (lo - p.req_offset), p.read_dst + (lo - p.file_offset), hi - lo);
  }
  if (!file_.direct && got > 0) {
    ::posix_fadvise(file_.fd, static_cast<off_t>(p.file_offset), static_cast<off_t>(got), POSIX_FADV_DONTNEED);
  }
  bytes_read_ += got;
  std::lock_guard lk(mu_);
  if (--at_disk_ == 0) idle_since_ = std::chrono::steady_clock::now();
  TicketState& ts = ticket_state(p.ticket);
  if (!error.empty() && ts.error.empty()) {
    ts.error = "reading " + path_ + " at offset " + std::to_string(p.file_offset) + " (" +
               std::to_string(p.read_bytes) + " bytes): " + error;
  }
  if (--ts.pieces_left == 0) done_cv_.notify_all();
}

void QueuedReader::retire_waited() {
  while (!tickets_.empty() && tickets_.front().waited) {
    tickets_.front() = TicketState{};
    tickets_.pop_front();
    ++first_ticket_;
  }
}

void QueuedReader::check_unchanged() const {
  struct stat st {};
  if (::fstat(file_.fd, &st) != 0) throw Error("stat " + path_ + ": " + errno_text(errno));
  if (static_cast<uint64_t>(st.st_size) != file_.size_bytes || mtime_ns_of(st) != file_.mtime_ns) {
    throw Error("reading " + path_ + ": the file changed since it was opened (size " +
                std::to_string(file_.size_bytes) + " -> " + std::to_string(st.st_size) +
                " bytes, or its mtime); its data cannot be trusted");
  }
}

void QueuedReader::wait(Ticket t) {
  auto t0 = std::chrono::steady_clock::now();
  std::string error;
  {
    std::unique_lock lk(mu_);
    if (t < first_ticket_ || t >= first_ticket_ + tickets_.size() || ticket_state(t).waited) {
      throw Error("reading " + path_ + ": ticket " + std::to_string(t) + " unknown or already waited");
    }
    done_cv_.wait(lk, [&] { return ticket_state(t).pieces_left == 0; });
    TicketState& ts = ticket_state(t);
    ts.waited = true;
    error.swap(ts.error);
    retire_waited();
  }
  wait_ns_ += static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
  if (!error.empty()) throw Error(error);
  check_unchanged();
}

bool QueuedReader::ready(Ticket t) {
  std::lock_guard lk(mu_);
  if (t < first_ticket_ || t >= first_ticket_ + tickets_.size()) return true;  // unknown: wait() will say so
  return ticket_state(t).pieces_left == 0;
}

void QueuedReader::wait_all() {
  Ticket last;
  Ticket first;
  {
    std::lock_guard lk(mu_);
    first = first_ticket_;
    last = first_ticket_ + tickets_.size();
  }
  std::string first_error;
  for (Ticket t = first; t < last; ++t) {
    {
      std::lock_guard lk(mu_);
      if (t < first_ticket_ || ticket_state(t).waited) continue;
    }
    try {
      wait(t);
    } catch (const Error& e) {
      if (first_error.empty()) first_error = e.what();
    }
  }
  if (!first_error.empty()) throw Error(first_error);
}

uint64_t QueuedReader::cancel(Ticket t) {
  uint64_t n_pieces = 0, n_bytes = 0;
  {
    std::lock_guard lk(mu_);
    if (t < first_ticket_ || t >= first_ticket_ + tickets_.size()) return 0;
    jobs_.remove_if([&](const Job& job) {
      if (job.ticket != t) return false;
      n_pieces += count_pieces(job.end_offset - job.next_offset);
      n_bytes += job.end_offset - job.next_offset;
      return true;
    });
    TicketState& ts = ticket_state(t);
    ts.pieces_left -= n_pieces;
    if (ts.pieces_left == 0) done_cv_.notify_all();
  }
  n_pieces_ -= n_pieces;
  return n_bytes;
}

IoCounters QueuedReader::counters() const {
  IoCounters c;
  c.n_requests = n_requests_;
  c.n_pieces = n_pieces_;
  c.bytes_requested = bytes_requested_;
  c.bytes_read = bytes_read_;
  c.wait_ns = wait_ns_;
  std::lock_guard lk(mu_);
  c.idle_ns = idle_ns_;
  if (at_disk_ == 0) c.idle_ns += ns_since(idle_since_);  // the idle spell now under way
  return c;
}

}  // namespace strata::tier::io::detail
