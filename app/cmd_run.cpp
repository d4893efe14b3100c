// strata run MODEL [-p PROMPT]: stream a completion and report prompt and generation speed.
//
// MODEL a file (or --local): the engine runs it here; -p is required and the prompt is continued
// as given. MODEL a name: when a server answers at $OLLAMA_HOST and knows the model, `run` is its
// client, as `ollama run` is: -p streams /api/generate (the prompt in the model's chat
// template), no -p chats through /api/chat, one line per turn, until end of input.
#include <httplib.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>

#include "commands.h"
#include "options.h"
#include "tier/stats.h"
#include "tokenizer/tokenizer.h"

namespace strata::app {

namespace {

using json = nlohmann::json;

struct RunOptions {
  ModelOptions model;
  SamplingOptions sampling;
  std::string prompt;
  bool no_special = false;
  bool raw_prompt_tokens = false;
  bool local = false;
};

void run_local(RunOptions& o) {
  if (o.prompt.empty()) throw Error("-p/--prompt is required to run a model file");
  auto model = Model::load(o.model.model_path);
  auto tokenizer = Tokenizer::from_gguf(model->file());
  resolve_kv_type(*model, o.model);
  Session session(*model, o.model.session);
  if (session.on_gpu()) std::fprintf(stderr, "device: %s\n", session.device_name().c_str());
  auto tiering = make_tiering(*model, o.model, session);
  auto trace = make_routing_trace(*model, o.model, session);
  const auto prompt = tokenizer->encode(o.prompt, !o.no_special, /*parse_special=*/true);
  std::fputs(o.prompt.c_str(), stdout);
  std::fflush(stdout);
  GenerateResult r = generate(session, *tokenizer, prompt, o.sampling.gen, [](const std::string& text) {
    std::fputs(text.c_str(), stdout);
    std::fflush(stdout);
    return true;
  });
  std::fputs("\n", stdout);
  std::fflush(stdout);
  std::fprintf(stderr, "\nprompt: %d tokens in %.3f s (%.2f tok/s)\n", r.n_prompt, r.prompt_seconds,
               r.prompt_seconds > 0 ? r.n_prompt / r.prompt_seconds : 0.0);
  // The first generated token comes from the prompt's logits: n-1 forward passes follow.
  const int n_evals = r.n_generated > 0 ? r.n_generated - 1 : 0;
  std::fprintf(stderr, "generation: %d tokens in %.3f s (%.2f tok/s), %d threads, stop: %s\n", r.n_generated,
               r.generate_seconds, r.generate_seconds > 0 ? n_evals / r.generate_seconds : 0.0, session.n_threads(),
               r.done_reason.c_str());
  if (trace) trace->flush();
  if (o.model.stats) {
    tier::TierStats stats = tiering->stats();
    stats.n_tokens = uint64_t(r.n_prompt + n_evals);
    stats.seconds = r.prompt_seconds + r.generate_seconds;
    std::fputs(tier::describe_stats(stats).c_str(), stderr);
  }
}

// --- as a client of a running server

// The sampling and context options the user gave on the command line, as Ollama "options". Only
// those given: the rest keep the server's defaults and the model's stored parameters.
json given_options(const CLI::App& cmd, const RunOptions& o) {
  const SamplerParams& s = o.sampling.gen.sampling;
  auto given = [&](const char* name) {
    const CLI::Option* opt = cmd.get_option_no_throw(name);
    return opt && opt->count() > 0;
  };
  json j = json::object();
  if (given("--n-predict")) j["num_predict"] = o.sampling.gen.n_predict;
  if (given("--temp")) j["temperature"] = s.temperature;
  if (given("--greedy") && o.sampling.greedy) j["temperature"] = 0;
  if (given("--top-k")) j["top_k"] = s.top_k;
  if (given("--top-p")) j["top_p"] = s.top_p;
  if (given("--min-p")) j["min_p"] = s.min_p;
  if (given("--repeat-penalty")) j["repeat_penalty"] = s.repeat_penalty;
  if (given("--repeat-last-n")) j["repeat_last_n"] = s.repeat_last_n;
  if (given("--presence-penalty")) j["presence_penalty"] = s.presence_penalty;
  if (given("--frequency-penalty")) j["frequency_penalty"] = s.frequency_penalty;
  if (given("--seed")) j["seed"] = s.seed;
  if (given("--stop")) j["stop"] = o.sampling.gen.stop;
  if (given("--ctx")) j["num_ctx"] = o.model.session.n_ctx;
  if (given("--threads")) j["num_thread"] = o.model.session.n_threads;
  for (const char* name :
       {"--batch", "--stream-ffn", "--prefetch", "--mem", "--fresh", "--stats", "--no-special", "--trace-routing",
        "--expert-guess"})
    if (given(name)) std::fprintf(stderr, "note: %s applies to local runs only; the server ignores it\n", name);
  return j;
}

// The error a server answered with ({"error": "..."}), or the status.
std::string server_error(int status, const std::string& body) {
  const json j = json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("error")) {
    const json& e = j["error"];
    if (e.is_string()) return e.get<std::string>();
    if (e.is_object() && e.contains("message") && e["message"].is_string()) return e["message"].get<std::string>();
  }
  return "HTTP " + std::to_string(status);
}

class ServerClient {
 public:
  explicit ServerClient(ServerAddress address) : address_(std::move(address)), http_(address_.host, address_.port) {
    http_.set_connection_timeout(2, 0);
    http_.set_read_timeout(3600, 0);  // a long generation streams; a long prompt may take a while first
  }
  const ServerAddress& address() const { return address_; }

