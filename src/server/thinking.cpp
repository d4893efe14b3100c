#include "server/thinking.h"

#include "server/errors.h"

namespace strata::server {

std::optional<json> parse_think(const json& body) {
  auto it = body.find("think");
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (it->is_boolean()) return *it;
  if (it->is_string()) {
    const std::string level = it->get<std::string>();
    if (level == "high" || level == "medium" || level == "low") return *it;
    throw bad_request("invalid think value: \"" + level + "\" (must be \"high\", \"medium\", \"low\", true, or false)");
  }
  throw bad_request("think must be a boolean or string (\"high\", \"medium\", \"low\", true, or false)");
}

bool wants_thinking(const std::optional<json>& think) {
  return think && (think->is_string() || (think->is_boolean() && think->get<bool>()));
}

bool template_can_think(const std::string& s) {
  return s.find("enable_thinking") != std::string::npos || s.find("reasoning_effort") != std::string::npos ||
         (s.find("<think>") != std::string::npos && s.find("</think>") != std::string::npos);
}

}  // namespace strata::server
