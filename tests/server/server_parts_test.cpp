// The server in parts (issue 12 item 6): the memory arbiter's choice of what to unload, keep-alive
// durations and their reaper, the one table from error kinds to HTTP statuses, and an in-process
// `strata serve` (Server, port 0) on small forged models: eviction under the budget, keep-alive
// expiry, context fitting and a full queue, over HTTP as clients see them.
#include <gtest/gtest.h>
#include <httplib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "server/completion.h"
#include "server/errors.h"
#include "server/http_status.h"
#include "server/json_fields.h"
#include "server/keep_alive.h"
#include "server/memory_arbiter.h"
#include "server/server.h"
#include "server/thinking.h"
#include "support/forge.h"
#include "support/paths.h"
#include "util/error.h"

namespace strata::server {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr uint64_t kMiB = uint64_t(1) << 20;

// --- memory arbiter

Tenant tenant(const std::string& name, uint64_t mib, bool idle, double keep_s, Clock::time_point now) {
  Tenant t{name, mib * kMiB, idle, {}};
  t.keep_alive.restart(keep_s, now);
  return t;
}

TEST(MemoryArbiter, UnloadsIdleModelsWhoseKeepAliveEndsFirst) {
  const auto now = Clock::now();
  const MemoryArbiter arbiter(100 * kMiB);
  const std::vector<Tenant> tenants = {tenant("forever", 30, true, -1, now), tenant("late", 30, true, 600, now),
                                       tenant("soon", 30, true, 60, now)};
  // 90 used + 5 fits: nothing goes.
  MemoryArbiter::Room room = arbiter.make_room(tenants, 5 * kMiB);
  EXPECT_TRUE(room.evict.empty());
  EXPECT_EQ(room.available, 10 * kMiB);
  // 40 needs one to go: the keep-alive that ends first.
  room = arbiter.make_room(tenants, 40 * kMiB);
  EXPECT_EQ(room.evict, std::vector<std::string>({"soon"}));
  EXPECT_EQ(room.available, 40 * kMiB);
  // 70: two, kept-forever last.
  room = arbiter.make_room(tenants, 70 * kMiB);
  EXPECT_EQ(room.evict, std::vector<std::string>({"soon", "late"}));
  // More than the budget: all go, and the newcomer gets the whole budget to plan under.
  room = arbiter.make_room(tenants, 500 * kMiB);
  EXPECT_EQ(room.evict, std::vector<std::string>({"soon", "late", "forever"}));
  EXPECT_EQ(room.available, 100 * kMiB);
}

TEST(MemoryArbiter, NeverUnloadsABusyModelOrTheOneBeingReplanned) {
  const auto now = Clock::now();
  const MemoryArbiter arbiter(100 * kMiB);
  const std::vector<Tenant> tenants = {tenant("busy", 40, false, 0, now), tenant("idle", 40, true, 60, now),
                                       tenant("replanned", 10, true, 1, now)};
  MemoryArbiter::Room room = arbiter.make_room(tenants, 90 * kMiB, "replanned");
  EXPECT_EQ(room.evict, std::vector<std::string>({"idle"}));
  EXPECT_EQ(room.available, 60 * kMiB);  // the replanned model's own plan is not counted
  EXPECT_EQ(MemoryArbiter::used_bytes(tenants), 90 * kMiB);
  EXPECT_EQ(MemoryArbiter::used_bytes(tenants, "replanned"), 80 * kMiB);
}

// --- keep-alive

TEST(KeepAlive, DurationsAsOllamaWritesThem) {
  EXPECT_EQ(parse_duration_seconds("5m"), 300.0);
  EXPECT_EQ(parse_duration_seconds("1h30m"), 5400.0);
  EXPECT_EQ(parse_duration_seconds("1.5h"), 5400.0);
  EXPECT_EQ(parse_duration_seconds("90s"), 90.0);
  EXPECT_EQ(parse_duration_seconds("250ms"), 0.25);
  EXPECT_EQ(parse_duration_seconds("0"), 0.0);
  EXPECT_EQ(parse_duration_seconds("-1"), -1.0);
  EXPECT_EQ(parse_duration_seconds("-1m"), -60.0);
  EXPECT_EQ(parse_duration_seconds("300"), 300.0);  // a bare number: seconds (OLLAMA_KEEP_ALIVE=300)
  for (const char* bad : {"", "m", "5 m", "5d", "five", "1h1", "--1s", "1e", "nan", "inf"})
    EXPECT_FALSE(parse_duration_seconds(bad)) << bad;
}

TEST(KeepAlive, FromTheEnvironmentWithOllamasDefault) {
  EXPECT_EQ(keep_alive_from_env(nullptr), 300.0);
  EXPECT_EQ(keep_alive_from_env(""), 300.0);
  EXPECT_EQ(keep_alive_from_env("10m"), 600.0);
  EXPECT_EQ(keep_alive_from_env("45"), 45.0);
  EXPECT_LT(keep_alive_from_env("-1"), 0.0);
  EXPECT_THROW(keep_alive_from_env("soon"), Error);
}

TEST(KeepAlive, HugeAndNegativeMeanForever) {
  const auto now = Clock::now();
  KeepAlive k;
  k.restart(1e300, now);
  EXPECT_TRUE(k.forever);
  EXPECT_FALSE(k.expired(now + std::chrono::hours(24 * 365 * 100)));
  k.restart(-1, now);
  EXPECT_TRUE(k.forever);
  k.restart(0, now);
  EXPECT_FALSE(k.forever);
  EXPECT_TRUE(k.expired(now));
  k.restart(2, now);
  EXPECT_FALSE(k.expired(now + seconds(1)));
  EXPECT_TRUE(k.expired(now + seconds(2)));
}

TEST(KeepAlive, TheReaperWakesAtTheNextExpiry) {
  std::atomic<int> calls{0};
  const auto start = Clock::now();
  std::atomic<int64_t> woke_after_ms{-1};
  {
    KeepAliveReaper reaper([&](Clock::time_point now) -> std::optional<Clock::time_point> {
      const int n = ++calls;
      if (n == 1) return now + milliseconds(200);  // the first wake() says: something expires in 200 ms
      woke_after_ms = std::chrono::duration_cast<milliseconds>(now - start).count();
      return std::nullopt;
    });
    reaper.wake();
    for (int i = 0; i < 400 && woke_after_ms < 0; ++i) std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_EQ(calls, 2);
  EXPECT_GE(woke_after_ms, 190);
  EXPECT_LT(woke_after_ms, 3000);
}

// --- error kinds to HTTP statuses (the API layer's one table)

TEST(ErrorKinds, OneStatusPerKind) {
  EXPECT_EQ(http_status(ErrorKind::bad_request), 400);
  EXPECT_EQ(http_status(ErrorKind::not_found), 404);
  EXPECT_EQ(http_status(ErrorKind::does_not_fit), 500);
  EXPECT_EQ(http_status(ErrorKind::load_failed), 500);
  EXPECT_EQ(http_status(ErrorKind::busy), 503);
  EXPECT_EQ(http_status(ErrorKind::not_implemented), 501);
  EXPECT_EQ(http_status(ErrorKind::too_large), 413);
  // A pull's DownloadError statuses keep their meaning through the table.
  for (int status : {409, 502, 507}) EXPECT_EQ(HttpError(status, "x").status(), status);
  for (int status : {400, 403, 404, 408, 413, 501, 503})
    EXPECT_EQ(http_status(error_kind_for_status(status)), status) << status;
  EXPECT_EQ(HttpError(503, "x").kind(), ErrorKind::busy);
  EXPECT_EQ(bad_request("x").status(), 400);
  EXPECT_STREQ(openai_error_type(400), "invalid_request_error");
  EXPECT_STREQ(openai_error_type(404), "not_found_error");
}

// --- an in-process server on forged models

// A tiny forged llama (64 wide, 2 layers; its plan holds ~4 MiB at a context of 256, ~5 MiB at
// 4096), made once for the suite.
class InProcessServe : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string tokenizer = test::model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
    if (!fs::exists(tokenizer)) return;
    // On the real filesystem next to the model cache, as the tier tests (O_DIRECT and tmpfs).
    forged_dir_ = fs::path(test::models_dir()).parent_path() / ("server_parts_test_" + std::to_string(::getpid()));
    fs::create_directories(forged_dir_);
    forged_ = (forged_dir_ / "tiny.gguf").string();
    if (!test::forge({"--arch", "llama", "--preset", "tiny", "--type", "Q8_0", "--seed", "3"}, tokenizer, forged_))
      forged_.clear();
  }
  static void TearDownTestSuite() {
    if (!forged_dir_.empty()) fs::remove_all(forged_dir_);
  }
  void SetUp() override {
    if (forged_.empty()) GTEST_SKIP() << "SmolLM2 (the forge's tokenizer source) is not fetched, or forging failed";
    models_ = forged_dir_ / ("models_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::create_directories(models_);
    for (const char* name : {"a.gguf", "b.gguf"}) fs::create_hard_link(forged_, models_ / name);
  }
  void TearDown() override {
    server_.reset();
    if (!models_.empty()) fs::remove_all(models_);
  }

  // Starts a server on a free port over the models folder.
  void serve(uint64_t budget_bytes, double keep_alive_s = -1, int max_queue = 32) {
    ServerOptions o;
    o.port = 0;
    RegistryOptions& r = o.registry;
    r.models_dir = models_.string();
    r.session.n_ctx = 256;
    r.session.n_batch = 64;
    r.session.n_threads = 1;
    r.budget_bytes = budget_bytes;
    r.keep_alive_s = keep_alive_s;
    r.max_queue = max_queue;
    r.ram_gbps = 10;
    r.ssd_gbps = 1;
    server_ = std::make_unique<Server>(o);
    port_ = server_->start();
    ASSERT_GT(port_, 0);
  }

  // POST /api/generate of a few greedy tokens; returns the status and the JSON body.
  std::pair<int, json> generate(const std::string& model, json extra = json::object()) {
    json body = {{"model", model},
                 {"prompt", "Hello"},
                 {"stream", false},
                 {"options", {{"num_predict", 2}, {"temperature", 0}}}};
    for (auto& [k, v] : extra.items()) body[k] = v;
    httplib::Client client("127.0.0.1", port_);
    client.set_read_timeout(60, 0);
    auto res = client.Post("/api/generate", body.dump(), "application/json");
    if (!res) return {0, json()};
    return {res->status, json::parse(res->body, nullptr, false)};
  }

  json ps() {
    httplib::Client client("127.0.0.1", port_);
    auto res = client.Get("/api/ps");
    return res ? json::parse(res->body) : json();
  }

  std::vector<std::string> loaded_names() {
    std::vector<std::string> out;
    for (const LoadedInfo& m : server_->registry().loaded()) out.push_back(m.name);
    return out;
  }

  static inline fs::path forged_dir_;
  static inline std::string forged_;
  fs::path models_;
  std::unique_ptr<Server> server_;
  int port_ = 0;
};

TEST_F(InProcessServe, StartsOnAChosenPortAndStops) {
  serve(64 * kMiB);
  httplib::Client client("127.0.0.1", port_);
  auto res = client.Get("/");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->body, "Ollama is running");
  auto [status, body] = generate("a");
  EXPECT_EQ(status, 200) << body;
  EXPECT_TRUE(body["done"].get<bool>());
  EXPECT_EQ(loaded_names(), std::vector<std::string>({"a"}));
  const auto t0 = Clock::now();
  server_->stop();
  EXPECT_LT(Clock::now() - t0, seconds(10));
  httplib::Client after("127.0.0.1", port_);
  after.set_connection_timeout(1, 0);
  EXPECT_FALSE(after.Get("/"));
  // The registry outlives the HTTP side until the Server goes.
  EXPECT_EQ(loaded_names(), std::vector<std::string>({"a"}));
}

