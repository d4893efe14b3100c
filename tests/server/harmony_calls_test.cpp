// gpt-oss's tool calls (harmony, runtime/chat_format.h) in the server's native shape.
#include <gtest/gtest.h>

#include "server/completion.h"

namespace strata::server {
namespace {

TEST(HarmonyCalls, ArgumentsObjectsBecomeNativeCalls) {
  json native = json::array();
  std::string content = "Checking.";
  add_harmony_calls({{"get_weather", "{\"city\": \"Paris\"}"}, {"now", "{}"}}, native, content);
  EXPECT_EQ(native, json::parse(R"([{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                                     {"function": {"name": "now", "arguments": {}}}])"));
  EXPECT_EQ(content, "Checking.");
}

TEST(HarmonyCalls, ArgumentsThatAreNotAnObjectStayText) {
  json native = json::array();
  std::string content;
  add_harmony_calls({{"f", "[1, 2"}, {"g", "3"}}, native, content);
  EXPECT_TRUE(native.empty());
  EXPECT_EQ(content, "[1, 23");
}

}  // namespace
}  // namespace strata::server
