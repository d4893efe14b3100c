#include "server/json_fields.h"

#include <cmath>

#include "server/errors.h"
#include "server/limits.h"

namespace strata::server {

namespace {
HttpError wrong_type(const char* key, const char* expected) {
  return bad_request(std::string("field \"") + key + "\" must be " + expected);
}
const json* find(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}
}  // namespace

bool json_depth_within(std::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return false;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return true;
}

json parse_bounded(std::string_view text) {
  if (!json_depth_within(text, limits::kMaxJsonDepth)) return json(json::value_t::discarded);
  return json::parse(text, nullptr, false);
}

json parse_body(const std::string& body) {
  if (!json_depth_within(body, limits::kMaxJsonDepth))
    throw bad_request("the request body nests arrays and objects more than " + std::to_string(limits::kMaxJsonDepth) +
                      " deep (the server's limit)");
  json j;
  try {
    j = json::parse(body);
  } catch (const json::parse_error& e) {
    throw bad_request(body.empty() ? "missing request body" : std::string("invalid JSON: ") + e.what());
  } catch (const json::exception& e) {  // 1e400: a number no double holds
    throw bad_request(std::string("invalid JSON: a number is out of range: ") + e.what());
  }
  if (!j.is_object()) throw bad_request("the request body must be a JSON object");
  return j;
}

std::optional<std::string> field_string(const json& obj, const char* key) {
  const json* v = find(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_string()) throw wrong_type(key, "a string");
  return v->get<std::string>();
}

std::optional<bool> field_bool(const json& obj, const char* key) {
  const json* v = find(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) throw wrong_type(key, "a boolean");
  return v->get<bool>();
}

std::optional<double> field_number(const json& obj, const char* key) {
  const json* v = find(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_number() || !std::isfinite(v->get<double>())) throw wrong_type(key, "a finite number");
  return v->get<double>();
}

std::optional<int64_t> field_int(const json& obj, const char* key) {
  const json* v = find(obj, key);
  if (!v) return std::nullopt;
  if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(INT64_MAX))
    throw wrong_type(key, "an integer of at most 63 bits");
  if (v->is_number_integer()) return v->get<int64_t>();
  if (v->is_number_float()) {
    const double d = v->get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) return int64_t(d);
  }
  throw wrong_type(key, "an integer");
}

const json* field_object(const json& obj, const char* key) {
  const json* v = find(obj, key);
  if (v && !v->is_object()) throw wrong_type(key, "an object");
  return v;
}

const json* field_array(const json& obj, const char* key) {
  const json* v = find(obj, key);
  if (v && !v->is_array()) throw wrong_type(key, "an array");
  return v;
}

std::optional<std::vector<std::string>> field_strings(const json& obj, const char* key) {
  const json* v = find(obj, key);
  if (!v) return std::nullopt;
  if (v->is_string()) return std::vector<std::string>{v->get<std::string>()};
  if (!v->is_array()) throw wrong_type(key, "a string or an array of strings");
  std::vector<std::string> out;
  for (const auto& s : *v) {
    if (!s.is_string()) throw wrong_type(key, "a string or an array of strings");
    out.push_back(s.get<std::string>());
  }
  return out;
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace strata::server
