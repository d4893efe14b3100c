// gpt-oss's harmony format: the built-in prompt, and the parse of generated text into thinking,
// content and tool calls, whole and streamed piece by piece (as the tokens of a reply arrive);
// and the same split of a reply whose reasoning is between <think> tags (Qwen3).
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "runtime/chat_format.h"

namespace strata {
namespace {

struct HarmonyMessage {
  std::string header;  // after <|channel|>: the channel, and a recipient and constraint if any
  std::string body;
};
// A reply as gpt-oss generates it (the prompt ends with the first message's "<|start|>assistant"):
// each message "<|channel|>" header "<|message|>" body, closed by <|end|> and the next one's
// "<|start|>assistant", the last one by `last_end` (<|return|>, <|call|>, or nothing).
std::string harmony_reply(const std::vector<HarmonyMessage>& messages, const std::string& last_end) {
  std::string out;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (i > 0) out += "<|end|><|start|>assistant";
    out += "<|channel|>" + messages[i].header + "<|message|>" + messages[i].body;
  }
  return out + last_end;
}

TEST(Harmony, PromptOpensTheAssistantTurn) {
  const std::string p = render_chat(ChatFormat::harmony, {{"system", "Be brief."}, {"user", "Hi"}}, "");
  EXPECT_EQ(p.rfind("<|start|>system<|message|>", 0), 0u);
  EXPECT_NE(p.find("<|start|>developer<|message|># Instructions\n\nBe brief.<|end|>"), std::string::npos);
  EXPECT_NE(p.find("<|start|>user<|message|>Hi<|end|>"), std::string::npos);
  EXPECT_TRUE(p.ends_with("<|end|><|start|>assistant"));
  EXPECT_EQ(chat_stop_strings(ChatFormat::harmony), (std::vector<std::string>{"<|return|>", "<|call|>"}));
}

TEST(Harmony, ReasoningEffortInTheSystemHeader) {
  EXPECT_NE(render_chat(ChatFormat::harmony, {{"user", "Hi"}}, "").find("\nReasoning: medium\n"), std::string::npos);
  EXPECT_NE(render_chat(ChatFormat::harmony, {{"user", "Hi"}}, "", "low").find("\nReasoning: low\n"),
            std::string::npos);
}

TEST(Harmony, AnalysisIsThinkingFinalIsContent) {
  const HarmonyReply r =
      parse_harmony(harmony_reply({{"analysis", "User says hi. Reply."}, {"final", "Hello!"}}, "<|return|>"));
  EXPECT_EQ(r.thinking, "User says hi. Reply.");
  EXPECT_EQ(r.content, "Hello!");
  EXPECT_TRUE(r.tool_calls.empty());
}

TEST(Harmony, ToolCallsInTheChannelOrTheRoleHeader) {
  const HarmonyReply a = parse_harmony(harmony_reply(
      {{"analysis", "Need weather."}, {"commentary to=functions.get_weather <|constrain|>json", "{\"city\":\"Paris\"}"}},
      "<|call|>"));
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
      harmony_reply({{"commentary", "Let me check."}, {"analysis to=browser.search", "{\"query\":\"x\"}"}}, "<|call|>"));
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
      harmony_reply({{"analysis", "a < b, so "}, {"final", "x<y and <|im not a marker|> done"}}, "<|return|>");
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

// Fed in pieces of every size, the stream gives the same deltas (concatenated) and the same calls
// as one parse of the whole text; a tool call split across pieces is taken whole.
TEST(Harmony, AnySplitGivesTheWholeParse) {
  const std::string text = harmony_reply({{"analysis", "Need the weather."},
                                          {"commentary", "Checking <now>."},
                                          {"commentary to=functions.get_weather <|constrain|>json", "{\"city\": \"Paris\"}"}},
                                         "<|call|>");
  const HarmonyReply whole = parse_harmony(text);
  EXPECT_EQ(whole.thinking, "Need the weather.");
  EXPECT_EQ(whole.content, "Checking <now>.");
  ASSERT_EQ(whole.tool_calls.size(), 1u);
  EXPECT_EQ(whole.tool_calls[0].name, "get_weather");
  EXPECT_EQ(whole.tool_calls[0].arguments, "{\"city\": \"Paris\"}");
  for (size_t n = 1; n <= text.size(); ++n) {
    HarmonyStream stream;
    std::string thinking, content;
    for (size_t at = 0; at < text.size(); at += n) {
      const HarmonyStream::Delta d = stream.feed(std::string_view(text).substr(at, n));
      thinking += d.thinking;
      content += d.content;
    }
    const HarmonyReply r = stream.finish();
    EXPECT_EQ(thinking, whole.thinking) << "pieces of " << n;
    EXPECT_EQ(content, whole.content) << "pieces of " << n;
    ASSERT_EQ(r.tool_calls.size(), 1u) << "pieces of " << n;
    EXPECT_EQ(r.tool_calls[0].arguments, whole.tool_calls[0].arguments);
  }
}

// A call cut off by its end token (<|call|> ends generation, so its text never arrives) is taken
// at the end; while streaming it is not given out, neither as content nor as a call.
TEST(Harmony, CallEndedByTheStopTokenIsTakenAtTheEnd) {
  HarmonyStream stream;
  const HarmonyStream::Delta d =
      stream.feed("<|channel|>commentary to=functions.f <|constrain|>json<|message|>{\"a\":1}");
  EXPECT_EQ(d.content, "");
  EXPECT_TRUE(stream.reply().tool_calls.empty());
  const HarmonyReply r = stream.finish();
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_EQ(r.tool_calls[0].name, "f");
  EXPECT_EQ(r.tool_calls[0].arguments, "{\"a\":1}");
}

// A held-back tail that could have begun a marker is content once the reply ends.
TEST(Harmony, HeldBackTailIsGivenAtTheEnd) {
  HarmonyStream stream;
  EXPECT_EQ(stream.feed("<|channel|>final<|message|>1 <").content, "1 ");
  EXPECT_EQ(stream.feed("|re").content, "");
  EXPECT_EQ(stream.finish().content, "1 <|re");
  // Text before any marker may be the start of a first message's header ("\n<|channel|>..."):
  // content only once the reply has ended without markers.
  HarmonyStream plain;
  EXPECT_EQ(plain.feed("a <").content, "");
  EXPECT_EQ(plain.finish().content, "a <");
  HarmonyStream header;
  EXPECT_EQ(header.feed("\n \"").content, "");
  header.feed("<|channel|>final<|message|>x");
  EXPECT_EQ(header.finish().content, "x");
}

// --- <think> tags, split as Ollama's thinking parser splits them (thinking/parser.go)

// Every way of cutting `text` into pieces gives the same thinking and content, fed out as
// deltas that add up to finish()'s reply.
SplitReply split_every_way(const std::string& text, bool inside) {
  ThinkTagStream whole_stream(inside);
  whole_stream.feed(text);
  const SplitReply whole = whole_stream.finish();
  for (size_t n = 1; n <= text.size(); ++n) {
    ThinkTagStream stream(inside);
    std::string thinking, content;
    for (size_t at = 0; at < text.size(); at += n) {
      const ReplyStream::Delta d = stream.feed(std::string_view(text).substr(at, n));
      thinking += d.thinking;
      content += d.content;
    }
    const size_t t = stream.reply().thinking.size(), c = stream.reply().content.size();
    const SplitReply r = stream.finish();
    thinking += r.thinking.substr(t);
    content += r.content.substr(c);
    EXPECT_EQ(thinking, whole.thinking) << "pieces of " << n << " of " << text;
    EXPECT_EQ(content, whole.content) << "pieces of " << n << " of " << text;
    EXPECT_EQ(r.thinking, thinking);
    EXPECT_EQ(r.content, content);
  }
  return whole;
}

TEST(ThinkTags, ReasoningBetweenTheTagsAndTheAnswerAfter) {
  const SplitReply r = split_every_way("\n<think>\nThe user greets.\n</think>\n\nHello!", false);
  EXPECT_EQ(r.thinking, "The user greets.\n");  // white space after the tags goes, before the closing one stays
  EXPECT_EQ(r.content, "Hello!");
  EXPECT_TRUE(r.tool_calls.empty());
}

TEST(ThinkTags, APromptThatOpenedTheTagStartsInside) {
  const SplitReply r = split_every_way("  Short.</think>Answer <think>not again</think>", true);
  EXPECT_EQ(r.thinking, "Short.");
  EXPECT_EQ(r.content, "Answer <think>not again</think>");  // only the first block is reasoning
}

TEST(ThinkTags, AReplyThatDoesNotOpenWithTheTagIsContent) {
  const SplitReply r = split_every_way(" Hi <think>x</think>", false);
  EXPECT_EQ(r.thinking, "");
  EXPECT_EQ(r.content, " Hi <think>x</think>");
}

TEST(ThinkTags, UnfinishedPiecesAreGivenAtTheEnd) {
  // Reasoning cut off (by the length limit) before its closing tag is thinking; a tail that may
  // begin the closing tag is held while streaming and given at the end.
  ThinkTagStream cut;
  EXPECT_EQ(cut.feed("<think>step 1 </th").thinking, "step 1 ");
  EXPECT_EQ(cut.finish().thinking, "step 1 </th");
  // A reply that is only the start of the opening tag, or only white space, is content.
  ThinkTagStream partial;
  EXPECT_EQ(partial.feed("\n<thi").content, "");
  EXPECT_EQ(partial.finish().content, "\n<thi");
  EXPECT_EQ(split_every_way("<think>a</think>", false).content, "");
  EXPECT_EQ(split_every_way(" \n", false).content, " \n");
}

TEST(ThinkTags, BothSplittersShareOneInterface) {
  std::vector<std::unique_ptr<ReplyStream>> splitters;
  splitters.push_back(std::make_unique<HarmonyStream>());
  splitters.push_back(std::make_unique<ThinkTagStream>());
  const std::string texts[] = {
      "<|channel|>analysis<|message|>why<|end|><|start|>assistant<|channel|>final<|message|>so",
      "<think>why</think>so"};
  for (size_t i = 0; i < 2; ++i) {
    for (char ch : texts[i]) splitters[i]->feed(std::string(1, ch));
    const SplitReply r = splitters[i]->finish();
    EXPECT_EQ(r.thinking, "why") << i;
    EXPECT_EQ(r.content, "so") << i;
  }
}

}  // namespace
}  // namespace strata
