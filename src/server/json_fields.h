#pragma once
// Typed access to request JSON: a field of the wrong type is a 400 naming the field and the type
// expected, so clients learn what to fix (Ollama answers the same way).
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace strata::server {

using json = nlohmann::ordered_json;

// Parses a request body; malformed JSON or a body that is not an object is a 400.
json parse_body(const std::string& body);

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
