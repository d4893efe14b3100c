#pragma once
// The models `strata serve` can run, as files: the *.gguf files of one folder (or one given file),
// named by file stem ("smollm2" or "smollm2:latest" for smollm2.gguf), with their GGUF metadata
// and SHA-256 digests, each read once per file version. It loads nothing into memory beyond
// metadata and never reads a file outside its folders.
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "server/digest_cache.h"

namespace strata::server {

struct CatalogueOptions {
  std::string models_dir;   // every *.gguf here is a model
  std::string single_file;  // when set, the only model
  // Folders /api/create ("from") and /api/pull may take local GGUF files from, besides the
  // models folder; no request reads a file anywhere else.
  std::vector<std::string> import_dirs;
};

// A model file on disk.
struct ModelEntry {
  std::string name;  // file stem
  std::string path;
  uint64_t size_bytes = 0;
  int64_t modified_unix = 0;  // seconds
};

class ModelCatalogue {
 public:
  // Starts hashing every model listed now on a background thread.
  explicit ModelCatalogue(CatalogueOptions options);

  const CatalogueOptions& options() const { return options_; }
  // The models on disk, sorted by name.
  std::vector<ModelEntry> list() const;
  // The file of a requested name: bad_request for an empty or invalid name (one that would leave
  // the models folder), not_found when there is no such model.
  ModelEntry resolve(const std::string& requested) const;
  // The file stem a requested name stands for ("name", "name:latest", "name.gguf": name):
  // bad_request for an empty or invalid name.
  static std::string stem_for(const std::string& requested);
  // Where a model of this name lives in the models folder (it need not exist): bad_request for an
  // invalid name, or when the server serves one given file (nothing can be added).
  std::string path_for(const std::string& requested) const;
  // The real path of a GGUF file a request named for import (create's "from", pull's local
  // path): a regular file starting with the GGUF magic, inside the models folder or an import
  // folder after links are followed. nullopt for anything else, whatever the reason, so that the
  // answer tells a client nothing about files it may not use.
  std::optional<std::string> importable_gguf(const std::string& requested_path) const;
  // The file's metadata (opened once per file version; shared with a loaded model). Throws
  // strata::Error naming the problem for a file that is not valid GGUF.
  std::shared_ptr<const gguf::File> metadata(const ModelEntry& entry);
  // The file's SHA-256 (hex), computed once per file version (path, size, modification time),
  // most often already by the background hashing; else this waits.
  std::string digest(const ModelEntry& entry);

 private:
  CatalogueOptions options_;
  std::mutex mutex_;  // guards files_
  struct CachedFile {
    uint64_t size_bytes;
    int64_t modified_unix;
    std::shared_ptr<const gguf::File> file;
  };
  std::map<std::string, CachedFile> files_;  // by path
  DigestCache digests_;
};

}  // namespace strata::server
