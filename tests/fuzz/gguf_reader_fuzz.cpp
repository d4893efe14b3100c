// libFuzzer target for the GGUF reader: any input parses or throws strata::Error; anything else
// (a crash, a sanitizer report, another exception) is a bug. A file that parses is written back
// with the writer and must parse again to the same metadata and tensors.
#include <cstdint>
#include <cstring>
#include <ostream>
#include <streambuf>

#include "gguf/gguf.h"
#include "gguf/inspect.h"
#include "gguf/writer.h"
#include "util/error.h"

namespace {

struct NullBuf : std::streambuf {
  int overflow(int c) override { return c; }
  std::streamsize xsputn(const char*, std::streamsize n) override { return n; }
};

[[noreturn]] void bug(const char* what) {
  __builtin_trap();
  (void)what;
}

void round_trip(const strata::gguf::File& f) {
  using namespace strata::gguf;
  Writer w(f.alignment());
  for (const auto& [key, value] : f.metadata()) w.set(key, value);
  for (const auto& t : f.tensors()) {
    const uint8_t* src = f.tensor_data(t);
    w.add_tensor(t.name, t.type, t.shape, [src](uint8_t* dst, uint64_t n) { std::memcpy(dst, src, n); });
  }
  std::vector<uint8_t> bytes = w.to_bytes();
  auto g = File::parse(bytes.data(), bytes.size(), "round-trip");
  if (g->metadata().size() != f.metadata().size() || g->tensors().size() != f.tensors().size()) bug("counts differ");
  for (size_t i = 0; i < f.metadata().size(); ++i) {
    const auto& a = f.metadata()[i];
    const auto& b = g->metadata()[i];
    if (a.first != b.first || a.second.type != b.second.type) bug("metadata differs");
    if (a.second.to_display(SIZE_MAX) != b.second.to_display(SIZE_MAX)) bug("metadata value differs");
  }
  for (size_t i = 0; i < f.tensors().size(); ++i) {
    const auto& a = f.tensors()[i];
    const auto& b = g->tensors()[i];
    if (a.name != b.name || a.type != b.type || a.shape != b.shape || a.n_bytes != b.n_bytes) bug("tensor differs");
    if (std::memcmp(f.tensor_data(a), g->tensor_data(b), a.n_bytes) != 0) bug("tensor data differs");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::unique_ptr<strata::gguf::File> f;
  try {
    f = strata::gguf::File::parse(data, size, "fuzz.gguf");
  } catch (const strata::Error&) {
    return 0;
  }
  // Touch everything a consumer would.
  NullBuf buf;
  std::ostream null_out(&buf);
  strata::gguf::print_inspect(*f, null_out, true);
  volatile uint8_t sink = 0;
  for (const auto& t : f->tensors()) {
    sink = sink + f->tensor_data(t)[0] + f->tensor_data(t)[t.n_bytes - 1];
    if (f->find_tensor(t.name) != &t) bug("find_tensor");
  }
  for (const auto& [key, value] : f->metadata())
    if (f->find(key) != &value) bug("find");
  try {  // typed getters throw strata::Error on a key of another type
    (void)f->get_int("general.alignment", 0);
    (void)f->architecture();
  } catch (const strata::Error&) {
  }
  try {
    round_trip(*f);
  } catch (const strata::Error&) {
    // The writer may refuse what the reader accepts only for integer values out of range, which
    // cannot come from a file; anything else is a bug.
    bug("writer refused a parsed file");
  }
  return 0;
}
