#include "server/origin.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>

namespace strata::server {

namespace {

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower((unsigned char)c));
  return s;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t");
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(" \t") - a + 1);
}

// gin-contrib/cors: one '*' stands for any text between the pattern's two ends.
bool matches(const std::string& pattern, const std::string& origin) {
  if (pattern == "*") return true;
  const size_t star = pattern.find('*');
  if (star == std::string::npos) return pattern == origin;
  const std::string head = pattern.substr(0, star), tail = pattern.substr(star + 1);
  return origin.size() >= head.size() + tail.size() && origin.compare(0, head.size(), head) == 0 &&
         ends_with(origin, tail);
}

// The host part of a Host header: "[::1]:80" -> "::1", "a.b:80" -> "a.b", "::1" -> "::1".
std::string host_part(const std::string& host_header) {
  std::string h = host_header;
  if (!h.empty() && h[0] == '[') {
    const size_t close = h.find(']');
    return close == std::string::npos ? h : h.substr(1, close - 1);
  }
  const size_t colon = h.rfind(':');
  if (colon != std::string::npos && h.find(':') == colon) h.resize(colon);
  return h;
}

struct Address {
  int family = 0;
  unsigned char bytes[16] = {};
};

bool parse_address(const std::string& text, Address& a) {
  if (inet_pton(AF_INET, text.c_str(), a.bytes) == 1) return a.family = AF_INET, true;
  if (inet_pton(AF_INET6, text.c_str(), a.bytes) == 1) return a.family = AF_INET6, true;
  return false;
}

bool is_loopback(const Address& a) {
  if (a.family == AF_INET) return a.bytes[0] == 127;
  static const unsigned char v6_loopback[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  return std::memcmp(a.bytes, v6_loopback, 16) == 0;
}

// Go's netip: IsLoopback, IsPrivate (RFC 1918, RFC 4193) or IsUnspecified.
bool is_local_kind(const Address& a) {
  if (is_loopback(a)) return true;
  if (a.family == AF_INET) {
    const unsigned char* b = a.bytes;
    return b[0] == 10 || (b[0] == 172 && (b[1] & 0xf0) == 16) || (b[0] == 192 && b[1] == 168) ||
           (b[0] == 0 && b[1] == 0 && b[2] == 0 && b[3] == 0);
  }
  if ((a.bytes[0] & 0xfe) == 0xfc) return true;
  return std::all_of(a.bytes, a.bytes + 16, [](unsigned char c) { return c == 0; });
}

// One of this machine's interface addresses (Ollama's isLocalIP).
bool is_interface_address(const Address& a) {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return false;
  bool found = false;
  for (ifaddrs* i = list; i && !found; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != a.family) continue;
    if (a.family == AF_INET)
      found = std::memcmp(&reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, a.bytes, 4) == 0;
    else
      found = std::memcmp(&reinterpret_cast<sockaddr_in6*>(i->ifa_addr)->sin6_addr, a.bytes, 16) == 0;
  }
  freeifaddrs(list);
  return found;
}

}  // namespace

OriginPolicy make_origin_policy(const std::string& listen_host, const char* origins_env) {
  OriginPolicy p;
  if (origins_env) {
    std::string list = origins_env;
    size_t at = 0;
    while (at <= list.size()) {
      const size_t comma = std::min(list.find(',', at), list.size());
      const std::string item = trim(list.substr(at, comma - at));
      if (!item.empty()) p.allowed_origins.push_back(item);
      at = comma + 1;
    }
  }
  for (const char* host : {"localhost", "127.0.0.1", "0.0.0.0"})
    for (const char* scheme : {"http://", "https://"}) {
      p.allowed_origins.push_back(std::string(scheme) + host);
      p.allowed_origins.push_back(std::string(scheme) + host + ":*");
    }
  for (const char* app : {"app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*"})
    p.allowed_origins.push_back(app);
  Address a;
  const std::string h = lower(listen_host);
  p.check_host = h.empty() || h == "localhost" || (parse_address(h, a) && is_loopback(a));
  return p;
}

bool origin_allowed(const OriginPolicy& policy, const std::string& origin, const std::string& host_header) {
  if (origin.empty()) return true;
  if (origin == "http://" + host_header || origin == "https://" + host_header) return true;  // same origin
  return std::any_of(policy.allowed_origins.begin(), policy.allowed_origins.end(),
                     [&](const std::string& pattern) { return matches(pattern, origin); });
}

bool host_allowed(const OriginPolicy& policy, const std::string& host_header) {
  if (!policy.check_host) return true;
  const std::string host = lower(host_part(host_header));
  Address a;
  if (parse_address(host, a)) return is_local_kind(a) || is_interface_address(a);
  if (host.empty() || host == "localhost") return true;
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) == 0 && host == lower(name)) return true;
  for (const char* tld : {".localhost", ".local", ".internal"})
    if (ends_with(host, tld)) return true;
  return false;
}

}  // namespace strata::server