  // Whether the server knows the model: nullopt when no server answers, else the answer to
  // /api/show (true: 200; false: 404). Other errors throw.
  std::optional<bool> knows(const std::string& model) {
    auto res = http_.Post("/api/show", json{{"model", model}}.dump(), "application/json");
    if (!res) return std::nullopt;
    if (res->status == 200) return true;
    if (res->status == 404) return false;
    throw Error("the server at " + address_.text() + " refused model \"" + model +
                "\": " + server_error(res->status, res->body));
  }

  // POSTs body to path and hands each NDJSON object of the streamed answer to on_object.
  // Throws strata::Error for a failed request or an error in the stream.
  void stream(const std::string& path, const json& body, const std::function<void(const json&)>& on_object) {
    std::string pending;
    auto take_line = [&](const std::string& line) {
      if (line.find_first_not_of(" \t\r\n") == std::string::npos) return;
      const json j = json::parse(line, nullptr, false);
      if (!j.is_object()) throw Error("the server at " + address_.text() + " sent a line that is not JSON: " + line);
      if (j.contains("error")) throw Error("the server at " + address_.text() + ": " + server_error(500, line));
      on_object(j);
    };
    int status = 0;
    httplib::Request req;
    req.method = "POST";
    req.path = path;
    req.body = body.dump();
    req.set_header("Content-Type", "application/json");
    req.response_handler = [&](const httplib::Response& res) {
      status = res.status;
      return true;
    };
    req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
      pending.append(data, n);
      if (status != 200) return true;  // an error body: read whole below
      size_t start = 0;
      for (size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1)
        take_line(pending.substr(start, nl - start));
      pending.erase(0, start);
      return true;
    };
    auto res = http_.send(req);
    if (!res) throw Error("lost the server at " + address_.text() + ": " + httplib::to_string(res.error()));
    if (status != 200) throw Error("the server at " + address_.text() + ": " + server_error(status, pending));
    take_line(pending);
  }

 private:
  ServerAddress address_;
  httplib::Client http_;
};

void print_text(const std::string& text) {
  std::fputs(text.c_str(), stdout);
  std::fflush(stdout);
}

// The speeds of a final object, as a local run prints them.
void print_speeds(const json& last) {
  const int64_t n_prompt = last.value("prompt_eval_count", int64_t(0)), n_eval = last.value("eval_count", int64_t(0));
  const double prompt_s = last.value("prompt_eval_duration", 0.0) / 1e9,
               eval_s = last.value("eval_duration", 0.0) / 1e9;
  std::fprintf(stderr, "\nprompt: %lld tokens in %.3f s (%.2f tok/s)\n", (long long)n_prompt, prompt_s,
               prompt_s > 0 ? n_prompt / prompt_s : 0.0);
  std::fprintf(stderr, "generation: %lld tokens in %.3f s (%.2f tok/s), stop: %s\n", (long long)n_eval, eval_s,
               eval_s > 0 ? n_eval / eval_s : 0.0, last.value("done_reason", "").c_str());
}

void run_on_server(ServerClient& server, const std::string& model, const RunOptions& o, const json& options) {
  if (!o.prompt.empty()) {
    json last;
    server.stream("/api/generate", {{"model", model}, {"prompt", o.prompt}, {"options", options}}, [&](const json& j) {
      if (j.contains("response") && j["response"].is_string()) print_text(j["response"]);
      if (j.value("done", false)) last = j;
    });
    print_text("\n");
    print_speeds(last);
    return;
  }
  std::fprintf(stderr, "chatting with %s at %s. Type a message; Ctrl-D ends.\n", model.c_str(),
               server.address().text().c_str());
  json messages = json::array();
  std::string line;
  while (true) {
    print_text("> ");
    if (!std::getline(std::cin, line)) break;
    if (line.empty()) continue;
    messages.push_back({{"role", "user"}, {"content", line}});
    std::string answer;
    server.stream("/api/chat", {{"model", model}, {"messages", messages}, {"options", options}}, [&](const json& j) {
      const json* m = j.contains("message") && j["message"].is_object() ? &j["message"] : nullptr;
      if (m && m->contains("content") && (*m)["content"].is_string()) {
        const std::string text = (*m)["content"];
        answer += text;
        print_text(text);
      }
    });
    print_text("\n");
    messages.push_back({{"role", "assistant"}, {"content", answer}});
  }
  print_text("\n");
}

}  // namespace

void add_run_command(CLI::App& app) {
  auto opts = std::make_shared<RunOptions>();
  CLI::App* cmd = app.add_subcommand(
      "run", "generate text from a prompt: MODEL is a GGUF file, or a model of a running server ($OLLAMA_HOST)");
  add_model_options(cmd, opts->model);
  add_trace_routing_option(cmd, opts->model);
  add_sampling_options(cmd, opts->sampling);
  cmd->add_option("-p,--prompt", opts->prompt,
                  "prompt text (required for a file; without it a server's model chats interactively)");
  cmd->add_flag("--no-special", opts->no_special, "do not add BOS/EOS tokens");
  cmd->add_flag("--local", opts->local, "run MODEL (a file) here, even when a server is up");
  cmd->callback([opts, cmd] {
    if (opts->sampling.greedy) opts->sampling.gen.sampling.temperature = 0.0f;
    const std::string& name = opts->model.model_path;
    std::error_code ec;
    if (!opts->local && !std::filesystem::exists(name, ec)) {
      ServerClient server(server_address());
      if (const std::optional<bool> known = server.knows(name)) {
        if (!*known)
          throw Error("\"" + name + "\" is not a file, and the server at " + server.address().text() +
                      " has no model of that name");
        return run_on_server(server, name, *opts, given_options(*cmd, *opts));
      }
      // No server: the file reader below says that the file does not exist.
    }
    run_local(*opts);
  });
}

}  // namespace strata::app
