#include "server/web_page.h"

#include "server/web/chat_html.h"  // generated from web/chat.html (CMakeLists.txt, web/embed.cmake)

namespace strata::server {

void answer_root(const httplib::Request& req, httplib::Response& res) {
  // Browsers ask for text/html first; Ollama's clients, curl and health checks do not.
  if (req.get_header_value("Accept").find("text/html") == std::string::npos) {
    res.set_content("Ollama is running", "text/plain; charset=utf-8");
    return;
  }
  // The page may run only its own inline code and talk only to this server.
  res.set_header("Content-Security-Policy",
                 "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
                 "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
  res.set_header("X-Content-Type-Options", "nosniff");
  res.set_header("Cache-Control", "no-cache");
  res.set_header("Vary", "Accept");
  res.set_content(reinterpret_cast<const char*>(web::chat_html), web::chat_html_bytes, "text/html; charset=utf-8");
}

}  // namespace strata::server
