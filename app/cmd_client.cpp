// strata list, strata ps: ask a running `strata serve` (or Ollama) at $OLLAMA_HOST for its models
// and print them the way `ollama list` and `ollama ps` do.
#include <httplib.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "commands.h"
#include "server/server.h"
#include "util/error.h"

namespace strata::app {

namespace {

using json = nlohmann::json;

json get_json(const std::string& path) {
  const ServerAddress server = server_address();
  httplib::Client client(server.host, server.port);
  client.set_connection_timeout(5, 0);
  client.set_read_timeout(30, 0);
  auto res = client.Get(path);
  const std::string where = server.text();
  if (!res) throw Error("could not connect to a running server at " + where + " (start `strata serve`; OLLAMA_HOST)");
  json body = json::parse(res->body, nullptr, false);
  if (res->status != 200) {
    const std::string message =
        body.is_object() && body.contains("error") ? body["error"].dump() : "HTTP " + std::to_string(res->status);
    throw Error(where + path + ": " + message);
  }
  if (body.is_discarded()) throw Error(where + path + ": the answer is not JSON");
  return body;
}

// Ollama's format.HumanBytes: decimal units, "105 MB", "4.7 GB".
std::string human_bytes(double b) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (b >= 1000 && u < 4) b /= 1000, ++u;
  char buf[32];
  if (u == 0 || b >= 10 || b == std::floor(b))
    std::snprintf(buf, sizeof buf, "%.0f %s", b, units[u]);
  else
    std::snprintf(buf, sizeof buf, "%.1f %s", b, units[u]);
  return buf;
}

// RFC 3339 to unix seconds (the fraction and a Z or +hh:mm offset are honoured).
std::optional<int64_t> parse_time(const std::string& s) {
  std::tm tm{};
  if (s.size() < 19 || !strptime(s.substr(0, 19).c_str(), "%Y-%m-%dT%H:%M:%S", &tm)) return std::nullopt;
  int64_t t = int64_t(timegm(&tm));
  size_t i = 19;
  while (i < s.size() && (s[i] == '.' || std::isdigit((unsigned char)s[i]))) ++i;
  if (i + 5 < s.size() + 0 && (s[i] == '+' || s[i] == '-')) {
    const int off = std::atoi(s.substr(i + 1, 2).c_str()) * 3600 + std::atoi(s.substr(i + 4, 2).c_str()) * 60;
    t += s[i] == '+' ? -off : off;
  }
  return t;
}

// Ollama's format.HumanTime: "2 days ago", "About a minute from now", "Forever".
std::string human_time(const std::string& rfc3339, bool future) {
  const auto t = parse_time(rfc3339);
  if (!t) return "?";
  const int64_t now = int64_t(std::time(nullptr));
  int64_t d = future ? *t - now : now - *t;
  const char* suffix = future ? " from now" : " ago";
  if (future && d > int64_t(20) * 365 * 86400) return "Forever";
  if (d < 0) d = 0;
  auto unit = [&](int64_t n, const char* one, const char* many) {
    return (n == 1 ? std::string(one) : std::to_string(n) + " " + many) + suffix;
  };
  if (d < 1) return future ? "Now" : "Less than a second ago";
  if (d < 60) return unit(d, "1 second", "seconds");
  if (d < 120) return std::string("About a minute") + suffix;
  if (d < 3600) return unit(d / 60, "1 minute", "minutes");
  if (d < 7200) return std::string("About an hour") + suffix;
  if (d < 86400) return unit(d / 3600, "1 hour", "hours");
  if (d < 2 * 86400) return std::string("1 day") + suffix;
  if (d < 7 * 86400) return unit(d / 86400, "1 day", "days");
  if (d < 30 * 86400) return unit(d / (7 * 86400), "1 week", "weeks");
  if (d < 365 * 86400) return unit(d / (30 * 86400), "1 month", "months");
  return unit(d / (365 * 86400), "1 year", "years");
}

// Columns padded to their widest cell plus three spaces, as Ollama's tabwriter prints them.
void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size(); ++i) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], r[i].size());
    }
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 3, ' ');
    }
    std::printf("%s\n", line.c_str());
  }
}

std::string short_id(const json& m) { return m.value("digest", "").substr(0, 12); }

}  // namespace

ServerAddress server_address() {
  const char* env = std::getenv("OLLAMA_HOST");
  ServerAddress a;
  server::parse_host(env && *env ? env : "127.0.0.1:11434", a.host, a.port);
  if (a.host == "0.0.0.0") a.host = "127.0.0.1";
  if (a.host == "::") a.host = "::1";
  return a;
}

void add_list_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("list", "list the models of a running server ($OLLAMA_HOST)");
  cmd->alias("ls");
  cmd->callback([] {
    const json body = get_json("/api/tags");
    std::vector<std::vector<std::string>> rows = {{"NAME", "ID", "SIZE", "MODIFIED"}};
    for (const auto& m : body.value("models", json::array()))
      rows.push_back({m.value("name", ""), short_id(m), human_bytes(m.value("size", 0.0)),
                      human_time(m.value("modified_at", ""), false)});
    print_table(rows);
  });
}

void add_ps_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("ps", "list the models a running server ($OLLAMA_HOST) has loaded");
  cmd->callback([] {
    const json body = get_json("/api/ps");
    std::vector<std::vector<std::string>> rows = {{"NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"}};
    for (const auto& m : body.value("models", json::array())) {
      const double size = m.value("size", 0.0), vram = m.value("size_vram", 0.0);
      const int gpu = size > 0 ? int(std::lround(100 * vram / size)) : 0;
      const std::string processor = gpu == 0     ? "100% CPU"
                                    : gpu == 100 ? "100% GPU"
                                                 : std::to_string(100 - gpu) + "%/" + std::to_string(gpu) + "% CPU/GPU";
      rows.push_back({m.value("name", ""), short_id(m), human_bytes(size), processor,
                      std::to_string(m.value("context_length", 0)), human_time(m.value("expires_at", ""), true)});
    }
    print_table(rows);
  });
}

}  // namespace strata::app
