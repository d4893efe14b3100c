// tool_choice as every API translates it (server/completion.h set_tool_choice): "none" drops the
// tools; "required" and a named tool make the answer a JSON call that the grammar holds to one of
// the tools and to that tool's own parameters; top_logprobs bounds (set_logprobs).
#include <gtest/gtest.h>

#include <string>

#include "server/completion.h"
#include "server/errors.h"
#include "server/limits.h"

namespace strata::server {
namespace {

json tool(const std::string& name, const std::string& param) {
  json parameters = {{"type", "object"}};
  parameters["properties"][param] = {{"type", "string"}};
  parameters["required"] = json::array({param});
  json function = {{"name", name}, {"parameters", parameters}};
  return {{"type", "function"}, {"function", function}};
}

CompletionRequest with_tools() {
  CompletionRequest r;
  r.tools = json::array({tool("get_weather", "city"), tool("get_time", "zone")});
  return r;
}

// Whether some alternative of the request's grammar takes the whole text as a complete value.
bool accepted(const CompletionRequest& r, const std::string& text) {
  for (JsonAcceptor a : r.format)
    if (a.feed(text) && a.complete()) return true;
  return false;
}

int status_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const HttpError& e) {
    return e.status();
  }
  return 0;
}

TEST(ToolChoice, NoneDropsTheToolsAndAutoKeepsThem) {
  CompletionRequest r = with_tools();
  set_tool_choice(r, ToolChoice::automatic);
  EXPECT_EQ(r.tools.size(), 2u);
  EXPECT_TRUE(r.format.empty());
  set_tool_choice(r, ToolChoice::none);
  EXPECT_TRUE(r.tools.is_null());
  EXPECT_FALSE(r.forced_tool_call);
}

TEST(ToolChoice, NamedToolIsTheOnlyCallTheGrammarAllows) {
  CompletionRequest r = with_tools();
  set_tool_choice(r, ToolChoice::named, "get_time");
  EXPECT_TRUE(r.forced_tool_call);
  ASSERT_EQ(r.tools.size(), 1u);
  EXPECT_EQ(r.tools[0]["function"]["name"], "get_time");
  EXPECT_TRUE(accepted(r, R"({"name": "get_time", "arguments": {"zone": "CET"}})"));
  EXPECT_FALSE(accepted(r, R"({"name": "get_weather", "arguments": {"city": "Paris"}})"));
  EXPECT_FALSE(accepted(r, R"({"name": "get_time", "arguments": {"city": "Paris"}})"));
  EXPECT_FALSE(accepted(r, "The time is"));
  // Parsed back as the call it is.
  const ToolCalls calls = parse_tool_calls(R"({"name": "get_time", "arguments": {"zone": "CET"}})");
  ASSERT_EQ(calls.calls.size(), 1u);
  EXPECT_EQ(calls.calls[0]["function"]["arguments"]["zone"], "CET");
}

TEST(ToolChoice, RequiredTiesEachNameToItsOwnParameters) {
  CompletionRequest r = with_tools();
  set_tool_choice(r, ToolChoice::required);
  ASSERT_EQ(r.format.size(), 2u);
  EXPECT_TRUE(accepted(r, R"({"name": "get_weather", "arguments": {"city": "Paris"}})"));
  EXPECT_TRUE(accepted(r, R"({"name": "get_time", "arguments": {"zone": "CET"}})"));
  EXPECT_FALSE(accepted(r, R"({"name": "get_weather", "arguments": {"zone": "CET"}})"));
  EXPECT_FALSE(accepted(r, R"({"name": "get_news", "arguments": {}})"));
}

TEST(ToolChoice, ClearErrors) {
  CompletionRequest r = with_tools();
  EXPECT_EQ(status_of([&] { set_tool_choice(r, ToolChoice::named, "nope"); }), 400);
  CompletionRequest empty;
  EXPECT_EQ(status_of([&] { set_tool_choice(empty, ToolChoice::required); }), 400);
  CompletionRequest formatted = with_tools();
  set_json_format(formatted, nullptr);
  EXPECT_EQ(status_of([&] { set_tool_choice(formatted, ToolChoice::required); }), 400);
  CompletionRequest many;
  many.tools = json::array();
  for (size_t i = 0; i <= limits::kMaxForcedTools; ++i) many.tools.push_back(tool("t" + std::to_string(i), "x"));
  EXPECT_EQ(status_of([&] { set_tool_choice(many, ToolChoice::required); }), 400);
  CompletionRequest unsupported;
  json bad = tool("f", "x");
  bad["function"]["parameters"]["not"] = json::object();  // a keyword the grammar cannot follow
  unsupported.tools = json::array({bad});
  EXPECT_EQ(status_of([&] { set_tool_choice(unsupported, ToolChoice::required); }), 400);
}

TEST(Logprobs, TopLogprobsWithinTheLimit) {
  CompletionRequest r;
  set_logprobs(r, false, std::nullopt);
  EXPECT_EQ(r.gen.n_top_logprobs, -1);
  set_logprobs(r, true, std::nullopt);
  EXPECT_EQ(r.gen.n_top_logprobs, 0);
  set_logprobs(r, true, GenerateParams::kMaxTopLogprobs);
  EXPECT_EQ(r.gen.n_top_logprobs, GenerateParams::kMaxTopLogprobs);
  EXPECT_EQ(status_of([&] { set_logprobs(r, true, GenerateParams::kMaxTopLogprobs + 1); }), 400);
  EXPECT_EQ(status_of([&] { set_logprobs(r, true, -1); }), 400);
}

TEST(PartialForcedCall, NameAndTheArgumentsSoFar) {
  auto cut = partial_forced_call("{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Pa");
  ASSERT_TRUE(cut);
  EXPECT_EQ(cut->name, "get_weather");
  EXPECT_EQ(cut->arguments, "{\"city\": \"Pa");
  // Members in either order, strings holding the characters that end values.
  cut = partial_forced_call(" {\"arguments\": {\"q\": \"a, } \\\" b\"}, \"name\": \"find\"  ");
  ASSERT_TRUE(cut);
  EXPECT_EQ(cut->name, "find");
  EXPECT_EQ(cut->arguments, "{\"q\": \"a, } \\\" b\"}");
  cut = partial_forced_call("{\"name\": \"get_time\",");
  ASSERT_TRUE(cut);
  EXPECT_EQ(cut->arguments, "");
  // No call to read: the name cut off, or not a call at all.
  EXPECT_FALSE(partial_forced_call("{\"name\": \"get_wea"));
  EXPECT_FALSE(partial_forced_call("{\"arguments\": {\"city\": 1}"));
  EXPECT_FALSE(partial_forced_call("Sure, the weather"));
  EXPECT_FALSE(partial_forced_call("{\"name\": 5, \"arguments\": {}"));
}

}  // namespace
}  // namespace strata::server
