#include "server/model_catalogue.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "server/errors.h"

namespace strata::server {

namespace fs = std::filesystem;

namespace {

constexpr const char* kExtension = ".gguf";

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string stem_of(const std::string& path) { return fs::path(path).stem().string(); }

// A regular file (after symlinks): its size and modification time.
std::optional<ModelEntry> stat_model(const std::string& name, const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  return ModelEntry{name, path, uint64_t(st.st_size), int64_t(st.st_mtim.tv_sec)};
}

}  // namespace

ModelCatalogue::ModelCatalogue(CatalogueOptions options) : options_(std::move(options)) {
  std::vector<FileVersion> files;
  for (const ModelEntry& e : list()) files.push_back({e.path, e.size_bytes, e.modified_unix});
  digests_.hash_in_background(std::move(files));
}

std::string ModelCatalogue::stem_for(const std::string& requested) {
  // Anything that could name a path outside the folder is refused.
  std::string name = requested;
  if (ends_with(name, ":latest")) name.resize(name.size() - 7);
  if (ends_with(name, kExtension)) name.resize(name.size() - 5);
  if (name.empty()) throw bad_request("model is required");
  const bool bad = name.size() > 255 || name[0] == '.' ||
                   name.find_first_of(std::string("/\\\0", 3)) != std::string::npos ||
                   std::any_of(name.begin(), name.end(), [](char c) { return (unsigned char)c < 0x20; });
  if (bad) throw bad_request("invalid model name \"" + requested + "\"");
  return name;
}

std::vector<ModelEntry> ModelCatalogue::list() const {
  std::vector<ModelEntry> out;
  if (!options_.single_file.empty()) {
    if (auto e = stat_model(stem_of(options_.single_file), options_.single_file)) out.push_back(*e);
    return out;
  }
  std::error_code ec;
  for (const auto& de : fs::directory_iterator(options_.models_dir, ec)) {
    const std::string file = de.path().filename().string();
    if (!ends_with(file, kExtension) || file[0] == '.') continue;
    if (auto e = stat_model(stem_of(file), de.path().string())) out.push_back(*e);
  }
  std::sort(out.begin(), out.end(), [](const ModelEntry& a, const ModelEntry& b) { return a.name < b.name; });
  return out;
}

ModelEntry ModelCatalogue::resolve(const std::string& requested) const {
  const std::string name = stem_for(requested);
  std::optional<ModelEntry> entry;
  if (!options_.single_file.empty()) {
    if (name == stem_of(options_.single_file)) entry = stat_model(name, options_.single_file);
  } else {
    entry = stat_model(name, (fs::path(options_.models_dir) / (name + kExtension)).string());
  }
  if (!entry) throw not_found("model \"" + requested + "\" not found");
  return *entry;
}

std::string ModelCatalogue::path_for(const std::string& requested) const {
  const std::string name = stem_for(requested);
  if (!options_.single_file.empty())
    throw bad_request("strata serve was given one model file; start it with --models to manage models");
  return (fs::path(options_.models_dir) / (name + kExtension)).string();
}

std::optional<std::string> ModelCatalogue::importable_gguf(const std::string& requested_path) const {
  std::error_code ec;
  const fs::path real = fs::canonical(requested_path, ec);
  if (ec || !fs::is_regular_file(real, ec) || ec) return std::nullopt;
  auto inside = [&](const std::string& dir) {
    std::error_code dir_ec;
    const fs::path root = fs::canonical(dir, dir_ec);
    if (dir_ec || dir.empty()) return false;
    const fs::path rel = real.lexically_relative(root);
    return !rel.empty() && *rel.begin() != ".." && rel.is_relative();
  };
  bool allowed = options_.single_file.empty() && inside(options_.models_dir);
  for (const std::string& dir : options_.import_dirs) allowed = allowed || inside(dir);
  if (!allowed) return std::nullopt;
  std::ifstream in(real, std::ios::binary);
  char magic[4] = {};
  if (!in.read(magic, 4) || std::string(magic, 4) != "GGUF") return std::nullopt;
  return real.string();
}

std::shared_ptr<const gguf::File> ModelCatalogue::metadata(const ModelEntry& entry) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = files_.find(entry.path);
    if (it != files_.end() && it->second.size_bytes == entry.size_bytes &&
        it->second.modified_unix == entry.modified_unix)
      return it->second.file;
  }
  std::shared_ptr<const gguf::File> file = gguf::File::open(entry.path);  // throws strata::Error naming the problem
  std::lock_guard<std::mutex> lock(mutex_);
  files_[entry.path] = CachedFile{entry.size_bytes, entry.modified_unix, file};
  return file;
}

std::string ModelCatalogue::digest(const ModelEntry& entry) {
  return digests_.get({entry.path, entry.size_bytes, entry.modified_unix});
}

}  // namespace strata::server
