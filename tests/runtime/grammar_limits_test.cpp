// The JSON schema compiler's bound on "$ref" expansion (JsonAcceptor::kMaxSchemaNodes): a schema
// of a hundred bytes whose parts all refer back to the root once grew memory to gigabytes.
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "runtime/grammar.h"
#include "util/error.h"

namespace strata {
namespace {

using ojson = nlohmann::ordered_json;

std::string refusal(const ojson& schema) {
  try {
    JsonAcceptor a(schema);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(GrammarLimits, SelfReferringSchemaIsRefusedQuickly) {
  ojson schema = {{"type", "object"}, {"properties", ojson::object()}};
  for (const char* k : {"a", "b", "c", "d", "e", "f", "g", "h"}) schema["properties"][k] = {{"$ref", "#"}};
  const auto t0 = std::chrono::steady_clock::now();
  const std::string message = refusal(schema);
  EXPECT_NE(message.find(std::to_string(JsonAcceptor::kMaxSchemaNodes)), std::string::npos) << message;
  EXPECT_NE(message.find("$ref"), std::string::npos) << message;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
}

TEST(GrammarLimits, DefinitionsReferringToEachOtherAreRefused) {
  const ojson schema = ojson::parse(R"({
    "$defs": {"a": {"type": "array", "items": {"$ref": "#/$defs/b"}},
              "b": {"type": "object", "properties": {"x": {"$ref": "#/$defs/a"}, "y": {"$ref": "#/$defs/a"},
                                                      "z": {"$ref": "#/$defs/b"}}}},
    "$ref": "#/$defs/b"})");
  EXPECT_FALSE(refusal(schema).empty());
}

TEST(GrammarLimits, ARecursiveSchemaWithOneBranchStillCompiles) {
  // A linked list: one reference per level, cut at the depth bound as before.
  const ojson schema = ojson::parse(R"({"type": "object", "properties": {"v": {"type": "integer"},
                                        "next": {"anyOf": [{"type": "null"}, {"$ref": "#"}]}}})");
  JsonAcceptor a(schema);
  EXPECT_TRUE(a.feed(R"({"v": 1, "next": {"v": 2, "next": null}})") && a.complete());
}

}  // namespace
}  // namespace strata
