#pragma once
// The HTTP routes of `strata serve`: Ollama's API (ollama_api.cpp) and OpenAI's (openai_api.cpp),
// both thin translations into CompletionRequest.
#include <httplib.h>

#include "server/model_registry.h"

namespace strata::server {

void add_ollama_routes(httplib::Server& http, ModelRegistry& registry);
void add_openai_routes(httplib::Server& http, ModelRegistry& registry);
// /v1/responses (responses_api.cpp) and Anthropic's /v1/messages, /v1/messages/count_tokens
// (anthropic_api.cpp).
void add_responses_routes(httplib::Server& http, ModelRegistry& registry);
void add_anthropic_routes(httplib::Server& http, ModelRegistry& registry);
// /api/embed, /api/embeddings, /v1/embeddings (embed_api.cpp).
void add_embedding_routes(httplib::Server& http, ModelRegistry& registry);
// /api/copy, /api/delete, /api/create, /api/pull, /metrics (manage_api.cpp).
void add_management_routes(httplib::Server& http, ModelRegistry& registry);

}  // namespace strata::server
