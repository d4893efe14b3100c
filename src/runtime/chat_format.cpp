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

std::string render_chat(ChatFormat f, const std::vector<ChatMessage>& messages, const std::string& bos,
                        std::string_view reasoning_effort) {
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
      // The gpt-oss template's system header (no date); system messages
      // become developer instructions; earlier assistant turns keep only their final channel.
      out += "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
             "Knowledge cutoff: 2024-06\n\nReasoning: ";
      out += reasoning_effort;
      out += "\n\n# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>";
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
// streaming. Only the last kLongestMarker bytes can.
constexpr size_t kLongestMarker = kConstrain.size();
size_t marker_prefix(std::string_view body) {
  const std::string_view tail_window = body.substr(body.size() - std::min(body.size(), kLongestMarker));
  const size_t lt = tail_window.rfind('<');
  if (lt == std::string_view::npos) return 0;
  const std::string_view tail = tail_window.substr(lt);
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
  HarmonyStream stream;
  stream.feed(text);
  return partial ? stream.reply() : stream.finish();
}

ReplyStream::Delta HarmonyStream::feed(std::string_view piece) {
  text_ += piece;
  return advance(/*at_end=*/false);
}

SplitReply HarmonyStream::finish() {
  advance(/*at_end=*/true);
  return reply_;
}

// Each byte of text_ is scanned a bounded number of times: headers from header_scanned_, bodies
// from emitted_ (the text before emitted_ holds no marker start: one is always held back).
ReplyStream::Delta HarmonyStream::advance(bool at_end) {
  Delta d;
  const std::string_view text = text_;
  auto emit = [&](size_t from, size_t to) {
    if (to <= from) return;
    const std::string_view s = text.substr(from, to - from);
    if (!recipient_.empty()) return;  // a call's arguments (taken whole at its end) or a built-in tool's
    std::string& all = channel_ == "analysis" ? reply_.thinking : reply_.content;
    std::string& delta = channel_ == "analysis" ? d.thinking : d.content;
    all += s;
    delta += s;
  };
  auto take_call = [&](size_t end) {
    if (recipient_.rfind("functions.", 0) == 0)
      reply_.tool_calls.push_back({recipient_.substr(10), std::string(text.substr(body_at_, end - body_at_))});
  };
  while (true) {
    if (body_at_ == std::string_view::npos) {
      // A message: its header runs to <|message|>; "<|start|>" and the role name are optional.
      const size_t from = std::max(pos_, header_scanned_ > kMessage.size() ? header_scanned_ - kMessage.size() : 0);
      const size_t msg = text.find(kMessage, from);
      if (msg == std::string_view::npos) {
        header_scanned_ = text.size();
        // A reply with no marker at all is plain text, taken as content once it has ended (until
        // then it may be the header of a first message: leading text before "<|channel|>").
        if (at_end && pos_ == 0 && text.find("<|") == std::string_view::npos) {
          channel_.clear();
          emit(emitted_, text.size());
          emitted_ = text.size();
        }
        return d;
      }
      const std::string_view header = text.substr(pos_, msg - pos_);
      channel_.clear();
      if (const size_t c = header.find(kChannel); c != std::string_view::npos) {
        const std::string_view name = header.substr(c + kChannel.size());
        channel_ = std::string(name.substr(0, std::min(name.find(' '), name.find('<'))));
      }
      recipient_ = recipient(header);
      body_at_ = emitted_ = msg + kMessage.size();
    }
    size_t end_len = 0;
    const size_t end = find_end(text, emitted_, end_len);
    if (end == std::string_view::npos) {
      const size_t upto = at_end ? text.size() : text.size() - marker_prefix(text.substr(emitted_));
      emit(emitted_, upto);
      emitted_ = upto;
      if (at_end && !call_taken_) {
        take_call(text.size());  // an unfinished call (generation stopped at <|call|>, a stop token)
        call_taken_ = true;
      }
      return d;
    }
    emit(emitted_, end);
    take_call(end);
    pos_ = header_scanned_ = emitted_ = end + end_len;
    body_at_ = std::string_view::npos;
    recipient_.clear();
  }
}

// --- <think> tags

namespace {
constexpr std::string_view kSpace = " \t\r\n";
// The longest end of `text` that begins `tag` (a tag that may be arriving).
size_t tag_prefix(std::string_view text, std::string_view tag) {
  for (size_t n = std::min(tag.size() - 1, text.size()); n > 0; --n)
    if (text.substr(text.size() - n) == tag.substr(0, n)) return n;
  return 0;
}
}  // namespace

ThinkTagStream::ThinkTagStream(bool inside, std::string_view open, std::string_view close)
    : open_(open), close_(close), state_(inside ? State::thinking : State::opening), eat_space_(inside) {}

ReplyStream::Delta ThinkTagStream::feed(std::string_view piece) {
  pending_ += piece;
  return advance(/*at_end=*/false);
}

SplitReply ThinkTagStream::finish() {
  advance(/*at_end=*/true);
  return reply_;
}

ReplyStream::Delta ThinkTagStream::advance(bool at_end) {
  Delta d;
  auto emit = [&](std::string& all, std::string& delta, size_t n) {
    all.append(pending_, 0, n);
    delta.append(pending_, 0, n);
    pending_.erase(0, n);
  };
  while (!pending_.empty()) {
    if (eat_space_) {
      pending_.erase(0, std::min(pending_.find_first_not_of(kSpace), pending_.size()));
      if (pending_.empty()) break;
      eat_space_ = false;
    }
    if (state_ == State::opening) {
      const size_t first = pending_.find_first_not_of(kSpace);
      const std::string_view rest = first == std::string::npos ? "" : std::string_view(pending_).substr(first);
      if (rest.substr(0, open_.size()) == open_) {
        pending_.erase(0, first + open_.size());
        state_ = State::thinking;
        eat_space_ = true;
        continue;
      }
      if (!at_end && open_.compare(0, rest.size(), rest) == 0) break;  // white space, or the tag arriving
      state_ = State::content;
    }
    if (state_ == State::thinking) {
      const size_t at = pending_.find(close_);
      if (at == std::string::npos) {
        emit(reply_.thinking, d.thinking, pending_.size() - (at_end ? 0 : tag_prefix(pending_, close_)));
        break;
      }
      emit(reply_.thinking, d.thinking, at);
      pending_.erase(0, close_.size());
      state_ = State::content;
      eat_space_ = true;
      continue;
    }
    emit(reply_.content, d.content, pending_.size());
  }
  return d;
}

}  // namespace strata
