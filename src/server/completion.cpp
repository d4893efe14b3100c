#include "server/completion.h"

#include <algorithm>
#include <cstdio>
#include <memory>
#include <thread>
#include <utility>

#include "runtime/grammar.h"
#include "server/connection.h"
#include "server/errors.h"
#include "server/limits.h"
#include "server/metrics.h"
#include "server/prompt.h"
#include "server/thinking.h"
#include "util/error.h"

namespace strata::server {

namespace {
// Evaluates the prompt's tokens before the last one (reusing what the session already holds),
// leaving generate() only the last token to evaluate, alone. The batched and the single-token
// kernels round differently, so without this a request whose prompt is cached (its last token
// re-evaluated alone) and the same request on a fresh session (evaluated in one batch) could
// pick different greedy tokens. With it, the same request always gives the same tokens.
void evaluate_all_but_last(Session& session, const std::vector<Token>& prompt) {
  const size_t n = prompt.size() - 1;
  const auto& hist = session.history();
  size_t common = 0;
  while (common < hist.size() && common < n && hist[common] == prompt[common]) ++common;
  session.truncate(int(common));
  common = size_t(session.n_past());  // a sliding-window cache may have to start over
  if (common < n) session.eval(std::vector<Token>(prompt.begin() + long(common), prompt.begin() + long(n)));
}
// The model's turn (one generation at a time): HttpError 503 when it does not come within
// limits::kMaxQueueWaitSeconds, or when the client leaves while it waits.
std::unique_lock<std::timed_mutex> wait_for_turn(LoadedModel& m, const std::string& name) {
  std::unique_lock<std::timed_mutex> lock(m.run_mutex, std::defer_lock);
  const auto give_up = Clock::now() + std::chrono::seconds(limits::kMaxQueueWaitSeconds);
  while (!lock.try_lock_for(std::chrono::milliseconds(250))) {
    if (!client_connected()) throw HttpError(503, "the client went away while waiting for model \"" + name + "\"");
    if (Clock::now() >= give_up)
      throw HttpError(503, "server busy: model \"" + name + "\" was not free within " +
                               std::to_string(limits::kMaxQueueWaitSeconds) + " s (the server's limit)");
  }
  return lock;
}
// A call object in either shape: {"name", "arguments"|"parameters"} or {"function": {...}}.
bool to_call(const json& j, json& out) {
  if (!j.is_object()) return false;
  const json& f = j.contains("function") && j["function"].is_object() ? j["function"] : j;
  if (!f.contains("name") || !f["name"].is_string()) return false;
  json args = f.contains("arguments") ? f["arguments"] : f.contains("parameters") ? f["parameters"] : json::object();
  if (args.is_string()) args = parse_bounded(args.get<std::string>());
  if (args.is_discarded() || !args.is_object()) return false;
  out = {{"function", {{"name", f["name"]}, {"arguments", args}}}};
  return true;
}
}  // namespace

void apply_options(const json& o, CompletionRequest& r) {
  SamplerParams& s = r.gen.sampling;
  if (auto v = field_int(o, "num_ctx")) r.n_ctx = int(std::clamp<int64_t>(*v, 0, limits::kMaxContextTokens));
  if (auto v = field_int(o, "num_predict"))
    r.gen.n_predict = int(std::clamp<int64_t>(*v, -2, limits::kMaxPredictTokens));
  if (r.gen.n_predict == -2) {  // "fill the context": until it is full, without shifting it
    r.gen.n_predict = -1;
    r.shift = false;
  }
  if (auto v = field_number(o, "temperature")) s.temperature = float(*v);
  if (auto v = field_int(o, "top_k")) s.top_k = int32_t(std::max<int64_t>(0, std::min<int64_t>(*v, 1 << 30)));
  if (auto v = field_number(o, "top_p")) s.top_p = float(*v);
  if (auto v = field_number(o, "min_p")) s.min_p = float(*v);
  if (auto v = field_number(o, "repeat_penalty")) s.repeat_penalty = float(*v);
  if (auto v = field_int(o, "repeat_last_n"))
    s.repeat_last_n = int32_t(std::max<int64_t>(-1, std::min<int64_t>(*v, 1 << 30)));
  if (auto v = field_number(o, "presence_penalty")) s.presence_penalty = float(*v);
  if (auto v = field_number(o, "frequency_penalty")) s.frequency_penalty = float(*v);
  if (auto v = field_int(o, "seed")) s.seed = *v < 0 ? 0xFFFFFFFFu : uint64_t(*v);
  if (auto v = field_strings(o, "stop")) r.gen.stop = *v;
  if (auto v = field_int(o, "num_keep")) r.num_keep = int(std::clamp<int64_t>(*v, -1, limits::kMaxContextTokens));
  // More threads than the machine has only slow every request down: clamped to it.
  if (auto v = field_int(o, "num_thread"))
    r.n_threads = int(std::clamp<int64_t>(*v, 0, std::max(1u, std::thread::hardware_concurrency())));
}

void set_json_format(CompletionRequest& r, const json* schema) {
  try {
    r.format = {schema ? JsonAcceptor(*schema) : JsonAcceptor()};
  } catch (const Error& e) {
    throw bad_request(std::string("unsupported format: ") + e.what());
  }
}

namespace {
// A tool definition's function part ({"name", "description", "parameters"}), or nullptr.
const json* tool_function(const json& tool) {
  if (!tool.is_object()) return nullptr;
  const json* f = field_object(tool, "function");
  return f && f->contains("name") && (*f)["name"].is_string() ? f : nullptr;
}
}  // namespace

void set_tool_choice(CompletionRequest& r, ToolChoice choice, const std::string& name) {
  if (choice == ToolChoice::automatic) return;
  if (choice == ToolChoice::none) {
    r.tools = nullptr;
    return;
  }
  json kept = json::array();
  if (r.tools.is_array())
    for (const json& tool : r.tools)
      if (const json* f = tool_function(tool); f && (choice == ToolChoice::required || (*f)["name"] == name)) {
        kept.push_back(tool);
      }
  if (choice == ToolChoice::named && kept.empty())
    throw bad_request("tool_choice names \"" + name + "\", which is not among the tools");
  if (kept.empty()) throw bad_request("tool_choice \"required\" needs at least one tool");
  if (!r.format.empty()) throw bad_request("a forced tool call cannot be combined with a response format");
  if (kept.size() > limits::kMaxForcedTools)
    throw bad_request("tool_choice \"required\" with " + std::to_string(kept.size()) + " tools: at most " +
                      std::to_string(limits::kMaxForcedTools) + " can be forced (the server's limit)");
  r.tools = kept;
  std::vector<JsonAcceptor> calls;
  for (const json& tool : kept) {
    const json& f = *tool_function(tool);
    const json* params = field_object(f, "parameters");
    const json call = {{"type", "object"},
                       {"properties",
                        {{"name", {{"const", f["name"]}}},
                         {"arguments", params && !params->empty() ? *params : json{{"type", "object"}}}}},
                       {"required", {"name", "arguments"}}};
    try {
      calls.emplace_back(call);
    } catch (const Error& e) {
      throw bad_request("the parameters of tool \"" + f["name"].get<std::string>() +
                        "\" cannot be enforced: " + e.what());
    }
  }
  r.format = std::move(calls);
  r.forced_tool_call = true;
}

void set_logprobs(CompletionRequest& r, bool logprobs, std::optional<int64_t> top_logprobs) {
  const int64_t top = top_logprobs.value_or(0);
  if (top < 0 || top > GenerateParams::kMaxTopLogprobs)
    throw bad_request("top_logprobs must be between 0 and " + std::to_string(GenerateParams::kMaxTopLogprobs));
  r.gen.n_top_logprobs = logprobs || top > 0 ? int(top) : -1;
}

json logprob_json(const Tokenizer& tokenizer, const TokenLogprob& lp) {
  const auto entry = [&](Token id, float logprob) {
    const std::string piece = tokenizer.token_to_piece(id, /*special=*/false);
    json bytes = json::array();
    for (unsigned char c : piece) bytes.push_back(int(c));
    return json{{"token", piece}, {"logprob", logprob}, {"bytes", bytes}};
  };
  json j = entry(lp.token, lp.logprob);
  json top = json::array();
  for (const auto& [id, logprob] : lp.top) top.push_back(entry(id, logprob));
  j["top_logprobs"] = top;
  return j;
}

ModelSettings stored_settings(const ModelRegistry& registry, const std::string& requested) {
  try {
    return load_settings(registry.resolve(requested).path);
  } catch (const HttpError&) {
    return {};
  }
}

void add_default_system(const ModelSettings& settings, std::vector<ChatMessage>& messages) {
  const bool has_system =
      std::any_of(messages.begin(), messages.end(), [](const ChatMessage& m) { return m.role == "system"; });
  if (!settings.system.empty() && !has_system && !messages.empty())
    messages.insert(messages.begin(), ChatMessage{"system", settings.system});
}

ToolCalls parse_tool_calls(const std::string& text) {
  ToolCalls r;
  size_t at = 0;
  static const std::string open = "<tool_call>", close = "</tool_call>";
  while (true) {
    const size_t start = text.find(open, at);
    if (start == std::string::npos) break;
    const size_t end = text.find(close, start);
    const std::string body =
        text.substr(start + open.size(), end == std::string::npos ? std::string::npos : end - start - open.size());
    json call;
    if (!to_call(parse_bounded(body), call)) break;
    r.calls.push_back(call);
    r.content += text.substr(at, start - at);
    at = end == std::string::npos ? text.size() : end + close.size();
  }
  if (!r.calls.empty()) {
    r.content += text.substr(at);
    return r;
  }
  // Llama 3.1 style: the whole answer is a call (or a list of calls), maybe after <|python_tag|>.
  std::string body = text;
  if (const size_t tag = body.find("<|python_tag|>"); tag != std::string::npos) body.erase(0, tag + 14);
  const json j = parse_bounded(body);
  json call;
  if (j.is_array()) {
    for (const auto& item : j)
      if (to_call(item, call)) r.calls.push_back(call);
    if (r.calls.size() != j.size()) r.calls = json::array();
  } else if (to_call(j, call)) {
    r.calls.push_back(call);
  }
  if (r.calls.empty()) r.content = text;
  return r;
}

std::optional<PartialCall> partial_forced_call(const std::string& text) {
  static constexpr std::string_view kSpace = " \t\r\n";
  const size_t n = text.size();
  size_t i = text.find_first_not_of(kSpace);
  if (i == std::string::npos || text[i] != '{') return std::nullopt;
  ++i;
  auto skip_space = [&] { i = std::min(n, text.find_first_not_of(kSpace, i)); };
  auto skip_string = [&] {  // at a '"': past its end; false when the text ends inside it
    for (++i; i < n; ++i) {
      if (text[i] == '\\')
        ++i;
      else if (text[i] == '"')
        return ++i, true;
    }
    i = n;
    return false;
  };
  auto skip_value = [&] {  // to the ',' or '}' after a member's value; false when the text ends first
    for (int depth = 0; i < n;) {
      const char c = text[i];
      if (c == '"') {
        if (!skip_string()) return false;
        continue;
      }
      if (depth == 0 && (c == ',' || c == '}')) return true;
      if (c == '{' || c == '[') ++depth;
      if (c == '}' || c == ']') --depth;
      ++i;
    }
    return false;
  };
  PartialCall call;
  bool named = false;
  while (true) {  // members: "key" : value, in any order
    skip_space();
    if (i < n && text[i] == ',') {
      ++i;
      continue;
    }
    if (i >= n || text[i] != '"') break;
    const size_t key_at = i;
    if (!skip_string()) break;
    const std::string key = text.substr(key_at + 1, i - key_at - 2);
    skip_space();
    if (i >= n || text[i] != ':') break;
    ++i;
    skip_space();
    const size_t value_at = i;
    const bool ended = skip_value();
    std::string value = text.substr(value_at, i - value_at);
    value.erase(value.find_last_not_of(kSpace) + 1);
    if (key == "name") {
      const json name = parse_bounded(value);  // discarded unless the string is whole
      if (!name.is_string()) return std::nullopt;
      call.name = name.get<std::string>();
      named = true;
    } else if (key == "arguments") {
      call.arguments = std::move(value);
    }
    if (!ended) break;
  }
  if (!named) return std::nullopt;
  return call;
}

std::string ToolCallStream::push(const std::string& piece) {
  static const std::string open = "<tool_call>", python_tag = "<|python_tag|>";
  text_ += piece;
  if (holding_) return "";
  if (sent_ == 0) {  // the answer's start decides whether it may be one JSON call
    const size_t first = text_.find_first_not_of(" \t\r\n");
    if (first == std::string::npos) return "";
    const std::string head = text_.substr(first, python_tag.size());
    if (text_[first] == '{' || text_[first] == '[' || head == python_tag) {
      holding_ = true;
      return "";
    }
    if (python_tag.compare(0, head.size(), head) == 0) return "";  // maybe the tag, not complete yet
  }
  if (const size_t at = text_.find(open, sent_); at != std::string::npos) {
    holding_ = true;
    std::string out = text_.substr(sent_, at - sent_);
    sent_ = at;
    return out;
  }
  // Hold back an end that may be the start of "<tool_call>".
  size_t keep = std::min(open.size() - 1, text_.size() - sent_);
  while (keep > 0 && text_.compare(text_.size() - keep, keep, open, 0, keep) != 0) --keep;
  std::string out = text_.substr(sent_, text_.size() - keep - sent_);
  sent_ = text_.size() - keep;
  return out;
}

ToolCalls ToolCallStream::finish() const {
  ToolCalls r = parse_tool_calls(text_);
  // The content push() returned is a prefix of the answer outside the calls.
  if (r.content.compare(0, sent_, text_, 0, sent_) == 0)
    r.content.erase(0, std::min(sent_, r.content.size()));
  else
    r.content.clear();
  return r;
}

PreparedPrompt prepare_prompt(const LoadedModel& m, const CompletionRequest& req) {
  PreparedPrompt out;
  const Tokenizer& tok = *m.tokenizer;
  for (Token t : req.context)
    if (t < 0 || t >= tok.n_vocab())
      throw bad_request("context token " + std::to_string(t) + " is outside the vocabulary (" +
                        std::to_string(tok.n_vocab()) + " tokens)");
  if (wants_thinking(req.think) && !m.prompt_format->can_think())
    throw bad_request("\"" + req.model + "\" does not support thinking");
  // As Ollama: a model that can think thinks unless asked not to.
  const json think = req.think ? *req.think : m.prompt_format->can_think() ? json(true) : json();
  const bool fresh = req.context.empty();
  const int n_ctx = m.effective_n_ctx(req.n_ctx);
  // The prompt's tokens: the earlier context, then the conversation from message `first` on
  // (the system messages before it kept).
  auto tokens_from = [&](size_t first) {
    std::vector<Token> tokens = req.context, more;
    if (req.chat) {
      std::vector<ChatMessage> kept;
      for (size_t i = 0; i < first; ++i)
        if (req.messages[i].role == "system") kept.push_back(req.messages[i]);
      kept.insert(kept.end(), req.messages.begin() + long(first), req.messages.end());
      more = tok.encode(m.prompt_format->render(kept, fresh, req.tools, think), /*add_special=*/false,
                        /*parse_special=*/true);
    } else if (req.raw) {
      more = tok.encode(req.prompt, /*add_special=*/fresh, /*parse_special=*/true);
    } else {
      std::vector<ChatMessage> messages;
      if (!req.system.empty()) messages.push_back({"system", req.system});
      messages.push_back({"user", req.prompt});
      more = tok.encode(m.prompt_format->render(messages, fresh, nullptr, think), /*add_special=*/false,
                        /*parse_special=*/true);
    }
    tokens.insert(tokens.end(), more.begin(), more.end());
    return tokens;
  };
  if (req.chat && !req.tools.is_null() && !m.prompt_format->supports_tools())
    throw bad_request("\"" + req.model + "\" does not support tools");
  out.tokens = tokens_from(0);
  if (out.tokens.empty()) throw bad_request("the prompt is empty");
  // A prompt over the context is cut to leave the answer room, as llama.cpp's server does: to at
  // most n_ctx - num_predict tokens, and to half the context when num_predict is larger or unset
  // (generation past the context then shifts it: GenerateParams::context_shift).
  const int room = std::clamp(req.gen.n_predict > 0 ? req.gen.n_predict : n_ctx / 2, 1, std::max(1, n_ctx / 2));
  const size_t most = size_t(std::max(1, n_ctx - room));
  auto fits = [&](const std::vector<Token>& t) { return t.size() <= most; };
  const bool over = int(out.tokens.size()) >= n_ctx;
  if (over && !req.truncate)
    throw bad_request("the input length exceeds the context length: the prompt is " +
                      std::to_string(out.tokens.size()) + " tokens, the context " + std::to_string(n_ctx) +
                      " (raise options.num_ctx, or leave \"truncate\" unset to drop the oldest messages)");
  if (over && req.chat && req.messages.size() > 1) {
    // As Ollama's chatPrompt: the fewest oldest messages dropped (never the last one, never a
    // tool result without the assistant turn that called it), found by bisection (tokens only
    // shrink as more go).
    auto start_of = [&](size_t i) {
      if (req.messages[i].role != "tool") return i;
      size_t s = i;
      while (s > 0 && req.messages[s - 1].role == "tool") --s;
      return s > 0 && req.messages[s - 1].role == "assistant" ? s - 1 : i;
    };
    size_t lo = 1, hi = req.messages.size() - 1;  // the answer is in [lo, hi]; hi: the last message alone
    std::vector<Token> best = tokens_from(start_of(hi));
    while (lo < hi) {
      const size_t mid = lo + (hi - lo) / 2;
      std::vector<Token> t = tokens_from(start_of(mid));
      if (fits(t)) {
        hi = mid;
        best = std::move(t);
      } else {
        lo = mid + 1;
      }
    }
    std::fprintf(stderr,
                 "%s: the conversation was %zu tokens, over the context of %d: dropped its %zu oldest messages\n",
                 req.model.c_str(), out.tokens.size(), n_ctx, start_of(hi));
    out.tokens = std::move(best);
  }
  if (over && !fits(out.tokens)) {
    // As Ollama's runner: the first num_keep tokens stay, the oldest after them go.
    const size_t keep = req.num_keep < 0 ? most : std::min(size_t(req.num_keep), most);  // -1: as many as can stay
    const size_t drop = out.tokens.size() - most;
    std::fprintf(stderr, "%s: truncating the prompt from %zu tokens to %zu (keeping the first %zu)\n",
                 req.model.c_str(), out.tokens.size(), most, keep);
    out.tokens.erase(out.tokens.begin() + long(keep), out.tokens.begin() + long(keep + drop));
  }
  // The reply's reasoning, as Ollama splits it: harmony's channels (not for a raw prompt, whose
  // client reads the text as it is), or, when thinking, the template's <think> tags, the reply
  // starting inside them when the prompt ends with the opening tag.
  if (m.prompt_format->channels() && (req.chat || !req.raw)) {
    out.split = PreparedPrompt::Split::harmony;
  } else if (m.prompt_format->think_tags() && wants_thinking(think)) {
    out.split = PreparedPrompt::Split::think_tags;
    std::string tail;
    for (size_t i = out.tokens.size() - std::min<size_t>(out.tokens.size(), 8); i < out.tokens.size(); ++i)
      tail += tok.token_to_piece(out.tokens[i], /*special=*/true);
    tail.erase(tail.find_last_not_of(" \t\r\n") + 1);
    out.thinking_open =
        tail.size() >= ThinkTagStream::kOpen.size() &&
        tail.compare(tail.size() - ThinkTagStream::kOpen.size(), std::string::npos, ThinkTagStream::kOpen) == 0;
  }
  out.stop = req.gen.stop;
  if (!req.raw || req.chat)
    for (const auto& s : m.prompt_format->stop_strings()) out.stop.push_back(s);
  return out;
}

CompletionResult run_completion(const ModelLease& lease, const CompletionRequest& req, const PreparedPrompt& prompt,
                                Clock::time_point started, const std::function<bool(const std::string&)>& on_text) {
  return run_completion(lease, req, prompt, started,
                        [&](const std::string& text, std::vector<TokenLogprob>&&) { return on_text(text); });
}

void add_harmony_calls(const std::vector<HarmonyToolCall>& calls, json& native, std::string& content) {
  for (const HarmonyToolCall& c : calls) {
    const json args = parse_bounded(c.arguments);
    if (args.is_object())
      native.push_back({{"function", {{"name", c.name}, {"arguments", args}}}});
    else
      content += c.arguments;
  }
}

CompletionResult run_completion(const ModelLease& lease, const CompletionRequest& req, const PreparedPrompt& prompt,
                                Clock::time_point started, const OnPiece& on_piece, const OnThinking& on_thinking) {
  LoadedModel& m = lease.model();
  CompletionResult r;
  r.load_seconds = lease.load_seconds();
  GenerateParams gen = req.gen;
  gen.stop = prompt.stop;
  // The reply's reasoning split from its content (PreparedPrompt::split). Harmony's channels are
  // control tokens: their text is kept and parsed.
  std::unique_ptr<ReplyStream> splitter;
  if (prompt.split == PreparedPrompt::Split::harmony) {
    splitter = std::make_unique<HarmonyStream>();
    gen.special_text = true;
  } else if (prompt.split == PreparedPrompt::Split::think_tags) {
    splitter = std::make_unique<ThinkTagStream>(prompt.thinking_open);
  }
  std::vector<TokenLogprob> pending;  // tokens whose text has not reached on_piece yet
  if (gen.n_top_logprobs >= 0) gen.on_logprob = [&](const TokenLogprob& lp) { pending.push_back(lp); };
  std::optional<JsonConstraint> constraint;
  if (!req.format.empty()) {
    constraint.emplace(*m.tokenizer, req.format);
    gen.constraint = &*constraint;
  }
  lease.fit_context(req.n_ctx);  // usually done by the lease already; /v1 leases without the context
  {
    const std::unique_lock<std::timed_mutex> lock = wait_for_turn(m, req.model);
    Session& session = m.session_for(req.n_ctx, req.n_threads);
    gen.context_shift = req.shift;
    gen.n_keep = req.num_keep < 0 ? int(prompt.tokens.size()) : req.num_keep;
    const int64_t most = int64_t(CompletionRequest::kMaxPredictContexts) * session.n_ctx();
    if (gen.n_predict < 0 || gen.n_predict > most)
      gen.n_predict = int(std::min<int64_t>(most, limits::kMaxPredictTokens));
    const auto prompt_started = Clock::now();
    evaluate_all_but_last(session, prompt.tokens);
    const double prefix_seconds = std::chrono::duration<double>(Clock::now() - prompt_started).count();
    r.gen = generate(session, *m.tokenizer, prompt.tokens, gen, [&](const std::string& text) {
      if (r.cancelled) return false;
      if (!splitter) {
        if (!on_piece(text, std::exchange(pending, {}))) r.cancelled = true;
        return !r.cancelled;
      }
      const ReplyStream::Delta d = splitter->feed(text);
      if (!d.thinking.empty() && on_thinking && !on_thinking(d.thinking)) r.cancelled = true;
      // The logprobs go with the next content (a client reading thinking only gets them at the end).
      if (!r.cancelled && !d.content.empty() && !on_piece(d.content, std::exchange(pending, {}))) r.cancelled = true;
      if (!r.cancelled && !on_thinking && d.content.empty() && !on_piece("", {})) r.cancelled = true;
      return !r.cancelled;
    });
    if (splitter) {
      // What the stream held back (a tail that might have begun a marker) goes out now.
      const size_t content_sent = splitter->reply().content.size();
      const size_t thinking_sent = splitter->reply().thinking.size();
      const SplitReply reply = splitter->finish();
      if (!r.cancelled && reply.thinking.size() > thinking_sent && on_thinking)
        r.cancelled = !on_thinking(reply.thinking.substr(thinking_sent));
      if (!r.cancelled && reply.content.size() > content_sent)
        r.cancelled = !on_piece(reply.content.substr(content_sent), std::exchange(pending, {}));
      r.gen.text = reply.content;
      r.thinking = reply.thinking;
      std::string unparsed;
      add_harmony_calls(reply.tool_calls, r.format_calls, unparsed);
      r.gen.text += unparsed;
      if (!r.cancelled && !unparsed.empty()) r.cancelled = !on_piece(unparsed, {});
    }
    r.gen.prompt_seconds += prefix_seconds;  // the prompt's evaluation is both parts
  }
  if (r.gen.n_shifts > 0)
    std::fprintf(stderr, "%s: the context was full %d times: shifted the context, keeping its first %d tokens\n",
                 req.model.c_str(), r.gen.n_shifts, gen.n_keep);
  if (r.cancelled)
    std::fprintf(stderr, "%s: the client went away after %d tokens; generation stopped\n", req.model.c_str(),
                 r.gen.n_generated);
  r.context = prompt.tokens;
  r.context.insert(r.context.end(), r.gen.tokens.begin(), r.gen.tokens.end());
  r.total_seconds = std::chrono::duration<double>(Clock::now() - started).count();
  metrics().record_completion(r.gen.n_prompt_total, r.gen.n_generated, r.gen.prompt_seconds, r.gen.generate_seconds,
                              r.total_seconds);
  return r;
}

}  // namespace strata::server
