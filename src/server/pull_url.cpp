#include "server/pull_url.h"

#include "server/connection.h"
#include "server/download.h"
#include "server/errors.h"
#include "server/http_util.h"

namespace strata::server {

namespace {

json progress_line(const std::string& name, const DownloadProgress& p) {
  // Ollama names the layer by its digest's first 12 digits; without a published digest, by name.
  json j = {{"status", "pulling " + (p.digest.size() > 19 ? p.digest.substr(7, 12) : name)},
            {"total", p.total},
            {"completed", p.completed}};
  if (!p.digest.empty()) j["digest"] = p.digest;
  return j;
}

}  // namespace

void pull_from_url(ModelRegistry& registry, const std::string& url, bool stream, httplib::Response& res) {
  if (!registry.options().single_file.empty())
    throw bad_request("strata serve was given one model file; start it with --models to pull models");
  DownloadRequest req;
  req.url = url;
  req.models_dir = registry.options().models_dir;
  std::string name;
  try {  // a URL that names no GGUF file is refused before anything streams
    if (!is_download_url(url)) throw DownloadError(400, "pull " + url + ": not an http(s) URL");
    name = model_name_from_url(url);
  } catch (const DownloadError& e) {
    throw HttpError(e.status(), e.what());
  }
  if (!stream) {
    req.on_progress = [](const DownloadProgress&) { return client_connected(); };
    try {
      const DownloadResult r = download_model(req);
      return send_json(res, {{"status", "success"}, {"model", r.name}});
    } catch (const DownloadError& e) {
      throw HttpError(e.status(), e.what());
    }
  }
  send_stream(res, "application/x-ndjson", [req, name](const Emit& emit) mutable {
    req.on_status = [&](const std::string& s) { emit(dump(json{{"status", s}}) + "\n"); };
    req.on_progress = [&](const DownloadProgress& p) { return emit(dump(progress_line(name, p)) + "\n"); };
    try {
      const DownloadResult r = download_model(req);
      emit(dump(json{{"status", "success"}, {"model", r.name}}) + "\n");
    } catch (const std::exception& e) {
      emit(dump(json{{"error", e.what()}}) + "\n");
    }
  });
}

}  // namespace strata::server
