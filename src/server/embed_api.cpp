// Embeddings: Ollama's /api/embed (normalized, batched) and legacy /api/embeddings (one prompt,
// not normalized, as Ollama answers), OpenAI's /v1/embeddings. Pooling: the mean of the final
// hidden state (after the output norm) over the input's tokens (runtime/embedding.h), evaluated
// on the model's embedding session, never the chat session's KV cache.
#include <algorithm>
#include <climits>

#include "runtime/embedding.h"

#include "server/api.h"
#include "server/errors.h"
#include "server/http_util.h"
#include "server/limits.h"
#include "server/metrics.h"

namespace strata::server {

namespace {

struct EmbedResult {
  std::vector<std::vector<float>> vectors;
  int n_prompt = 0;
  double load_seconds = 0;
  double total_seconds = 0;
};

// One input: text, or token ids given as they are (OpenAI and Ollama take both).
struct EmbedInput {
  std::string text;
  std::vector<Token> tokens;
  bool is_tokens = false;
};

// Tokenizes and embeds each input. truncate: inputs longer than the context (num_ctx, 0: the
// server's) are cut to fit; otherwise they are a 400. dimensions > 0: the vector's first
// `dimensions` values, normalized again (OpenAI's and Ollama's "dimensions"); more than the model
// has is a 400.
EmbedResult embed_inputs(ModelRegistry& registry, const std::string& model, const std::vector<EmbedInput>& inputs,
                         bool truncate, bool normalize, std::optional<double> keep_alive_s, int64_t dimensions = 0,
                         int num_ctx = 0) {
  const auto started = Clock::now();
  EmbedResult r;
  const auto lease = registry.lease(model, keep_alive_s);
  r.load_seconds = lease->load_seconds();
  lease->fit_context(num_ctx);
  LoadedModel& m = lease->model();
  const int n_ctx = m.effective_n_ctx(num_ctx);
  const int n_embd = m.model->config().n_embd;
  if (dimensions < 0 || dimensions > n_embd)
    throw bad_request("dimensions is " + std::to_string(dimensions) + ", but model \"" + model +
                      "\" gives vectors of " + std::to_string(n_embd) + " dimensions");
  std::vector<std::vector<Token>> token_lists;
  for (const EmbedInput& input : inputs) {
    std::vector<Token> tokens = input.is_tokens ? input.tokens
                                                : m.tokenizer->encode(input.text, /*add_special=*/true,
                                                                      /*parse_special=*/false);
    for (Token t : tokens)
      if (t < 0 || t >= m.tokenizer->n_vocab())
        throw bad_request("token id " + std::to_string(t) + " is outside the vocabulary (" +
                          std::to_string(m.tokenizer->n_vocab()) + " tokens)");
    if (tokens.empty()) throw bad_request("an input has no tokens");
    if (int(tokens.size()) > n_ctx) {
      if (!truncate)
        throw bad_request("input is " + std::to_string(tokens.size()) + " tokens, more than the context of " +
                          std::to_string(n_ctx) + " (set truncate to true)");
      tokens.resize(size_t(n_ctx));
    }
    r.n_prompt += int(tokens.size());
    token_lists.push_back(std::move(tokens));
  }
  {
    std::lock_guard<std::timed_mutex> lock(m.run_mutex);
    size_t longest = 0;
    for (const auto& tokens : token_lists) longest = std::max(longest, tokens.size());
    // The session as it is when the inputs fit (a chat's cached prefix stays), else one of the context.
    Session* session = &m.embed_session(0);
    if (size_t(session->n_ctx()) < longest) session = &m.session_for(num_ctx, 0);
    for (const auto& tokens : token_lists) {
      std::vector<float> v = embed_mean(*session, tokens);
      if (dimensions > 0) v.resize(size_t(dimensions));
      if (normalize || dimensions > 0) l2_normalize(v);
      r.vectors.push_back(std::move(v));
    }
  }
  r.total_seconds = std::chrono::duration<double>(Clock::now() - started).count();
  metrics().record_embedding(r.n_prompt, r.total_seconds);
  return r;
}

// "input": a string, an array of strings, an array of token ids, or an array of arrays of them.
std::vector<EmbedInput> inputs_of(const json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return {};
  const auto invalid = [&] {
    return bad_request(std::string("field \"") + key +
                       "\" must be a string, an array of strings, an array of token ids or an array of such arrays");
  };
  const auto token_ids = [&](const json& list) {
    EmbedInput in;
    in.is_tokens = true;
    for (const json& t : list) {
      if (!t.is_number_integer()) throw invalid();
      const int64_t id = t.get<int64_t>();
      if (id < 0 || id > INT32_MAX) throw bad_request("token id " + std::to_string(id) + " is outside the vocabulary");
      in.tokens.push_back(Token(id));
    }
    return in;
  };
  if (it->is_string()) return {EmbedInput{it->get<std::string>(), {}, false}};
  if (!it->is_array()) throw invalid();
  if (!it->empty() && (*it)[0].is_number()) return {token_ids(*it)};
  std::vector<EmbedInput> out;
  for (const auto& v : *it) {
    if (v.is_string())
      out.push_back({v.get<std::string>(), {}, false});
    else if (v.is_array())
      out.push_back(token_ids(v));
    else
      throw invalid();
  }
  return out;
}

std::string model_of(const json& body) {
  auto model = field_string(body, "model");
  if (!model || model->empty()) model = field_string(body, "name");
  if (!model || model->empty()) throw bad_request("model is required");
  return *model;
}

std::optional<double> keep_alive_of(const json& body) {
  auto it = body.find("keep_alive");
  if (it != body.end() && it->is_number()) return it->get<double>();
  return std::nullopt;  // durations as strings: the server's default (generate/chat parse them)
}

// The floats' little-endian bytes in base64: what OpenAI's clients ask for by default.
std::string base64_floats(const std::vector<float>& v) {
  static const char* abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const auto* bytes = reinterpret_cast<const unsigned char*>(v.data());
  const size_t n = v.size() * sizeof(float);
  std::string out;
  out.reserve((n + 2) / 3 * 4);
  for (size_t i = 0; i < n; i += 3) {
    const uint32_t b0 = bytes[i], b1 = i + 1 < n ? bytes[i + 1] : 0, b2 = i + 2 < n ? bytes[i + 2] : 0;
    const uint32_t w = (b0 << 16) | (b1 << 8) | b2;
    out += abc[(w >> 18) & 63];
    out += abc[(w >> 12) & 63];
    out += i + 1 < n ? abc[(w >> 6) & 63] : '=';
    out += i + 2 < n ? abc[w & 63] : '=';
  }
  return out;
}

json vector_json(const std::vector<float>& v) {
  json a = json::array();
  for (float x : v) a.push_back(x);
  return a;
}

}  // namespace

void add_embedding_routes(httplib::Server& http, ModelRegistry& registry) {
  add_route_with_body(http, "POST", "/api/embed", ErrorStyle::ollama,
                      [&registry](const httplib::Request& req, httplib::Response& res) {
                        const json body = parse_body(req.body);
                        const std::string model = model_of(body);
                        const std::vector<EmbedInput> inputs = inputs_of(body, "input");
                        const bool truncate = field_bool(body, "truncate").value_or(true);
                        const json* options = field_object(body, "options");
                        const int num_ctx = options
                                                ? int(std::clamp<int64_t>(field_int(*options, "num_ctx").value_or(0), 0,
                                                                          limits::kMaxContextTokens))
                                                : 0;
                        const EmbedResult r = embed_inputs(registry, model, inputs, truncate, true, keep_alive_of(body),
                                                           field_int(body, "dimensions").value_or(0), num_ctx);
                        json list = json::array();
                        for (const auto& v : r.vectors) list.push_back(vector_json(v));
                        send_json(res, {{"model", model},
                                        {"embeddings", list},
                                        {"total_duration", to_ns(r.total_seconds)},
                                        {"load_duration", to_ns(r.load_seconds)},
                                        {"prompt_eval_count", r.n_prompt}});
                      });
  add_route_with_body(http, "POST", "/api/embeddings", ErrorStyle::ollama,
                      [&registry](const httplib::Request& req, httplib::Response& res) {
                        const json body = parse_body(req.body);
                        const std::string model = model_of(body);
                        const std::string prompt = field_string(body, "prompt").value_or("");
                        std::vector<EmbedInput> inputs;
                        if (!prompt.empty()) inputs.push_back({prompt, {}, false});
                        const EmbedResult r = embed_inputs(registry, model, inputs, true, false, keep_alive_of(body));
                        send_json(res, {{"embedding", r.vectors.empty() ? json::array() : vector_json(r.vectors[0])}});
                      });
  add_route_with_body(
      http, "POST", "/v1/embeddings", ErrorStyle::openai,
      [&registry](const httplib::Request& req, httplib::Response& res) {
        const json body = parse_body(req.body);
        auto model = field_string(body, "model");
        if (!model || model->empty()) throw bad_request("model is required");
        const std::vector<EmbedInput> inputs = inputs_of(body, "input");
        if (inputs.empty()) throw bad_request("input is required");
        const std::string encoding = field_string(body, "encoding_format").value_or("float");
        if (encoding != "float" && encoding != "base64")
          throw bad_request("encoding_format must be \"float\" or \"base64\"");
        auto dimensions = field_int(body, "dimensions");
        if (dimensions && *dimensions < 1) throw bad_request("dimensions must be at least 1");
        const EmbedResult r = embed_inputs(registry, *model, inputs, true, true, std::nullopt, dimensions.value_or(0));
        json data = json::array();
        for (size_t i = 0; i < r.vectors.size(); ++i)
          data.push_back(
              {{"object", "embedding"},
               {"embedding", encoding == "float" ? vector_json(r.vectors[i]) : json(base64_floats(r.vectors[i]))},
               {"index", i}});
        send_json(res, {{"object", "list"},
                        {"data", data},
                        {"model", *model},
                        {"usage", {{"prompt_tokens", r.n_prompt}, {"total_tokens", r.n_prompt}}}});
      });
}

}  // namespace strata::server
