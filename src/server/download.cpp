#include "server/download.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>

#include <nlohmann/json.hpp>

#include "gguf/gguf.h"

namespace strata::server {

namespace fs = std::filesystem;
namespace lim = download_limits;

namespace {

constexpr const char* kExtension = ".gguf";
constexpr const char* kPartialSuffix = ".partial";           // NAME.gguf.partial: the bytes so far
constexpr const char* kPartialMetaSuffix = ".partial.json";  // NAME.gguf.partial.json: its URL and validator

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return s;
}

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

std::string with_commas(uint64_t n) {
  const std::string digits = std::to_string(n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

bool is_hex(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isxdigit(c); });
}

// A SHA-256 a source publishes as an entity tag: "HEX", W/"HEX" (Hugging Face: X-Linked-Etag for
// files in LFS, and its CDN's ETag). Anything else (a git blob's SHA-1, an MD5, "mtime-size") is
// not a digest of the file.
std::optional<std::string> sha256_from_etag(std::string tag) {
  tag = trim(tag);
  if (tag.rfind("W/", 0) == 0) tag.erase(0, 2);
  if (tag.size() >= 2 && tag.front() == '"' && tag.back() == '"') tag = tag.substr(1, tag.size() - 2);
  if (tag.size() == 64 && is_hex(tag)) return lower(tag);
  return std::nullopt;
}

std::optional<uint64_t> parse_u64(const std::string& text) {
  const std::string t = trim(text);
  if (t.empty() || t.size() > 20 || !std::all_of(t.begin(), t.end(), ::isdigit)) return std::nullopt;
  try {
    return std::stoull(t);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = char(std::tolower(static_cast<unsigned char>(c)));
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

std::string percent_decode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0) {
      out += char(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// Model names a download may take: letters, digits and . _ - + (no path, no leading dot).
void check_name(const std::string& name, const std::string& where) {
  const bool ok = !name.empty() && name.size() <= 200 && name[0] != '.' &&
                  std::all_of(name.begin(), name.end(), [](unsigned char c) {
                    return std::isalnum(c) || c == '.' || c == '_' || c == '-' || c == '+';
                  });
  if (!ok)
    throw DownloadError(400, "invalid model name \"" + name + "\" (" + where +
                                 "): use letters, digits, '.', '_', '-' or '+', at most 200 characters");
}

// --- libcurl

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) throw DownloadError(500, "libcurl failed to initialise");
  });
}

using Easy = std::unique_ptr<CURL, void (*)(CURL*)>;
using Headers = std::unique_ptr<curl_slist, void (*)(curl_slist*)>;

// The partial file's companion: which URL it came from and the validator to resume it with.
struct PartialMeta {
  std::string url;
  std::string validator;  // ETag or Last-Modified of the response that started it
};

std::optional<PartialMeta> read_meta(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::string text((std::istreambuf_iterator<char>(in)), {});
  if (text.size() > 2 * (lim::kMaxUrlBytes + lim::kMaxValidatorBytes)) return std::nullopt;
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object() || !j.contains("url") || !j["url"].is_string()) return std::nullopt;
  PartialMeta m;
  m.url = j["url"].get<std::string>();
  if (j.contains("validator") && j["validator"].is_string()) m.validator = j["validator"].get<std::string>();
  return m;
}

void write_meta(const std::string& path, const PartialMeta& m) {
  std::ofstream out(path, std::ios::trunc);
  out << nlohmann::json{{"url", m.url}, {"validator", m.validator}}.dump() << "\n";
  if (!out) throw DownloadError(500, "cannot write " + path);
}

// One transfer's state, shared with libcurl's callbacks.
struct Transfer {
  const DownloadRequest* req = nullptr;
  CURL* curl = nullptr;
  std::string partial_path;
  int fd = -1;
  uint64_t offset = 0;   // bytes of the partial before this transfer
  uint64_t written = 0;  // bytes this transfer wrote
  EVP_MD_CTX* sha = nullptr;
  char head[4] = {};  // the file's first bytes, for the magic

