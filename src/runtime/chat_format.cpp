#include "runtime/chat_format.h"

#include <algorithm>
#include <utility>

#include "gguf/gguf.h"

namespace strata {

ChatFormat detect_chat_format(const gguf::File& file) {
  const std::string t = file.get_string("tokenizer.chat_template", "");
  const std::string arch = file.architecture();
  auto has = [&](const char* s) { return t.find(s) != std::string::npos; };
  if (has("<|channel|>") || arch == "gpt-oss") return ChatFormat::harmony;
  if (has("<|im_start|>")) return ChatFormat::chatml;
  if (has("<start_of_turn>") || arch.rfind("gemma", 0) == 0) return ChatFormat::gemma;
  if (has("<|start_header_id|>")) return ChatFormat::llama3;
  if (has("[INST]")) return ChatFormat::mistral;
  if (has("<|user|>")) return ChatFormat::zephyr;
  return ChatFormat::chatml;
}

const char* chat_format_name(ChatFormat f) {
  switch (f) {
    case ChatFormat::chatml: return "chatml";
    case ChatFormat::gemma: return "gemma";
    case ChatFormat::llama3: return "llama3";
    case ChatFormat::mistral: return "mistral";
    case ChatFormat::zephyr: return "zephyr";
    case ChatFormat::harmony: return "harmony";
  }
  return "chatml";
}

std::string render_chat(ChatFormat f, const std::vector<ChatMessage>& messages, const std::string& bos) {
  std::string out;
  switch (f) {
    case ChatFormat::chatml:
      for (const auto& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      out += "<|im_start|>assistant\n";
      break;
    case ChatFormat::gemma: {
      // Gemma has no system role: the system text opens the first user turn.
      out += bos;
      std::string system;
      for (const auto& m : messages) {
        if (m.role == "system") {
          system += m.content + "\n\n";
          continue;
        }
        const std::string role = m.role == "assistant" ? "model" : "user";
        out += "<start_of_turn>" + role + "\n" + (role == "user" ? std::exchange(system, {}) : "") + m.content +
               "<end_of_turn>\n";
      }
      out += "<start_of_turn>model\n";
      break;
    }
    case ChatFormat::llama3:
      out += bos;
      for (const auto& m : messages)
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + m.content + "<|eot_id|>";
      out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
    case ChatFormat::mistral: {
      out += bos;
      std::string system;
      for (const auto& m : messages) {
        if (m.role == "system") system += m.content + "\n\n";
        else if (m.role == "user") out += "[INST] " + std::exchange(system, {}) + m.content + " [/INST]";
        else out += " " + m.content + "</s>";
      }
      break;
    }
    case ChatFormat::zephyr:
      for (const auto& m : messages) out += "<|" + m.role + "|>\n" + m.content + "</s>\n";
      out += "<|assistant|>\n";
      break;
    case ChatFormat::harmony:
      // The gpt-oss template's system header (no date, default reasoning effort); system messages
      // become developer instructions; earlier assistant turns keep only their final channel.
      out += "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
             "Knowledge cutoff: 2024-06\n\nReasoning: medium\n\n# Valid channels: analysis, commentary, final. "
             "Channel must be included for every message.<|end|>";
      for (const auto& m : messages) {
        if (m.role == "system") out += "<|start|>developer<|message|># Instructions\n\n" + m.content + "<|end|>";
        else if (m.role == "assistant") out += "<|start|>assistant<|channel|>final<|message|>" + m.content + "<|end|>";
        else out += "<|start|>" + m.role + "<|message|>" + m.content + "<|end|>";
      }
      out += "<|start|>assistant";
      break;
  }
  return out;
}

std::vector<std::string> chat_stop_strings(ChatFormat f) {
  switch (f) {
    case ChatFormat::chatml: return {"<|im_end|>", "<|im_start|>"};
    case ChatFormat::gemma: return {"<end_of_turn>", "<start_of_turn>"};
    case ChatFormat::llama3: return {"<|eot_id|>"};
    case ChatFormat::mistral: return {"[INST]"};
    case ChatFormat::zephyr: return {"</s>", "<|user|>"};
    case ChatFormat::harmony: return {"<|return|>", "<|call|>"};  // <|end|> only ends one message
  }
  return {};
}

// --- harmony

namespace {

constexpr std::string_view kStart = "<|start|>", kChannel = "<|channel|>", kMessage = "<|message|>",
                           kConstrain = "<|constrain|>";
constexpr std::string_view kEnds[] = {"<|end|>", "<|return|>", "<|call|>"};

// The first end marker at or after `from`: its position (npos if none) and length.
size_t find_end(std::string_view text, size_t from, size_t& len) {
  size_t best = std::string_view::npos;
  for (std::string_view e : kEnds) {
    const size_t at = text.find(e, from);
    if (at < best) best = at, len = e.size();
  }
  return best;
}

// How many trailing bytes of `body` could begin a marker ("<", "<|", "<|re" ...): held back while
// streaming.
size_t marker_prefix(std::string_view body) {
  const size_t lt = body.rfind('<');
  if (lt == std::string_view::npos) return 0;
  const std::string_view tail = body.substr(lt);
  if (tail.find('>') != std::string_view::npos) return 0;
  for (std::string_view m : {kStart, kChannel, kMessage, kConstrain, kEnds[0], kEnds[1], kEnds[2]})
    if (m.substr(0, tail.size()) == tail) return tail.size();
  return 0;
}

// " to=NAME" in a header: NAME up to a space or a marker.
std::string recipient(std::string_view header) {
  const size_t at = header.find(" to=");
  if (at == std::string_view::npos) return {};
  std::string_view r = header.substr(at + 4);
  r = r.substr(0, std::min(r.find(' '), r.find('<')));
  return std::string(r);
}

}  // namespace

HarmonyReply parse_harmony(std::string_view text, bool partial) {
  HarmonyReply reply;
  size_t pos = 0;
  while (pos < text.size()) {
    // A message: its header runs to <|message|>; "<|start|>" and the role name are optional.
    const size_t first = pos;
    if (text.substr(pos, kStart.size()) == kStart) pos += kStart.size();
    const size_t msg = text.find(kMessage, pos);
    if (msg == std::string_view::npos) {
      // No header end: the rest is a header still being generated, or (a reply with no marker at
      // all) plain text, taken as content.
      std::string_view rest = text.substr(pos);
      if (first == 0 && pos == 0 && rest.find("<|") == std::string_view::npos) {
        if (partial) rest.remove_suffix(marker_prefix(rest));
        reply.content += rest;
      }
      break;
    }
    const std::string_view header = text.substr(pos, msg - pos);
    std::string channel;
    if (const size_t c = header.find(kChannel); c != std::string_view::npos) {
      std::string_view name = header.substr(c + kChannel.size());
      channel = std::string(name.substr(0, std::min(name.find(' '), name.find('<'))));
    }
    const std::string to = recipient(header);
    const size_t body_at = msg + kMessage.size();
    size_t end_len = 0;
    const size_t end = find_end(text, body_at, end_len);
    const bool finished = end != std::string_view::npos;
    std::string_view body = text.substr(body_at, finished ? end - body_at : std::string_view::npos);
    if (!finished && partial) body.remove_suffix(marker_prefix(body));
    if (to.rfind("functions.", 0) == 0) {
      if (finished || !partial) reply.tool_calls.push_back({to.substr(10), std::string(body)});
    } else if (!to.empty()) {
      // A built-in tool (browser, python) that this server does not run: left out, as llama.cpp does.
    } else if (channel == "analysis") {
      reply.thinking += body;
    } else {
      reply.content += body;
    }
    if (!finished) break;
    pos = end + end_len;
  }
  return reply;
}

HarmonyStream::Delta HarmonyStream::feed(std::string_view piece) {
  text_ += piece;
  const HarmonyReply r = parse_harmony(text_, true);
  Delta d;
  // Both only grow: a held-back marker prefix is sent once it proves to be text.
  if (r.thinking.size() > thinking_sent_) d.thinking = r.thinking.substr(thinking_sent_);
  if (r.content.size() > content_sent_) d.content = r.content.substr(content_sent_);
  thinking_sent_ = std::max(thinking_sent_, r.thinking.size());
  content_sent_ = std::max(content_sent_, r.content.size());
  return d;
}

}  // namespace strata