TEST_F(InProcessServe, UnknownModelsAreNotFound) {
  serve(64 * kMiB);
  auto [status, body] = generate("missing");
  EXPECT_EQ(status, 404);
  EXPECT_NE(body["error"].get<std::string>().find("missing"), std::string::npos);
  std::tie(status, body) = generate("../a");
  EXPECT_EQ(status, 400);
}

TEST_F(InProcessServe, AnIdleModelIsUnloadedToMakeRoom) {
  // Room for one model's plan (~4 MiB) but not two.
  serve(6 * kMiB);
  EXPECT_EQ(generate("a").first, 200);
  EXPECT_EQ(loaded_names(), std::vector<std::string>({"a"}));
  EXPECT_EQ(generate("b").first, 200);
  EXPECT_EQ(loaded_names(), std::vector<std::string>({"b"}));
  const json models = ps()["models"];
  ASSERT_EQ(models.size(), 1u);
  EXPECT_EQ(models[0]["name"], "b:latest");
  EXPECT_LE(server_->registry().loaded()[0].tier.planned_bytes, 6 * kMiB);
}

TEST_F(InProcessServe, ABusyModelStaysAndTheNewcomerDoesNotFit) {
  serve(6 * kMiB);
  // A request holds "a" (as one would while it generates): it cannot be unloaded, and what the
  // budget leaves is below "b"'s minimum.
  const auto lease = server_->registry().lease("a", std::nullopt);
  auto [status, body] = generate("b");
  EXPECT_EQ(status, 500) << body;
  const std::string error = body["error"].get<std::string>();
  EXPECT_NE(error.find("\"b\""), std::string::npos) << error;
  EXPECT_NE(error.find("memory budget"), std::string::npos) << error;
  EXPECT_EQ(loaded_names(), std::vector<std::string>({"a"}));
  try {
    server_->registry().lease("b", std::nullopt);
    FAIL() << "b was loaded beside a busy a";
  } catch (const ServerError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::does_not_fit);
  }
}