  // Headers: the current response's, and Hugging Face's X-Linked-* from any response of the chain.
  long status = 0;
  std::optional<uint64_t> content_length;
  std::optional<uint64_t> range_start, range_total;
  std::string etag, last_modified, content_type;
  std::optional<std::string> linked_sha;
  std::optional<uint64_t> linked_size;

  bool started = false;  // the first body byte was seen and the response checked
  uint64_t total = 0;    // announced size of the whole file; 0 unknown
  std::optional<std::string> expected_sha;
  std::string validator;

  // Why a callback stopped the transfer (empty: libcurl's own error), and whether the partial is
  // worth keeping.
  std::string failure;
  int failure_status = 0;
  bool restart = false;    // the source answered 416 or a wrong range: start over with a new request
  bool restarted = false;  // the source sent the whole file instead of the rest
  bool keep_partial = false;
  std::string meta_path;
  bool cancelled = false;
  std::chrono::steady_clock::time_point last_report{};

  DownloadProgress progress() const { return {expected_sha ? "sha256:" + *expected_sha : "", total, offset + written}; }
};

size_t on_header(char* data, size_t size, size_t n, void* user) {
  auto& t = *static_cast<Transfer*>(user);
  const std::string line(data, size * n);
  if (line.rfind("HTTP/", 0) == 0) {  // a new response (after a redirect): its own headers
    t.status = 0;
    t.content_length.reset();
    t.range_start.reset();
    t.range_total.reset();
    t.etag.clear();
    t.last_modified.clear();
    t.content_type.clear();
    return size * n;
  }
  const size_t colon = line.find(':');
  if (colon == std::string::npos) return size * n;
  const std::string key = lower(trim(line.substr(0, colon)));
  const std::string value = trim(line.substr(colon + 1));
  if (value.size() > lim::kMaxValidatorBytes && key != "content-type") return size * n;
  if (key == "content-length") t.content_length = parse_u64(value);
  if (key == "etag") t.etag = value;
  if (key == "last-modified") t.last_modified = value;
  if (key == "content-type") t.content_type = value.substr(0, 100);
  if (key == "x-linked-etag") t.linked_sha = sha256_from_etag(value);
  if (key == "x-linked-size") t.linked_size = parse_u64(value);
  if (key == "content-range") {  // bytes START-END/TOTAL
    unsigned long long start = 0, end = 0, total = 0;
    if (std::sscanf(value.c_str(), "bytes %llu-%llu/%llu", &start, &end, &total) == 3) {
      t.range_start = start;
      t.range_total = total;
    }
  }
  return size * n;
}

// Stops the transfer for `why`; keep: the partial is worth resuming (the file itself is not wrong).
bool fail(Transfer& t, int status, const std::string& why, bool keep = false) {
  t.failure = why;
  t.failure_status = status;
  t.keep_partial = keep;
  return false;
}

