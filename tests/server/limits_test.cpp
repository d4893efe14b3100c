// The server's bounds on what a request may make it do (src/server/limits.h and issue 17):
// nesting depth checked before parsing, the models folder as a boundary, origins and hosts as
// Ollama treats them, and an in-process server's answers to bodies over the limit.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <unistd.h>

#include "server/connection.h"
#include "server/errors.h"
#include "server/http_util.h"
#include "server/json_fields.h"
#include "server/limits.h"
#include "server/model_registry.h"
#include "server/origin.h"

namespace strata::server {
namespace {

namespace fs = std::filesystem;

std::string nested(int depth) { return std::string(size_t(depth), '[') + std::string(size_t(depth), ']'); }

TEST(JsonDepth, CountsArraysAndObjectsButNotStrings) {
  EXPECT_TRUE(json_depth_within(nested(limits::kMaxJsonDepth), limits::kMaxJsonDepth));
  EXPECT_FALSE(json_depth_within(nested(limits::kMaxJsonDepth + 1), limits::kMaxJsonDepth));
  EXPECT_FALSE(json_depth_within(std::string(1000000, '{'), limits::kMaxJsonDepth));  // unclosed
  // Brackets inside strings, escaped quotes included, do not count.
  EXPECT_TRUE(json_depth_within(R"({"a": ")" + std::string(1000, '[') + R"(\"[[[[", "b": [1]})", 2));
  EXPECT_TRUE(json_depth_within("[1,[2,[3]]]", 3));
  EXPECT_FALSE(json_depth_within("[1,[2,[3]]]", 2));
}

TEST(JsonDepth, ParseBodyRefusesDeepBodiesWithA400) {
  const std::string deep = R"({"model": "m", "format": )" + nested(100000) + "}";
  try {
    parse_body(deep);
    FAIL() << "a 100,000-deep body was parsed";
  } catch (const HttpError& e) {
    EXPECT_EQ(e.status(), 400);
    EXPECT_NE(std::string(e.what()).find(std::to_string(limits::kMaxJsonDepth)), std::string::npos);
  }
  EXPECT_EQ(parse_body(R"({"a": )" + nested(limits::kMaxJsonDepth - 1) + "}")["a"].size(), 1u);
  EXPECT_TRUE(parse_bounded(nested(100000)).is_discarded());
  EXPECT_EQ(parse_bounded("[1, 2]").size(), 2u);
}

TEST(JsonDepth, NumbersNoDoubleHoldsAre400) {
  for (const char* body : {R"({"t": 1e400})", R"({"t": -1e999})"}) {
    try {
      parse_body(body);
      FAIL() << body;
    } catch (const HttpError& e) {
      EXPECT_EQ(e.status(), 400);
    }
  }
  const json j = parse_body(R"({"big": 18446744073709551615, "float": 1e300})");
  EXPECT_THROW(field_int(j, "big"), HttpError);
  EXPECT_THROW(field_int(j, "float"), HttpError);
}

TEST(Origins, OllamasDefaultsAndOllamaOrigins) {
  const OriginPolicy p = make_origin_policy("127.0.0.1", "https://ok.example, chrome-extension://*");
  const std::string host = "127.0.0.1:11434";
  for (const char* ok : {"", "http://localhost", "http://localhost:3000", "https://127.0.0.1:8443", "http://0.0.0.0:1",
                         "app://obsidian.md", "file://", "tauri://localhost", "vscode-webview://x",
                         "https://ok.example", "chrome-extension://abcdef", "http://127.0.0.1:11434"})
    EXPECT_TRUE(origin_allowed(p, ok, host)) << ok;
  for (const char* bad : {"http://evil.example", "null", "https://ok.example.evil", "http://localhost.evil.example",
                          "https://127.0.0.1.evil:1", "moz-extension://x"})
    EXPECT_FALSE(origin_allowed(p, bad, host)) << bad;
  // Same origin as the Host it came to: not a cross-site request (the host check decides).
  EXPECT_TRUE(origin_allowed(p, "http://evil.example:11434", "evil.example:11434"));
  EXPECT_TRUE(origin_allowed(make_origin_policy("127.0.0.1", "*"), "http://anything.example", host));
}

TEST(Origins, HostsWhenListeningOnLoopback) {
  const OriginPolicy p = make_origin_policy("127.0.0.1", nullptr);
  EXPECT_TRUE(p.check_host);
  for (const char* ok : {"", "localhost", "localhost:11434", "127.0.0.1:11434", "[::1]:11434", "::1", "10.1.2.3",
                         "192.168.0.7:80", "0.0.0.0", "app.localhost", "printer.local", "svc.internal", "LOCALHOST"})
    EXPECT_TRUE(host_allowed(p, ok)) << ok;
  for (const char* bad :
       {"evil.example", "evil.example:11434", "8.8.8.8", "localhost.evil.example", "[2001:db8::1]:80"})
    EXPECT_FALSE(host_allowed(p, bad)) << bad;
  // Listening on every interface: any Host (the origin check still applies).
  const OriginPolicy open = make_origin_policy("0.0.0.0", nullptr);
  EXPECT_FALSE(open.check_host);
  EXPECT_TRUE(host_allowed(open, "evil.example"));
  EXPECT_TRUE(make_origin_policy("localhost", nullptr).check_host);
  EXPECT_TRUE(make_origin_policy("::1", nullptr).check_host);
}

class ModelsFolder : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("strata-limits-" + std::to_string(::getpid()));
    fs::remove_all(root_);
    for (const char* d : {"models", "imports", "outside"}) fs::create_directories(root_ / d);
    write(root_ / "models" / "inside.gguf", "GGUF\x03\0\0\0");
    write(root_ / "imports" / "shared.gguf", "GGUF\x03\0\0\0");
    write(root_ / "outside" / "secret.gguf", "GGUF\x03\0\0\0");
    write(root_ / "models" / "notes.txt", "not a model");
    fs::create_symlink(root_ / "outside" / "secret.gguf", root_ / "models" / "link.gguf");
  }
  void TearDown() override { fs::remove_all(root_); }
  static void write(const fs::path& p, const std::string& bytes) { std::ofstream(p, std::ios::binary) << bytes; }
  std::string at(const char* rel) const { return (root_ / rel).string(); }
  fs::path root_;
};

