// gpt-oss's harmony format: the built-in prompt, and the parse of generated text into thinking,
// content and tool calls, whole and streamed piece by piece (as the tokens of a reply arrive).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "runtime/chat_format.h"

namespace strata {
namespace {

TEST(Harmony, PromptOpensTheAssistantTurn) {
  const std::string p = render_chat(ChatFormat::harmony, {{"system", "Be brief."}, {"user", "Hi"}}, "");
  EXPECT_EQ(p.rfind("<|start|>system<|message|>", 0), 0u);
  EXPECT_NE(p.find("<|start|>developer<|message|># Instructions\n\nBe brief.<|end|>"), std::string::npos);
  EXPECT_NE(p.find("<|start|>user<|message|>Hi<|end|>"), std::string::npos);
  EXPECT_TRUE(p.ends_with("<|end|><|start|>assistant"));
  EXPECT_EQ(chat_stop_strings(ChatFormat::harmony), (std::vector<std::string>{"<|return|>", "<|call|>"}));
}

TEST(Harmony, AnalysisIsThinkingFinalIsContent) {
  const HarmonyReply r = parse_harmony(
      "<|channel|>analysis<|message|>User says hi. Reply.<|end|><|start|>assistant<|channel|>final<|message|>Hello!"
      "<|return|>");
  EXPECT_EQ(r.thinking, "User says hi. Reply.");
  EXPECT_EQ(r.content, "Hello!");
  EXPECT_TRUE(r.tool_calls.empty());
}

TEST(Harmony, ToolCallsInTheChannelOrTheRoleHeader) {
  const HarmonyReply a = parse_harmony(
      "<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary "
      "to=functions.get_weather <|constrain|>json<|message|>{\"city\":\"Paris\"}<|call|>");
  EXPECT_EQ(a.thinking, "Need weather.");
  EXPECT_EQ(a.content, "");
  ASSERT_EQ(a.tool_calls.size(), 1u);
  EXPECT_EQ(a.tool_calls[0].name, "get_weather");
  EXPECT_EQ(a.tool_calls[0].arguments, "{\"city\":\"Paris\"}");

  const HarmonyReply b = parse_harmony(" to=functions.lookup<|channel|>commentary json<|message|>{\"q\": 1}<|call|>");
  ASSERT_EQ(b.tool_calls.size(), 1u);
  EXPECT_EQ(b.tool_calls[0].name, "lookup");
  EXPECT_EQ(b.tool_calls[0].arguments, "{\"q\": 1}");
}

TEST(Harmony, PreambleIsContentAndBuiltinToolsAreLeftOut) {
  const HarmonyReply r = parse_harmony(
      "<|channel|>commentary<|message|>Let me check.<|end|><|start|>assistant<|channel|>analysis "
      "to=browser.search<|message|>{\"query\":\"x\"}<|call|>");
  EXPECT_EQ(r.content, "Let me check.");
  EXPECT_EQ(r.thinking, "");
  EXPECT_TRUE(r.tool_calls.empty());
}

TEST(Harmony, TextWithoutMarkersIsContent) {
  EXPECT_EQ(parse_harmony("just text").content, "just text");
  EXPECT_EQ(parse_harmony("").content, "");
  // An unfinished final message (generation stopped by the token limit) keeps what it has.
  EXPECT_EQ(parse_harmony("<|channel|>final<|message|>Hel").content, "Hel");
}

// Streaming one character at a time gives, concatenated, exactly the whole parse; no marker text
// ever leaks into a delta.
TEST(Harmony, StreamedDeltasAddUpToTheWholeParse) {
  const std::string text =
      "<|channel|>analysis<|message|>a < b, so <|end|><|start|>assistant<|channel|>final<|message|>x<y "
      "and <|im not a marker|> done<|return|>";
  HarmonyStream stream;
  std::string thinking, content;
  for (char ch : text) {
    const HarmonyStream::Delta d = stream.feed(std::string(1, ch));
    EXPECT_EQ(d.thinking.find("<|"), std::string::npos) << d.thinking;
    EXPECT_EQ(d.content.find("<|end"), std::string::npos) << d.content;
    thinking += d.thinking;
    content += d.content;
  }
  const HarmonyReply whole = stream.finish();
  EXPECT_EQ(whole.thinking, "a < b, so ");
  EXPECT_EQ(whole.content, "x<y and <|im not a marker|> done");
  EXPECT_EQ(thinking, whole.thinking);
  EXPECT_EQ(content, whole.content);
}

}  // namespace
}  // namespace strata
