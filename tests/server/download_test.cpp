// Pulling by URL (src/server/download.h): names derived from URLs, URLs refused before any
// transfer, and a model already present taken as is. The transfers themselves (ranges, dropped
// connections, digests, redirects) are tested against a local HTTP server in
// tests/py/test_pull_url.py.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "server/download.h"

namespace strata::server {
namespace {

namespace fs = std::filesystem;

int status_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const DownloadError& e) {
    return e.status();
  }
  return 0;
}

TEST(Download, NameFromUrl) {
  EXPECT_EQ(model_name_from_url("https://huggingface.co/bartowski/SmolLM2-135M-Instruct-GGUF/resolve/main/"
                                "SmolLM2-135M-Instruct-Q4_K_M.gguf?download=true"),
            "SmolLM2-135M-Instruct-Q4_K_M");
  EXPECT_EQ(model_name_from_url("http://host/a/b/Model%2BX.GGUF#frag"), "Model+X");
  EXPECT_EQ(model_name_from_url("http://host/qwen3-30b-a3b-00001-of-00002.gguf"), "qwen3-30b-a3b-00001-of-00002");
}

TEST(Download, NamesThatCannotBeModels) {
  for (const char* url :
       {"http://host/readme.txt", "http://host/", "http://host", "http://host/.gguf", "http://host/..%2F..%2Fetc.gguf",
        "http://host/.hidden.gguf", "http://host/a%00b.gguf", "http://host/sp ace.gguf"})
    EXPECT_EQ(status_of([&] { model_name_from_url(url); }), 400) << url;
}

TEST(Download, OnlyHttpUrls) {
  EXPECT_TRUE(is_download_url("https://huggingface.co/x.gguf"));
  EXPECT_TRUE(is_download_url("HTTP://host/x.gguf"));
  EXPECT_FALSE(is_download_url("file:///etc/passwd"));
  EXPECT_FALSE(is_download_url("/home/me/x.gguf"));
  EXPECT_FALSE(is_download_url("smollm2"));
  const std::string dir = (fs::temp_directory_path() / "strata-download-test").string();
  for (const std::string& url : {std::string("ftp://host/x.gguf"), std::string("file:///tmp/x.gguf"),
                                 "http://host/" + std::string(download_limits::kMaxUrlBytes, 'a') + ".gguf"})
    EXPECT_EQ(status_of([&] { download_model({url, dir, "", nullptr, nullptr}); }), 400) << url.substr(0, 40);
  EXPECT_EQ(status_of([&] { download_model({"http://host/x.gguf", dir, "../up", nullptr, nullptr}); }), 400);
  fs::remove_all(dir);
}

TEST(Download, PresentModelIsNotFetchedAgain) {
  const fs::path dir = fs::temp_directory_path() / "strata-download-present";
  fs::create_directories(dir);
  std::ofstream(dir / "have.gguf") << "GGUF";
  // Port 1 on loopback refuses connections: reaching the network would fail.
  const DownloadResult r = download_model({"http://127.0.0.1:1/have.gguf", dir.string(), "", nullptr, nullptr});
  EXPECT_TRUE(r.already_present);
  EXPECT_EQ(r.name, "have");
  EXPECT_EQ(r.size_bytes, 4u);
  EXPECT_FALSE(fs::exists(dir / "have.gguf.partial"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace strata::server