TEST_F(ModelsFolder, ImportsOnlyGgufFilesFromAllowedFolders) {
  RegistryOptions o;
  o.models_dir = at("models");
  o.import_dirs = {at("imports")};
  o.budget_bytes = 1u << 30;
  ModelRegistry registry(o);
  EXPECT_EQ(registry.importable_gguf(at("models/inside.gguf")), fs::canonical(at("models/inside.gguf")).string());
  EXPECT_TRUE(registry.importable_gguf(at("imports/shared.gguf")));
  EXPECT_TRUE(registry.importable_gguf(at("imports/../imports/shared.gguf")));
  for (const std::string& denied :
       {at("outside/secret.gguf"), at("models/link.gguf"), at("models/../outside/secret.gguf"), at("models/notes.txt"),
        at("models/missing.gguf"), at("models"), std::string("/etc/passwd"), std::string("/proc/self/environ"),
        std::string(""), at("importsX/shared.gguf")})
    EXPECT_FALSE(registry.importable_gguf(denied)) << denied;
  // Without an import folder, only the models folder.
  RegistryOptions bare = o;
  bare.import_dirs.clear();
  ModelRegistry only_models(bare);
  EXPECT_FALSE(only_models.importable_gguf(at("imports/shared.gguf")));
  EXPECT_TRUE(only_models.importable_gguf(at("models/inside.gguf")));
}

// An in-process BoundedServer with one route that takes a body.
class InProcessServer : public ::testing::Test {
 protected:
  void SetUp() override {
    add_route_with_body(http_, "POST", "/echo", ErrorStyle::ollama,
                        [](const httplib::Request& req, httplib::Response& res) {
                          send_json(res, {{"bytes", req.body.size()}, {"depth_ok", parse_body(req.body).is_object()}});
                        });
    port_ = http_.bind_bounded("127.0.0.1", 0);
    ASSERT_GT(port_, 0);
    thread_ = std::thread([this] { http_.listen_after_bind(); });
  }
  void TearDown() override {
    http_.stop();
    thread_.join();
  }
  BoundedServer http_;
  int port_ = 0;
  std::thread thread_;
};

TEST_F(InProcessServer, ChunkedAndSizedBodiesAreBounded) {
  httplib::Client client("127.0.0.1", port_);
  auto ok = client.Post("/echo", R"({"a": [1, 2]})", "application/json");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(json::parse(ok->body)["bytes"], 13);

  const std::string big((limits::kMaxBodyBytes) + 1, ' ');
  auto sized = client.Post("/echo", big, "application/json");
  ASSERT_TRUE(sized);
  EXPECT_EQ(sized->status, 413);

  // Chunked: a content provider without a length makes httplib send chunks.
  size_t sent = 0;
  httplib::Client chunked_client("127.0.0.1", port_);
  auto chunked = chunked_client.Post(
      "/echo",
      [&](size_t, httplib::DataSink& sink) {
        const std::string piece(1 << 20, ' ');
        while (sent < 3 * limits::kMaxBodyBytes)
          if (!sink.write(piece.data(), piece.size()))
            return false;
          else
            sent += piece.size();
        sink.done();
        return true;
      },
      "application/json");
  if (chunked) {
    EXPECT_EQ(chunked->status, 413);
    EXPECT_NE(chunked->body.find(std::to_string(limits::kMaxBodyBytes >> 20) + " MiB"), std::string::npos);
  }
  EXPECT_LT(sent, 3 * limits::kMaxBodyBytes);  // the server stopped reading

  auto deep = client.Post("/echo", R"({"a": )" + nested(100000) + "}", "application/json");
  ASSERT_TRUE(deep);
  EXPECT_EQ(deep->status, 400);
}

}  // namespace
}  // namespace strata::server
