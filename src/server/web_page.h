#pragma once
// GET /: the chat page (web/chat.html, compiled in) for a browser, "Ollama is running" for any
// other client (Ollama's clients and scripts probe / for that text).
#include <httplib.h>

namespace strata::server {

void answer_root(const httplib::Request& req, httplib::Response& res);

}  // namespace strata::server