TEST_F(InProcessServe, AFullQueueIsBusy) {
  serve(64 * kMiB, -1, /*max_queue=*/1);
  const auto lease = server_->registry().lease("a", std::nullopt);
  auto [status, body] = generate("a");
  EXPECT_EQ(status, 503) << body;
  EXPECT_NE(body["error"].get<std::string>().find("busy"), std::string::npos);
}

TEST_F(InProcessServe, KeepAliveRunsOutAndTheReaperUnloads) {
  serve(64 * kMiB, /*keep_alive_s=*/-1);
  // keep_alive 0: unloaded as the request ends.
  EXPECT_EQ(generate("a", {{"keep_alive", 0}}).first, 200);
  EXPECT_TRUE(loaded_names().empty());
  // A second: still there right after, gone within a few seconds; /api/ps showed when.
  EXPECT_EQ(generate("a", {{"keep_alive", "2s"}}).first, 200);
  const json models = ps()["models"];
  ASSERT_EQ(models.size(), 1u);
  EXPECT_FALSE(models[0]["expires_at"].get<std::string>().empty());
  const auto t0 = Clock::now();
  while (!loaded_names().empty() && Clock::now() - t0 < seconds(10)) std::this_thread::sleep_for(milliseconds(20));
  EXPECT_TRUE(loaded_names().empty());
  // No keep_alive given: the server's (here forever) applies.
  EXPECT_EQ(generate("a").first, 200);
  std::this_thread::sleep_for(milliseconds(1500));
  EXPECT_EQ(loaded_names(), std::vector<std::string>({"a"}));
}