// Checks the final response once its body begins: status, range, size, disk space.
bool start_body(Transfer& t) {
  long code = 0;
  curl_easy_getinfo(t.curl, CURLINFO_RESPONSE_CODE, &code);
  t.status = code;
  if (code == 416 && t.offset > 0) {
    t.restart = true;
    return fail(t, 502, "the source refused to resume at byte " + with_commas(t.offset));
  }
  if (code >= 400) return fail(t, 502, "the source answered HTTP " + std::to_string(code), code >= 500);
  if (code != 200 && code != 206)
    return fail(t, 502, "the source answered HTTP " + std::to_string(code) + ", not a file");
  if (t.offset > 0 && code == 200) {
    // The whole file again: it changed (If-Range did not match) or the source cannot serve
    // ranges. The old bytes go; this response is the file from byte 0.
    if (::ftruncate(t.fd, 0) != 0 || ::lseek(t.fd, 0, SEEK_SET) != 0 ||
        EVP_DigestInit_ex(t.sha, EVP_sha256(), nullptr) != 1)
      return fail(t, 500, "cannot restart " + t.partial_path + ": " + std::strerror(errno));
    t.offset = 0;
    t.restarted = true;
  }
  if (t.offset > 0 && t.range_start != t.offset) {
    t.restart = true;
    return fail(t, 502, "the source resumed at the wrong byte (wanted " + with_commas(t.offset) + ")");
  }
  if (code == 206 && t.range_total)
    t.total = *t.range_total;
  else if (code == 200 && t.content_length)
    t.total = *t.content_length;
  if (t.linked_size) {
    if (t.total && *t.linked_size != t.total)
      return fail(t, 502,
                  "the source announces " + with_commas(*t.linked_size) + " bytes (X-Linked-Size) but sends " +
                      with_commas(t.total));
    t.total = *t.linked_size;
  }
  if (t.total > lim::kMaxFileBytes)
    return fail(
        t, 400,
        "the file is " + with_commas(t.total) + " bytes, more than the limit of " + with_commas(lim::kMaxFileBytes));
  t.expected_sha = t.linked_sha ? t.linked_sha : sha256_from_etag(t.etag);
  t.validator = !t.etag.empty() ? t.etag : t.last_modified;
  if (t.total > t.offset) {
    struct statvfs vfs {};
    const fs::path dir = fs::path(t.partial_path).parent_path();
    if (::statvfs(dir.c_str(), &vfs) == 0) {
      const uint64_t free_bytes = uint64_t(vfs.f_bavail) * vfs.f_frsize;
      const uint64_t need = t.total - t.offset + lim::kFreeSpaceMarginBytes;
      if (free_bytes < need)
        return fail(t, 507,
                    "not enough disk space in " + dir.string() + ": " + with_commas(t.total - t.offset) +
                        " bytes to go and 1 GiB margin, " + with_commas(free_bytes) + " free",
                    true);
    }
  }
  if (t.offset == 0) {
    try {
      write_meta(t.meta_path, {t.req->url, t.validator});
    } catch (const DownloadError& e) {
      return fail(t, 500, e.what());
    }
  }
  t.started = true;
  return true;
}

size_t on_body(char* data, size_t size, size_t n, void* user) {
  auto& t = *static_cast<Transfer*>(user);
  const size_t bytes = size * n;
  if (!t.started && !start_body(t)) return 0;
  const uint64_t at = t.offset + t.written;
  if (at + bytes > lim::kMaxFileBytes || (t.total && at + bytes > t.total)) {
    fail(t, 502, "the source sent more than " + with_commas(t.total ? t.total : lim::kMaxFileBytes) + " bytes");
    return 0;
  }
  if (at < 4) {  // the magic, checked before anything else is stored
    const size_t k = std::min<size_t>(4 - size_t(at), bytes);
    std::memcpy(t.head + at, data, k);
    if (at + k == 4 && std::memcmp(t.head, "GGUF", 4) != 0) {
      const std::string type = t.content_type.empty() ? "" : " (Content-Type: " + t.content_type + ")";
      fail(t, 400, "not a GGUF file: it does not start with the GGUF magic" + type);
      return 0;
    }
  }
  for (size_t done = 0; done < bytes;) {
    const ssize_t w = ::write(t.fd, data + done, bytes - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      fail(t, 500, "cannot write " + t.partial_path + ": " + std::strerror(errno));
      return 0;
    }
    done += size_t(w);
  }
  EVP_DigestUpdate(t.sha, data, bytes);
  t.written += bytes;
  return bytes;
}

// libcurl calls this about once a second while idle and often while bytes flow: the place to
// report progress and to hear a cancel.
int on_xfer(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto& t = *static_cast<Transfer*>(user);
  const auto now = std::chrono::steady_clock::now();
  // Before the body begins, neither the size nor the digest is known (connecting is bounded by
  // kConnectTimeoutSeconds).
  if (!t.started || now - t.last_report < std::chrono::milliseconds(100)) return 0;
  t.last_report = now;
  if (t.req->on_progress && !t.req->on_progress(t.progress())) {
    t.cancelled = true;
    fail(t, 499, "cancelled", true);
    return 1;
  }
  return 0;
}

