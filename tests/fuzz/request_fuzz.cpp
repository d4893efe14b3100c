// libFuzzer target for what a request body reaches before any model runs: the body parser with
// its depth bound, the typed field accessors, the JSON schema compiler ("format",
// "response_format") and the acceptor it builds, and the Origin/Host checks. Any input is
// accepted or refused with strata::server::HttpError or strata::Error; anything else (a crash,
// a stack overflow, a sanitizer report, another exception, a timeout) is a bug.
#include <cstdint>
#include <string>

#include "runtime/grammar.h"
#include "server/errors.h"
#include "server/json_fields.h"
#include "server/origin.h"
#include "util/error.h"

using namespace strata;
using namespace strata::server;

namespace {

void fields(const json& body) {
  for (const char* key : {"model", "prompt", "stream", "options", "format", "messages", "stop", "keep_alive"}) {
    try {
      (void)field_string(body, key);
    } catch (const HttpError&) {
    }
    try {
      (void)field_int(body, key);
    } catch (const HttpError&) {
    }
    try {
      (void)field_number(body, key);
    } catch (const HttpError&) {
    }
    try {
      (void)field_strings(body, key);
    } catch (const HttpError&) {
    }
  }
}

void schema(const json& body) {
  const json* format = nullptr;
  auto it = body.find("format");
  if (it != body.end() && it->is_object()) format = &*it;
  if (!format) return;
  try {
    JsonAcceptor a(*format);
    a.feed(dump(body.value("sample", json(nullptr))));
    (void)a.complete();
  } catch (const Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const json body = parse_body(text);
    fields(body);
    schema(body);
    (void)dump(body);
  } catch (const HttpError& e) {
    if (e.status() != 400) __builtin_trap();
  }
  (void)parse_bounded(text);
  // The first line as Origin, the second as Host.
  const size_t nl = text.find('\n');
  const std::string origin = text.substr(0, nl), host = nl == std::string::npos ? "" : text.substr(nl + 1);
  static const OriginPolicy policy = make_origin_policy("127.0.0.1", "https://ok.example,chrome-extension://*");
  (void)origin_allowed(policy, origin, host);
  (void)host_allowed(policy, host);
  return 0;
}
