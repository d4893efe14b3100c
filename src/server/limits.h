#pragma once
// Every bound `strata serve` puts on what a client sends or makes it do (STYLE.md: every input
// from outside has a bound, written once). A request that passes one gets a 4xx (or 503) whose
// message names the limit; the server goes on serving everyone else. The template engine's and
// the JSON schema compiler's own bounds live beside them (template/render.h, runtime/grammar.h).
#include <cstddef>

namespace strata::server::limits {

// --- request bodies
constexpr size_t kMaxBodyBytes = size_t(16) << 20;  // with Content-Length or chunked: 413 beyond
constexpr int kMaxJsonDepth = 128;                  // nested arrays and objects in a body: 400 beyond

// --- connections (a fixed pool: slow or idle clients are dropped, extra ones refused)
constexpr int kHttpThreads = 128;            // connections served at once
constexpr int kMaxPendingConnections = 128;  // accepted and waiting for a thread; more get 503
constexpr int kListenBacklog = 256;          // connections the kernel holds until they are accepted
constexpr int kHeaderTimeoutSeconds = 10;    // request line and headers must all arrive within this
constexpr int kBodyTimeoutSeconds = 30;      // the whole body must arrive within this
constexpr int kReadTimeoutSeconds = 5;       // silence while a request is read
constexpr int kWriteTimeoutSeconds = 30;     // a client that reads nothing for this long is dropped
constexpr int kKeepAliveSeconds = 5;         // an idle kept-alive connection is closed after this
constexpr int kKeepAliveMaxRequests = 100;   // requests on one connection

// --- work per request
constexpr int kMaxQueueWaitSeconds = 600;              // waiting for the model behind other requests: 503 beyond
constexpr double kKeepAliveForeverSeconds = 1e9;       // a keep_alive this long (~31 years) means forever
constexpr int kMaxContextTokens = 1 << 24;             // options.num_ctx
constexpr int kMaxPredictTokens = 1 << 30;             // num_predict, max_tokens
constexpr size_t kMaxTemplateBytes = size_t(1) << 20;  // a template stored by /api/create
constexpr size_t kMaxForcedTools = 64;  // tools a forced call may choose from (each a grammar followed per token)

}  // namespace strata::server::limits