TEST_F(InProcessServe, TheServersKeepAliveAppliesWhenARequestGivesNone) {
  serve(64 * kMiB, /*keep_alive_s=*/2);
  EXPECT_EQ(generate("a").first, 200);
  const std::vector<LoadedInfo> now = server_->registry().loaded();
  ASSERT_EQ(now.size(), 1u);  // not at once: after its keep-alive
  ASSERT_TRUE(now[0].expires_at);
  EXPECT_LE(*now[0].expires_at, std::chrono::system_clock::now() + seconds(2));
  const auto t0 = Clock::now();
  while (!loaded_names().empty() && Clock::now() - t0 < seconds(10)) std::this_thread::sleep_for(milliseconds(20));
  EXPECT_TRUE(loaded_names().empty());
}

TEST_F(InProcessServe, ALargerContextIsFittedOrRefusedKeepingTheOldOne) {
  // ~4 MiB at 256 tokens and ~4.5 MiB at 1024 fit; the 4096 tokens of the model's training context
  // (~8 MiB: KV cache and the attention scratch's scores grow with the context) do not.
  serve(5 * kMiB);
  EXPECT_EQ(generate("a").first, 200);
  ASSERT_EQ(ps()["models"][0]["context_length"], 256);
  auto [status, body] = generate("a", {{"options", {{"num_ctx", 4096}, {"num_predict", 1}}}});
  EXPECT_EQ(status, 500) << body;
  const std::string error = body["error"].get<std::string>();
  EXPECT_NE(error.find("4096"), std::string::npos) << error;
  EXPECT_NE(error.find("stays loaded with a context of 256"), std::string::npos) << error;
  EXPECT_EQ(ps()["models"][0]["context_length"], 256);
  // A context that fits is planned again, and the model answers on it.
  std::tie(status, body) = generate("a", {{"options", {{"num_ctx", 1024}, {"num_predict", 1}}}});
  EXPECT_EQ(status, 200) << body;
  EXPECT_EQ(ps()["models"][0]["context_length"], 1024);
  EXPECT_EQ(generate("a").first, 200);  // the default context runs on the larger plan
  EXPECT_EQ(ps()["models"][0]["context_length"], 1024);
}