// Hashes what a partial already holds (the digest covers the whole file).
void hash_existing(const std::string& path, uint64_t n_bytes, EVP_MD_CTX* sha, char head[4]) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> buf(size_t(1) << 20);
  uint64_t left = n_bytes, at = 0;
  while (left > 0) {
    const size_t k = size_t(std::min<uint64_t>(left, buf.size()));
    if (!in.read(buf.data(), std::streamsize(k))) throw DownloadError(500, "cannot read " + path);
    if (at < 4) std::memcpy(head + at, buf.data(), std::min<size_t>(4 - size_t(at), k));
    EVP_DigestUpdate(sha, buf.data(), k);
    left -= k;
    at += k;
  }
}

std::string hex_digest(EVP_MD_CTX* sha) {
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(sha, d, &n);
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < n; ++i) {
    out += digits[d[i] >> 4];
    out += digits[d[i] & 15];
  }
  return out;
}

// Holds NAME.gguf.partial open and locked (one pull per name at a time).
struct PartialFile {
  int fd = -1;
  explicit PartialFile(const std::string& path) {
    fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) throw DownloadError(500, "cannot open " + path + ": " + std::strerror(errno));
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd);
      throw DownloadError(409, "another pull is writing " + path);
    }
  }
  ~PartialFile() { ::close(fd); }
};

}  // namespace

bool is_download_url(const std::string& text) {
  const std::string l = lower(text.substr(0, 8));
  return l.rfind("http://", 0) == 0 || l.rfind("https://", 0) == 0;
}

std::string model_name_from_url(const std::string& url) {
  std::string path = url;
  if (const size_t cut = path.find_first_of("?#"); cut != std::string::npos) path.resize(cut);
  const size_t scheme = path.find("://");
  if (scheme != std::string::npos) path.erase(0, scheme + 3);
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) throw DownloadError(400, "pull " + url + ": the URL names no file");
  const std::string file = percent_decode(path.substr(slash + 1));
  if (file.size() <= 5 || lower(file.substr(file.size() - 5)) != kExtension)
    throw DownloadError(400, "pull " + url + ": the URL's file name \"" + file +
                                 "\" does not end in .gguf; only GGUF files can be pulled");
  const std::string name = file.substr(0, file.size() - 5);
  check_name(name, "from the URL's file name");
  return name;
}

namespace {

void set(CURL* curl, CURLoption opt, auto value) {
  if (const CURLcode rc = curl_easy_setopt(curl, opt, value); rc != CURLE_OK)
    throw DownloadError(500, "libcurl refused option " + std::to_string(int(opt)) + ": " + curl_easy_strerror(rc));
}

void remove_partial(const std::string& partial, const std::string& meta) {
  std::error_code ec;
  fs::remove(partial, ec);
  fs::remove(meta, ec);
}

}  // namespace

