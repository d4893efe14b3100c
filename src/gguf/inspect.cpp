#include "gguf/inspect.h"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <map>

namespace strata::gguf {
namespace {

std::string human_bytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = double(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", v, units[u]);
  return buf;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// Arrays show their element type and length in the type column: "array<string>[49152]".
std::string value_type_string(const Value& v) {
  if (v.type != ValueType::ARRAY) return value_type_name(v.type);
  const auto* a = std::get_if<Array>(&v.data);
  return a ? std::string("array<") + value_type_name(a->elem_type) + ">[" + std::to_string(a->items.size()) + "]"
           : "array";
}

// Keys and names come from the file: never send its control characters to a terminal.
std::string printable(const std::string& s) {
  std::string out = s;
  for (char& c : out)
    if (uint8_t(c) < 0x20 || uint8_t(c) == 0x7f) c = '?';
  return out;
}

}  // namespace

void print_inspect(const File& file, std::ostream& out, bool show_all_metadata) {
  out << "file:       " << printable(file.path()) << "\n";
  out << "version:    " << file.version() << "\n";
  out << "alignment:  " << file.alignment() << "\n";
  out << "size:       " << file.file_size() << " bytes (" << human_bytes(file.file_size()) << "), data at offset "
      << file.data_offset() << "\n";
  out << "metadata:   " << file.metadata().size() << " keys\n";
  out << "tensors:    " << file.tensors().size() << "\n";

  out << "\nmetadata\n";
  size_t key_width = 0;
  for (const auto& [key, value] : file.metadata()) key_width = std::max(key_width, key.size());
  key_width = std::min<size_t>(key_width, 48);
  size_t max_items = show_all_metadata ? std::numeric_limits<size_t>::max() : 8;
  for (const auto& [key, value] : file.metadata()) {
    std::string type = value_type_string(value);
    std::string shown = value.to_display(max_items);
    if (value.type == ValueType::ARRAY && shown.compare(0, type.size() + 1, type + " ") == 0)
      shown.erase(0, type.size() + 1);
    out << "  " << printable(key) << std::string(key_width > key.size() ? key_width - key.size() : 0, ' ') << "  "
        << type << std::string(type.size() < 22 ? 22 - type.size() : 0, ' ') << "  " << shown << "\n";
  }

  out << "\ntensors\n";
  size_t name_width = 4;
  for (const auto& t : file.tensors()) name_width = std::max(name_width, t.name.size());
  name_width = std::min<size_t>(name_width, 64);
  char line[512];
  std::snprintf(line, sizeof line, "  %5s  %-*s  %-8s  %-26s  %14s  %14s\n", "#", int(name_width), "name", "type",
                "shape", "bytes", "offset");
  out << line;
  struct Total {
    size_t n_tensors = 0;
    uint64_t n_bytes = 0;
    int64_t n_elements = 0;
  };
  std::map<std::string, Total> totals;
  uint64_t all_bytes = 0;
  int64_t all_elements = 0;
  for (size_t i = 0; i < file.tensors().size(); ++i) {
    const TensorInfo& t = file.tensors()[i];
    std::snprintf(line, sizeof line, "  %5zu  %-*s  %-8s  %-26s  %14llu  %14llu\n", i, int(name_width),
                  printable(t.name).c_str(), type_name(t.type), shape_string(t.shape).c_str(),
                  (unsigned long long)t.n_bytes, (unsigned long long)t.offset);
    out << line;
    Total& total = totals[type_name(t.type)];
    ++total.n_tensors;
    total.n_bytes += t.n_bytes;
    total.n_elements += t.n_elements;
    all_bytes += t.n_bytes;
    all_elements += t.n_elements;
  }

  out << "\ntotals per type\n";
  std::vector<std::pair<std::string, Total>> sorted(totals.begin(), totals.end());
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.second.n_bytes > b.second.n_bytes; });
  std::snprintf(line, sizeof line, "  %-8s  %8s  %16s  %16s  %12s\n", "type", "tensors", "elements", "bytes", "");
  out << line;
  for (const auto& [name, total] : sorted) {
    std::snprintf(line, sizeof line, "  %-8s  %8zu  %16lld  %16llu  %12s\n", name.c_str(), total.n_tensors,
                  (long long)total.n_elements, (unsigned long long)total.n_bytes, human_bytes(total.n_bytes).c_str());
    out << line;
  }
  std::snprintf(line, sizeof line, "  %-8s  %8zu  %16lld  %16llu  %12s\n", "all", file.tensors().size(),
                (long long)all_elements, (unsigned long long)all_bytes, human_bytes(all_bytes).c_str());
  out << line;
}

}  // namespace strata::gguf
