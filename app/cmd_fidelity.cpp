// Fidelity tools: tokenize, logits, perplexity — what a text tokenizes to, what the model
// predicts, and how well it predicts a text.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <numeric>

#include "commands.h"
#include "options.h"
#include "runtime/perplexity.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace strata::app {

namespace {

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot read: " + std::strerror(errno));
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// One token piece on one line: \n \t \r \\ escaped, other control bytes as \xHH.
std::string printable(const std::string& piece) {
  std::string out;
  for (unsigned char ch : piece) {
    switch (ch) {
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\\':
        out += "\\\\";
        break;
      default:
        if (ch < 0x20 || ch == 0x7f) {
          char hex[8];
          std::snprintf(hex, sizeof hex, "\\x%02x", ch);
          out += hex;
        } else {
          out += char(ch);
        }
    }
  }
  return out;
}

}  // namespace

void add_tokenize_command(CLI::App& app) {
  struct Options {
    std::string model, text, file;
    bool no_special = false, parse_special = false, pieces = false;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("tokenize", "print the token ids of a text (works on vocabulary-only GGUFs)");
  cmd->add_option("model", o->model, "GGUF file with tokenizer metadata")->required();
  auto* p = cmd->add_option("-p,--prompt", o->text, "text");
  // -f reads the file's bytes verbatim, trailing newline included, as llama.cpp's llama-tokenize
  // does (a trailing newline is a token too); `perplexity -f` drops one trailing newline, as
  // llama-perplexity (common's -f) does. Each tool agrees with its llama.cpp counterpart.
  auto* f = cmd->add_option("-f,--file", o->file, "file with the text, read verbatim (as llama-tokenize)");
  p->excludes(f);
  cmd->add_flag("--no-special", o->no_special, "add no BOS/EOS");
  cmd->add_flag("--parse-special", o->parse_special, "turn special-token text into those tokens");
  cmd->add_flag("--pieces", o->pieces, "print id<TAB>piece, one a line (\\n \\t \\r \\\\ \\xHH escaped)");
  cmd->callback([o, p, f] {
    if (!p->count() && !f->count()) throw Error("tokenize: give -p TEXT or -f FILE");
    const std::string text = f->count() ? read_text_file(o->file) : o->text;
    auto file = gguf::File::open(o->model);
    auto tok = Tokenizer::from_gguf(*file);
    const auto ids = tok->encode(text, !o->no_special, o->parse_special);
    if (o->pieces) {
      for (Token id : ids) std::printf("%d\t%s\n", id, printable(tok->token_to_piece(id, true)).c_str());
    } else {
      for (size_t i = 0; i < ids.size(); ++i) std::printf(i ? " %d" : "%d", ids[i]);
      std::printf("\n");
    }
  });
}

void add_logits_command(CLI::App& app) {
  struct Options {
    ModelOptions model;
    std::string prompt, out;
    int top = 10;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("logits", "print the top next-token logits after a prompt");
  add_model_options(cmd, o->model);
  cmd->add_option("-p,--prompt", o->prompt, "prompt text")->required();
  cmd->add_option("--top", o->top, "how many to print")->capture_default_str();
  cmd->add_option("--out", o->out, "write every logit as little-endian float32");
  cmd->callback([o] {
    if (o->top < 0) throw Error("logits: --top must be >= 0, not " + std::to_string(o->top));
    auto model = Model::load(o->model.model_path);
    auto tok = Tokenizer::from_gguf(model->file());
    const auto ids = tok->encode(o->prompt, true, true);
    if (ids.empty()) throw Error("logits: the prompt is empty and the model adds no BOS: nothing to predict from");
    resolve_kv_type(*model, o->model);
    Session session(*model, o->model.session);
    auto tiering = make_tiering(*model, o->model, session);
    const float* logits = session.eval(ids);
    const int n_vocab = model->config().n_vocab;
    std::vector<int32_t> order(static_cast<size_t>(n_vocab));
    std::iota(order.begin(), order.end(), 0);
    const int k = std::min(o->top, n_vocab);
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
    for (int i = 0; i < k; ++i)
      std::printf("%d\t%.6f\t%s\n", order[size_t(i)], logits[order[size_t(i)]],
                  printable(tok->token_to_piece(order[size_t(i)], true)).c_str());
    if (!o->out.empty()) {
      std::ofstream out(o->out, std::ios::binary);
      out.write(reinterpret_cast<const char*>(logits), std::streamsize(size_t(n_vocab) * sizeof(float)));
      if (!out) throw Error("cannot write " + o->out);
    }
  });
}

void add_perplexity_command(CLI::App& app) {
  struct Options {
    ModelOptions model;
    std::string file;
    int chunks = -1;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("perplexity", "perplexity of a text (llama.cpp's method)");
  add_model_options(cmd, o->model);
  add_trace_routing_option(cmd, o->model);
  o->model.session.n_ctx = 512;
  cmd->add_option("-f,--file", o->file, "text file")->required();
  cmd->add_option("--chunks", o->chunks, "at most this many chunks (-1: all)");
  cmd->callback([o] {
    std::string text = read_text_file(o->file);
    if (!text.empty() && text.back() == '\n') text.pop_back();  // as llama.cpp's -f reads a file
    auto model = Model::load(o->model.model_path);
    auto tok = Tokenizer::from_gguf(model->file());
    const auto ids = tok->encode(text, /*add_special=*/true, /*parse_special=*/false);
    const int32_t bos = tok->add_bos() ? tok->bos() : -1;
    std::fprintf(stderr, "%zu tokens, ctx %d\n", ids.size(), o->model.session.n_ctx);
    resolve_kv_type(*model, o->model);
    // The memory budget (--mem) and --trace-routing apply to the session perplexity evaluates in.
    std::unique_ptr<tier::Tiering> tiering;
    std::unique_ptr<tier::RoutingTraceWriter> trace;
    PerplexityResult r = perplexity(
        *model, ids, bos, o->model.session.n_ctx, o->chunks, o->model.session,
        [](const PerplexityChunk& c) {
          std::printf("[%d]%.4f,", c.index + 1, c.running_ppl);
          std::fflush(stdout);
        },
        [&](Session& session) {
          std::fprintf(stderr, "device: %s\n", session.device_name().c_str());
          tiering = make_tiering(*model, o->model, session);
          trace = make_routing_trace(*model, o->model, session);
        });
    if (trace) trace->flush();
    std::printf("\nFinal estimate: PPL = %.4f +/- %.5f\n", r.ppl, r.ppl_error);
    std::fprintf(stderr, "%d chunks of %d tokens, %d scored; %.2f tok/s\n", r.n_chunks, r.n_ctx, r.n_scored,
                 r.n_tokens_evaluated / r.seconds);
  });
}

}  // namespace strata::app