DownloadResult download_model(const DownloadRequest& req) {
  const std::string& url = req.url;
  if (url.size() > lim::kMaxUrlBytes)
    throw DownloadError(400, "pull: the URL is longer than " + std::to_string(lim::kMaxUrlBytes) + " bytes");
  if (!is_download_url(url)) throw DownloadError(400, "pull " + url + ": only http:// and https:// URLs are pulled");
  std::string name = req.name;
  if (name.empty()) {
    name = model_name_from_url(url);
  } else {
    if (name.size() > 5 && lower(name.substr(name.size() - 5)) == kExtension) name.resize(name.size() - 5);
    check_name(name, "given");
  }
  const std::string prefix = "pull " + url + ": ";
  std::error_code ec;
  fs::create_directories(req.models_dir, ec);
  if (ec) throw DownloadError(500, prefix + "cannot create the models folder " + req.models_dir + ": " + ec.message());

  DownloadResult result;
  result.name = name;
  result.path = (fs::path(req.models_dir) / (name + kExtension)).string();
  if (fs::exists(fs::symlink_status(result.path))) {
    result.already_present = true;
    result.size_bytes = fs::file_size(result.path, ec);
    return result;
  }
  const std::string partial = result.path + kPartialSuffix;
  const std::string meta_path = result.path + kPartialMetaSuffix;
  global_init();
  if (req.on_status) req.on_status("pulling " + name);
  PartialFile file(partial);

  Transfer t;
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> sha(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  for (int attempt = 0;; ++attempt) {
    uint64_t offset = uint64_t(::lseek(file.fd, 0, SEEK_END));
    const std::optional<PartialMeta> meta = read_meta(meta_path);
    if (offset > 0 && (!meta || meta->url != url)) offset = 0;  // another source's bytes: start over
    if (!sha || EVP_DigestInit_ex(sha.get(), EVP_sha256(), nullptr) != 1)
      throw DownloadError(500, prefix + "OpenSSL's SHA-256 is unavailable");
    t = Transfer{};
    t.req = &req;
    t.partial_path = partial;
    t.meta_path = meta_path;
    t.fd = file.fd;
    t.sha = sha.get();
    if (offset > 0) {  // the digest covers the whole file: read what is there first
      if (req.on_status) req.on_status("checking the " + with_commas(offset) + " bytes already downloaded");
      hash_existing(partial, offset, sha.get(), t.head);
      if (offset >= 4 && std::memcmp(t.head, "GGUF", 4) != 0) {
        offset = 0;
        EVP_DigestInit_ex(sha.get(), EVP_sha256(), nullptr);
      }
    }
    if (offset == 0 && ::ftruncate(file.fd, 0) != 0)
      throw DownloadError(500, prefix + "cannot truncate " + partial + ": " + std::strerror(errno));
    ::lseek(file.fd, off_t(offset), SEEK_SET);
    t.offset = offset;
    result.resumed_from = offset;

    Easy curl(curl_easy_init(), curl_easy_cleanup);
    if (!curl) throw DownloadError(500, prefix + "libcurl could not start a transfer");
    t.curl = curl.get();
    char curl_error[CURL_ERROR_SIZE] = {};
    Headers headers(nullptr, curl_slist_free_all);
    set(curl.get(), CURLOPT_URL, url.c_str());
    set(curl.get(), CURLOPT_ERRORBUFFER, curl_error);
    set(curl.get(), CURLOPT_PROTOCOLS_STR, "http,https");
    set(curl.get(), CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    set(curl.get(), CURLOPT_FOLLOWLOCATION, 1L);
    set(curl.get(), CURLOPT_MAXREDIRS, lim::kMaxRedirects);
    set(curl.get(), CURLOPT_CONNECTTIMEOUT, lim::kConnectTimeoutSeconds);
    set(curl.get(), CURLOPT_LOW_SPEED_LIMIT, 1L);
    set(curl.get(), CURLOPT_LOW_SPEED_TIME, lim::kStallSeconds);
    set(curl.get(), CURLOPT_NOSIGNAL, 1L);
    set(curl.get(), CURLOPT_USERAGENT, "strata-pull/1");
    set(curl.get(), CURLOPT_HEADERFUNCTION, on_header);
    set(curl.get(), CURLOPT_HEADERDATA, &t);
    set(curl.get(), CURLOPT_WRITEFUNCTION, on_body);
    set(curl.get(), CURLOPT_WRITEDATA, &t);
    set(curl.get(), CURLOPT_NOPROGRESS, 0L);
    set(curl.get(), CURLOPT_XFERINFOFUNCTION, on_xfer);
    set(curl.get(), CURLOPT_XFERINFODATA, &t);
    if (offset > 0) {
      // CURLOPT_RANGE rather than RESUME_FROM: a 200 with the whole file is then ours to take
      // (start_body), not libcurl's error.
      const std::string range = std::to_string(offset) + "-";
      set(curl.get(), CURLOPT_RANGE, range.c_str());
      if (!meta->validator.empty()) {
        const std::string if_range = "If-Range: " + meta->validator;
        headers.reset(curl_slist_append(nullptr, if_range.c_str()));
        set(curl.get(), CURLOPT_HTTPHEADER, headers.get());
      }
    }
    const CURLcode rc = curl_easy_perform(curl.get());
    if (t.restarted) result.resumed_from = 0;
    if (t.restart && attempt == 0) {  // the source changed or cannot resume: once more from byte 0
      if (::ftruncate(file.fd, 0) != 0) throw DownloadError(500, prefix + "cannot truncate " + partial);
      std::error_code rm;
      fs::remove(meta_path, rm);
      continue;
    }
    const uint64_t have = t.offset + t.written;
    if (rc != CURLE_OK || !t.failure.empty()) {
      std::string why = t.failure;
      int status = t.failure_status;
      bool keep = t.keep_partial;
      if (why.empty()) {  // libcurl's own: the network, a timeout, a redirect loop
        why = std::string(curl_easy_strerror(rc)) + (curl_error[0] ? std::string(" (") + curl_error + ")" : "");
        status = 502;
        keep = rc == CURLE_PARTIAL_FILE || rc == CURLE_RECV_ERROR || rc == CURLE_OPERATION_TIMEDOUT ||
               rc == CURLE_GOT_NOTHING || rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
               rc == CURLE_SEND_ERROR || rc == CURLE_HTTP2 || rc == CURLE_HTTP2_STREAM || rc == CURLE_SSL_CONNECT_ERROR;
        if (rc == CURLE_PARTIAL_FILE || rc == CURLE_RECV_ERROR || rc == CURLE_OPERATION_TIMEDOUT)
          why = "the transfer stopped after " + with_commas(have) + (t.total ? " of " + with_commas(t.total) : "") +
                " bytes: " + why;
      }
      if (keep && have > 0) {
        why += "; " + partial + " keeps the " + with_commas(have) + " bytes: pull again to resume";
      } else {
        remove_partial(partial, meta_path);
      }
      throw DownloadError(status, prefix + why);
    }
    if (t.total && have != t.total) {
      throw DownloadError(502, prefix + "the transfer ended after " + with_commas(have) + " of " +
                                   with_commas(t.total) + " bytes; " + partial + " keeps them: pull again to resume");
    }
    break;
  }

  const uint64_t size = t.offset + t.written;
  if (req.on_progress) req.on_progress(t.progress());
  if (req.on_status) req.on_status("verifying sha256 digest");
  result.sha256 = hex_digest(t.sha);
  result.size_bytes = size;
  if (t.expected_sha) {
    if (result.sha256 != *t.expected_sha) {
      remove_partial(partial, meta_path);
      throw DownloadError(502, prefix + "the file's SHA-256 is " + result.sha256 + " but the source publishes " +
                                   *t.expected_sha + " (corrupted or changed in transit); nothing was kept");
    }
    result.digest_checked = true;
  }
  try {
    gguf::File::open(partial);  // header, metadata, every tensor inside the file
  } catch (const std::exception& e) {
    remove_partial(partial, meta_path);
    throw DownloadError(400, prefix + "not a usable GGUF file (" + e.what() + "); nothing was kept");
  }
  if (req.on_status) req.on_status("writing model");
  if (::fsync(file.fd) != 0) throw DownloadError(500, prefix + "cannot sync " + partial + ": " + std::strerror(errno));
  if (::renameat2(AT_FDCWD, partial.c_str(), AT_FDCWD, result.path.c_str(), RENAME_NOREPLACE) != 0) {
    const int err = errno;
    remove_partial(partial, meta_path);
    throw DownloadError(err == EEXIST ? 409 : 500,
                        prefix + "cannot rename " + partial + " to " + result.path + ": " + std::strerror(err));
  }
  if (const int dir = ::open(req.models_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dir >= 0) {
    ::fsync(dir);  // the rename itself survives a crash
    ::close(dir);
  }
  std::error_code rm;
  fs::remove(meta_path, rm);
  return result;
}

}  // namespace strata::server
