#include "runtime/grammar.h"

#include <gtest/gtest.h>

#include <string>

#include "runtime/grammar_regex.h"
#include "util/error.h"

namespace strata {
namespace {

using ojson = nlohmann::ordered_json;

// Whether the acceptor takes all of text and is then complete.
bool accepts(const ojson& schema, const std::string& text) {
  JsonAcceptor a(schema);
  return a.feed(text) && a.complete();
}

// Whether the acceptor takes text as the start of a value (maybe not complete).
bool takes_prefix(const ojson& schema, const std::string& text) {
  JsonAcceptor a(schema);
  return a.feed(text);
}

// The error a schema is refused with ("" when it compiles).
std::string refusal(const ojson& schema) {
  try {
    JsonAcceptor a(schema);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

ojson field(const ojson& value_schema) { return {{"type", "object"}, {"properties", {{"v", value_schema}}}}; }

std::string with(const std::string& value) { return "{\"v\": " + value + "}"; }

// --- regular expressions

bool full_match(const std::string& pattern, const std::string& s) {
  const Regex rx(pattern);
  auto set = rx.initial();
  for (char c : s)
    if (!rx.step(set, uint8_t(c))) return false;
  return rx.accepts(set, s.empty());
}

TEST(Regex, AnchoredPatterns) {
  EXPECT_TRUE(full_match("^[a-z]+$", "hello"));
  EXPECT_FALSE(full_match("^[a-z]+$", "Hello"));
  EXPECT_FALSE(full_match("^[a-z]+$", ""));
  EXPECT_TRUE(full_match(R"(^\d{3}-\d{4}$)", "555-1234"));
  EXPECT_FALSE(full_match(R"(^\d{3}-\d{4}$)", "555-12345"));
  EXPECT_TRUE(full_match("^(cat|dog)s?$", "dogs"));
  EXPECT_FALSE(full_match("^(cat|dog)s?$", "cow"));
  EXPECT_TRUE(full_match("^a{2,3}$", "aaa"));
  EXPECT_FALSE(full_match("^a{2,3}$", "aaaa"));
  EXPECT_TRUE(full_match("^[^0-9]*$", "no digits"));
  EXPECT_FALSE(full_match("^[^0-9]*$", "d1git"));
  EXPECT_TRUE(full_match(R"(^\w+@\w+\.com$)", "me@host.com"));
  EXPECT_TRUE(full_match("^(?:ab)+$", "abab"));
  EXPECT_TRUE(full_match("^caf\xc3\xa9+$", "caf\xc3\xa9\xc3\xa9"));  // a UTF-8 character repeats whole
  EXPECT_TRUE(full_match("^x{2}{$", "xx{"));                         // a '{' that is no quantifier
}

TEST(Regex, UnanchoredPatternsSearch) {
  EXPECT_TRUE(full_match("b+", "abbbc"));
  EXPECT_FALSE(full_match("b+", "ac"));
  EXPECT_TRUE(full_match("^ab", "abc"));
  EXPECT_FALSE(full_match("^ab", "cab"));
  EXPECT_TRUE(full_match("z$", "xyz"));
  EXPECT_FALSE(full_match("z$", "zx"));
}

TEST(Regex, StepRejectsDeadPrefixes) {
  const Regex rx("^[0-9]{2}$");
  auto set = rx.initial();
  EXPECT_TRUE(rx.step(set, '4'));
  EXPECT_TRUE(rx.step(set, '2'));
  EXPECT_FALSE(rx.step(set, '0'));  // a third digit can never match
  auto letters = rx.initial();
  EXPECT_FALSE(rx.step(letters, 'a'));
}

TEST(Regex, RefusesWhatNoAutomatonHas) {
  for (const char* p : {R"((a)\1)", "(?=a)b", "(?!a)b", "(?<=a)b", R"(\bword)", R"(\p{L})", "[\xc3\xa9]", "(ab", "a)",
                        "*a", "a{3,1}"}) {
    try {
      Regex rx(p);
      ADD_FAILURE() << "accepted " << p;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("pattern"), std::string::npos) << e.what();
    }
  }
}

// --- schemas

TEST(Grammar, PatternIsEnforcedOnStrings) {
  const ojson s = field({{"type", "string"}, {"pattern", "^[A-Z]{2}-[0-9]{3}$"}});
  EXPECT_TRUE(accepts(s, with("\"AB-123\"")));
  EXPECT_FALSE(takes_prefix(s, with("\"ab")));
  EXPECT_FALSE(accepts(s, with("\"AB-12\"")));  // the closing quote needs a match
  EXPECT_FALSE(takes_prefix(s, with("\"AB-1234")));
  // Escapes are decoded before the pattern sees them.
  const ojson quoted = field({{"type", "string"}, {"pattern", "^\"[a-z]+\"$"}});
  EXPECT_TRUE(accepts(quoted, with(R"("\"hi\"")")));
  EXPECT_TRUE(accepts(field({{"type", "string"}, {"pattern", "^a\tb$"}}), with(R"("a\tb")")));
  EXPECT_TRUE(accepts(field({{"type", "string"}, {"pattern", "^ab$"}}), with(R"("a\u0062")")));
  // A \u escape is cut off at the first digit that cannot lead to a byte the pattern takes.
  EXPECT_FALSE(takes_prefix(field({{"type", "string"}, {"pattern", "^a+$"}}),
                            "{\"v\": "
                            R"("\u03)"));
  EXPECT_FALSE(takes_prefix(field({{"type", "string"}, {"pattern", "^a+$"}}),
                            "{\"v\": "
                            R"("\u007)"));
  EXPECT_TRUE(takes_prefix(field({{"type", "string"}, {"pattern", "^a+$"}}),
                           "{\"v\": "
                           R"("\u006)"));
  EXPECT_FALSE(takes_prefix(field({{"type", "string"}, {"pattern", "^a$"}}),
                            "{\"v\": "
                            R"("a\u0)"));
}

TEST(Grammar, FormatsWithAPattern) {
  const ojson date = field({{"type", "string"}, {"format", "date"}});
  EXPECT_TRUE(accepts(date, with("\"2024-02-29\"")));
  EXPECT_FALSE(takes_prefix(date, with("\"2024-13")));
  const ojson uuid = field({{"type", "string"}, {"format", "uuid"}});
  EXPECT_TRUE(accepts(uuid, with("\"123e4567-e89b-12d3-a456-426614174000\"")));
  EXPECT_FALSE(takes_prefix(uuid, with("\"123g")));
  EXPECT_TRUE(accepts(field({{"type", "string"}, {"format", "some-annotation"}}), with("\"anything\"")));
}

// A "type" or "$ref" of the wrong JSON kind is refused with an error naming it, never a crash
// (the request fuzzer found {"type": {"enum": [...]}} escaping as a JSON library exception).
TEST(Grammar, MalformedTypeAndRefAreRefused) {
  EXPECT_NE(refusal(field({{"type", {{"enum", {"a", "b"}}}}})).find("\"type\" must be a string"), std::string::npos);
  EXPECT_NE(refusal(field({{"type", {"string", 3}}})).find("\"type\" must be a string"), std::string::npos);
  EXPECT_NE(refusal({{"allOf", {{{"$ref", 7}}}}}).find("\"$ref\" must be a string"), std::string::npos);
}

TEST(Grammar, StringLengths) {
  const ojson s = field({{"type", "string"}, {"minLength", 2}, {"maxLength", 3}});
  EXPECT_FALSE(accepts(s, with("\"a\"")));
  EXPECT_TRUE(accepts(s, with("\"ab\"")));
  EXPECT_TRUE(accepts(s, with("\"\xc3\xa9\xc3\xa9\xc3\xa9\"")));  // characters, not bytes
  EXPECT_FALSE(takes_prefix(s, with("\"abcd")));
}

TEST(Grammar, ArrayCounts) {
  const ojson s = field({{"type", "array"}, {"items", {{"type", "integer"}}}, {"minItems", 1}, {"maxItems", 2}});
  EXPECT_FALSE(accepts(s, with("[]")));
  EXPECT_TRUE(accepts(s, with("[1, 2]")));
  EXPECT_FALSE(takes_prefix(s, with("[1, 2,")));
  EXPECT_FALSE(takes_prefix(s, with("[1.5")));
}

TEST(Grammar, ObjectsEmitOnlyTheirProperties) {
  const ojson s = {{"type", "object"},
                   {"properties", {{"a", {{"type", "integer"}}}, {"b", {{"type", "boolean"}}}}},
                   {"additionalProperties", false}};
  EXPECT_TRUE(accepts(s, R"({"a": 1, "b": true})"));
  EXPECT_FALSE(takes_prefix(s, R"({"c")"));
  EXPECT_FALSE(takes_prefix(s, R"({"a": 1, "b": true,)"));
  EXPECT_TRUE(accepts({{"type", "object"}, {"additionalProperties", false}}, "{}"));
  EXPECT_FALSE(takes_prefix({{"type", "object"}, {"additionalProperties", false}}, "{\""));
  // A map: free keys, values by additionalProperties; counts by min/maxProperties.
  const ojson map = {
      {"type", "object"}, {"additionalProperties", {{"type", "integer"}}}, {"minProperties", 1}, {"maxProperties", 2}};
  EXPECT_TRUE(accepts(map, R"({"x": 1, "y": 2})"));
  EXPECT_FALSE(takes_prefix(map, R"({"x": "s")"));
  EXPECT_FALSE(accepts(map, "{}"));
  EXPECT_FALSE(takes_prefix(map, R"({"x": 1, "y": 2,)"));
}

TEST(Grammar, EnumConstAndIntegers) {
  EXPECT_TRUE(accepts(field({{"enum", {"red", "green"}}}), with("\"green\"")));
  EXPECT_FALSE(takes_prefix(field({{"enum", {"red", "green"}}}), with("\"blue")));
  EXPECT_TRUE(accepts(field({{"const", 42}}), with("42")));
  EXPECT_FALSE(takes_prefix(field({{"const", 42}}), with("43")));
  EXPECT_FALSE(takes_prefix(field({{"type", "integer"}}), with("1.")));
  EXPECT_FALSE(takes_prefix(field({{"type", "integer"}}), with("1e")));
  EXPECT_TRUE(accepts(field({{"type", "number"}}), with("-1.5e3")));
}

TEST(Grammar, NumericBounds) {
  const ojson age = field({{"type", "integer"}, {"minimum", 18}, {"maximum", 99}});
  EXPECT_TRUE(accepts(age, with("18")));
  EXPECT_TRUE(accepts(age, with("99")));
  EXPECT_FALSE(takes_prefix(age, with("-")));
  EXPECT_FALSE(takes_prefix(age, with("0")));
  EXPECT_FALSE(takes_prefix(age, with("100")));
  EXPECT_FALSE(accepts(age, with("1}")));  // "1" could grow into 18..19, but may not end there
  EXPECT_TRUE(takes_prefix(age, "{\"v\": 1"));
  const ojson unit = field({{"type", "number"}, {"exclusiveMinimum", 0}, {"maximum", 1}});
  EXPECT_TRUE(accepts(unit, with("0.25")));
  EXPECT_TRUE(accepts(unit, with("1")));
  EXPECT_FALSE(accepts(unit, with("0")));
  EXPECT_FALSE(takes_prefix(unit, with("1.5")));
  EXPECT_FALSE(takes_prefix(unit, with("2")));
  EXPECT_FALSE(takes_prefix(unit, with("0.5e")));  // bounded numbers take no exponent
  const ojson even = field({{"type", "integer"}, {"multipleOf", 2}});
  EXPECT_TRUE(accepts(even, with("14")));
  EXPECT_FALSE(accepts(even, with("15")));
  const ojson cents = field({{"type", "number"}, {"multipleOf", 0.01}});
  EXPECT_TRUE(accepts(cents, with("3.25")));
  EXPECT_FALSE(takes_prefix(cents, with("3.251")));
}

TEST(Grammar, AllOfMergesAndRefsResolve) {
  const ojson s = {{"$defs", {{"Base", {{"type", "object"}, {"properties", {{"id", {{"type", "integer"}}}}}}}}},
                   {"allOf", {{{"$ref", "#/$defs/Base"}}, {{"properties", {{"name", {{"type", "string"}}}}}}}}};
  EXPECT_TRUE(accepts(s, R"({"id": 1, "name": "x"})"));
  EXPECT_EQ(refusal({{"$ref", "#/$defs/Missing"}}).find("unresolvable") != std::string::npos, true);
}

TEST(Grammar, RefusesKeywordsItCannotEnforce) {
  for (const char* key : {"not", "if", "contains", "patternProperties", "propertyNames", "prefixItems"}) {
    const std::string why = refusal(field({{key, ojson::object()}}));
    EXPECT_NE(why.find(std::string("\"") + key + "\""), std::string::npos) << key << ": " << why;
  }
  EXPECT_NE(refusal(field({{"type", "array"}, {"uniqueItems", true}})).find("uniqueItems"), std::string::npos);
  EXPECT_EQ(refusal(field({{"type", "array"}, {"uniqueItems", false}})), "");
  EXPECT_NE(refusal(field({{"type", "string"}, {"pattern", "(a)\\1"}})).find("backreferences"), std::string::npos);
  EXPECT_NE(refusal(field({{"type", "number"}, {"multipleOf", 0.3}})).find("multipleOf"), std::string::npos);
  EXPECT_NE(refusal(field({{"type", "integer"}, {"minimum", 5}, {"maximum", 4}})).find("minimum"), std::string::npos);
  EXPECT_NE(refusal(field({{"type", "string"}, {"minLength", 3}, {"maxLength", 2}})).find("maxLength"),
            std::string::npos);
}

}  // namespace
}  // namespace strata
