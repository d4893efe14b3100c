#pragma once
// Typed access to request JSON: a field of the wrong type is a 400 naming the field and the type
// expected, so clients learn what to fix (Ollama answers the same way).
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace strata::server {

using json = nlohmann::ordered_json;

// Parses a request body; malformed JSON, a body nested deeper than limits::kMaxJsonDepth or
// one that is not an object is a 400. The depth is checked before anything recurses on it
// (parse, copy, dump), so no body can overflow the stack.
json parse_body(const std::string& body);
// Parses JSON from elsewhere (a model's answer, a stored sidecar): discarded (is_discarded())
// when it is invalid or nested deeper than limits::kMaxJsonDepth.
json parse_bounded(std::string_view text);
// Whether arrays and objects in `text` nest at most max_depth deep (strings are skipped; the
// text need not be valid JSON). Linear, without recursion.
bool json_depth_within(std::string_view text, int max_depth);

// Each returns nullopt when the field is absent or null.
std::optional<std::string> field_string(const json& obj, const char* key);
std::optional<bool> field_bool(const json& obj, const char* key);
std::optional<double> field_number(const json& obj, const char* key);
std::optional<int64_t> field_int(const json& obj, const char* key);  // numbers with an integral value
const json* field_object(const json& obj, const char* key);
const json* field_array(const json& obj, const char* key);
// A string or an array of strings (stop sequences).
std::optional<std::vector<std::string>> field_strings(const json& obj, const char* key);

// Serializes for the wire; invalid UTF-8 from the model becomes U+FFFD instead of an exception.
std::string dump(const json& j);

}  // namespace strata::server