// --- Ollama's fields on a loaded model (issue 18 item 4)

TEST_F(InProcessServe, APromptOverTheContextLosesItsOldestMessagesButNotTheSystemOnes) {
  serve(64 * kMiB);
  const auto lease = server_->registry().lease("a", std::nullopt);
  const ModelHost& m = lease->model();
  CompletionRequest r;
  r.model = "a";
  r.chat = true;
  r.messages.push_back({"system", "SYSTEMTEXT"});
  for (int i = 0; i < 40; ++i) {
    r.messages.push_back({"user", "OLDQUESTION " + std::to_string(i) + std::string(" lorem ipsum dolor")});
    r.messages.push_back({"assistant", "answer answer answer"});
  }
  r.messages.push_back({"user", "LASTQUESTION"});
  r.gen.n_predict = 56;  // the prompt leaves the answer room: at most 256 - 56 tokens
  const std::string all = m.prompt_format->render(r.messages, true);
  ASSERT_GT(int(m.tokenizer->encode(all, false, true).size()), 256);  // over the context of 256
  const PreparedPrompt p = prepare_prompt(m, r);
  EXPECT_LE(int(p.tokens.size()), 200);
  EXPECT_GT(int(p.tokens.size()), 150);  // only as many messages as needed went
  const std::string text = m.tokenizer->decode(p.tokens);
  EXPECT_NE(text.find("SYSTEMTEXT"), std::string::npos) << text;
  EXPECT_NE(text.find("LASTQUESTION"), std::string::npos) << text;
  EXPECT_EQ(text.find("OLDQUESTION 0 "), std::string::npos) << text;
  // The kept messages are the fewest newest ones that fit, whole (found here the slow way).
  std::vector<ChatMessage> kept;
  for (size_t k = 1; k < r.messages.size(); ++k) {
    kept = {r.messages[0]};
    kept.insert(kept.end(), r.messages.begin() + long(k), r.messages.end());
    if (m.tokenizer->encode(m.prompt_format->render(kept, true), false, true).size() <= 200) break;
  }
  EXPECT_EQ(p.tokens, m.tokenizer->encode(m.prompt_format->render(kept, true), false, true));
  // truncate false: refused, naming the sizes.
  r.truncate = false;
  try {
    prepare_prompt(m, r);
    FAIL() << "an over-long prompt was accepted with truncate false";
  } catch (const ServerError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::bad_request);
    EXPECT_NE(std::string(e.what()).find("exceeds the context length"), std::string::npos) << e.what();
  }
}

TEST_F(InProcessServe, AnOverLongPromptKeepsItsFirstNumKeepTokens) {
  serve(64 * kMiB);
  const auto lease = server_->registry().lease("a", std::nullopt);
  const ModelHost& m = lease->model();
  CompletionRequest r;
  r.model = "a";
  r.raw = true;
  for (int i = 0; i < 400; ++i) r.prompt += " w" + std::to_string(i);
  const std::vector<Token> whole = m.tokenizer->encode(r.prompt, true, true);
  ASSERT_GT(whole.size(), 256u);
  r.num_keep = 5;
  r.gen.n_predict = 1;
  const PreparedPrompt p = prepare_prompt(m, r);
  ASSERT_EQ(p.tokens.size(), 255u);  // the context less the one token asked for
  EXPECT_TRUE(std::equal(p.tokens.begin(), p.tokens.begin() + 5, whole.begin()));
  EXPECT_TRUE(std::equal(p.tokens.begin() + 5, p.tokens.end(), whole.end() - 250));
  // An answer of unknown length (or longer than half the context) gets half of it.
  for (int n_predict : {-1, 200}) {
    r.gen.n_predict = n_predict;
    const PreparedPrompt half = prepare_prompt(m, r);
    ASSERT_EQ(half.tokens.size(), 128u) << n_predict;
    EXPECT_TRUE(std::equal(half.tokens.begin(), half.tokens.begin() + 5, whole.begin()));
    EXPECT_TRUE(std::equal(half.tokens.begin() + 5, half.tokens.end(), whole.end() - 123));
  }
  // A prompt that fits the context is never cut, however little room it leaves.
  r.prompt.clear();
  for (int i = 0; i < 50; ++i) r.prompt += " w" + std::to_string(i);
  const size_t fits = m.tokenizer->encode(r.prompt, true, true).size();
  ASSERT_GT(fits, 128u);
  ASSERT_LT(fits, 256u);
  EXPECT_EQ(prepare_prompt(m, r).tokens.size(), fits);
}

TEST_F(InProcessServe, ThinkingAsOllamaChecksIt) {
  serve(64 * kMiB);
  EXPECT_EQ(parse_think(json{{"think", true}}), json(true));
  EXPECT_EQ(parse_think(json{{"think", "low"}}), json("low"));
  EXPECT_FALSE(parse_think(json{{"think", nullptr}}));
  EXPECT_THROW(parse_think(json{{"think", "max"}}), ServerError);
  EXPECT_THROW(parse_think(json{{"think", 1}}), ServerError);
  EXPECT_TRUE(wants_thinking(json("high")));
  EXPECT_FALSE(wants_thinking(json(false)));
  EXPECT_FALSE(wants_thinking(std::nullopt));

  const auto lease = server_->registry().lease("a", std::nullopt);
  const ModelHost& m = lease->model();
  ASSERT_FALSE(m.prompt_format->can_think());  // SmolLM2's template
  CompletionRequest r;
  r.model = "a";
  r.prompt = "hi";
  for (const json& asks : {json(true), json("high")}) {
    r.think = asks;
    try {
      prepare_prompt(m, r);
      FAIL() << asks;
    } catch (const ServerError& e) {
      EXPECT_EQ(e.kind(), ErrorKind::bad_request);
      EXPECT_STREQ(e.what(), "\"a\" does not support thinking");
    }
  }
  r.think = false;
  EXPECT_FALSE(prepare_prompt(m, r).tokens.empty());
  // A template that can think gets enable_thinking (and reasoning_effort for a level).
  const PromptFormat thinker(*m.model, *m.tokenizer,
                             "{% if enable_thinking is defined %}[think={{ enable_thinking }}]{% endif %}"
                             "{% if reasoning_effort is defined %}[effort={{ reasoning_effort }}]{% endif %}"
                             "{% for x in messages %}{{ x.content }}{% endfor %}");
  ASSERT_TRUE(thinker.can_think());
  const std::vector<ChatMessage> hi = {{"user", "hi"}};
  EXPECT_EQ(thinker.render(hi, false), "hi");
  EXPECT_EQ(thinker.render(hi, false, nullptr, false), "[think=False]hi");
  EXPECT_EQ(thinker.render(hi, false, nullptr, true), "[think=True]hi");
  EXPECT_EQ(thinker.render(hi, false, nullptr, "low"), "[think=True][effort=low]hi");
}

}  // namespace
}  // namespace strata::server
