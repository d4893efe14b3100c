"""Prompts and answers longer than the context, and a thinking model's reasoning (issue 18).

A prompt over the context is cut to leave the answer room (at most n_ctx - num_predict tokens, and
half the context when num_predict is larger or unset); generation past a full context shifts it
as Ollama does (the first num_keep tokens stay, half of the rest go) unless "shift" is false or
num_predict is -2; on Ollama's and OpenAI's APIs, streamed and not. A template that writes
<think> tags makes the reply's reasoning Ollama's `thinking` and the OpenAI layer's `reasoning`,
split exactly as Ollama's thinking parser splits the text the model wrote.
"""
import json
import re

import pytest

import server_harness as harness
from server_harness import MODEL

ollama = pytest.importorskip("ollama")

# Counting: a continuation SmolLM2 never ends by itself, so every answer runs to its limit, and
# one whose numbers stop following each other shows a broken context.
COUNTING = ", ".join(str(i) for i in range(1, 300)) + ","


def counts_on(text):
    numbers = [int(n) for n in re.findall(r"\d+", text)]
    steps = [b - a for a, b in zip(numbers, numbers[1:])]
    return len(numbers) >= 5 and steps.count(1) >= 0.9 * len(steps)


def test_a_prompt_over_the_context_leaves_the_answer_room(client):
    r = client.generate(model=MODEL, prompt=COUNTING, raw=True,
                        options={"num_ctx": 256, "num_predict": 40, "temperature": 0})
    assert r.done_reason == "length" and r.eval_count == 40, r
    assert 200 < r.prompt_eval_count <= 256 - 40, r.prompt_eval_count
    assert counts_on(r.response), r.response


def test_generation_goes_on_past_the_context(server, client):
    # num_predict over half the context: the prompt keeps half of it, and the answer shifts it.
    opts = {"num_ctx": 64, "num_predict": 60, "temperature": 0}
    r = client.generate(model=MODEL, prompt=COUNTING, raw=True, options=opts)
    assert r.done_reason == "length" and r.eval_count == 60, r
    assert r.prompt_eval_count <= 32
    assert r.prompt_eval_count + r.eval_count > 64
    assert counts_on(r.response), r.response
    assert "shifted the context" in server.log_text()
    parts = list(client.generate(model=MODEL, prompt=COUNTING, raw=True, options=opts, stream=True))
    assert "".join(p.response for p in parts) == r.response
    assert parts[-1].done_reason == "length" and parts[-1].eval_count == 60
    # "shift": false, or num_predict -2 ("fill the context"): the answer ends with the context.
    for body in ({"shift": False, "options": opts}, {"options": {**opts, "num_predict": -2}}):
        status, _, reply = server.request("POST", "/api/generate", {
            "model": MODEL, "prompt": COUNTING, "raw": True, "stream": False, **body})
        j = json.loads(reply)
        assert status == 200 and j["done_reason"] == "length", j
        assert j["prompt_eval_count"] + j["eval_count"] <= 64, j  # the last token is never evaluated
        assert r.response.startswith(j["response"])


def test_a_conversation_over_the_context_is_answered(client):
    messages = [{"role": "user", "content": "Remember: " + COUNTING},
                {"role": "assistant", "content": "I will."},
                {"role": "user", "content": "Continue counting: " + COUNTING}]
    r = client.chat(model=MODEL, messages=messages, options={"num_ctx": 128, "num_predict": 60, "temperature": 0})
    assert r.prompt_eval_count <= 128 - 60, r.prompt_eval_count
    assert r.eval_count > 1 and (r.done_reason == "stop" or r.eval_count == 60), r


def test_openai_prompts_and_answers_over_the_context(server, oai):
    status, _, body = server.request("POST", "/api/create", {
        "model": "smallctx", "from": MODEL, "parameters": {"num_ctx": 64}, "stream": False})
    assert status == 200, body
    try:
        r = oai.completions.create(model="smallctx", prompt=COUNTING, max_tokens=50, temperature=0)
        assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 50, r
        assert r.usage.prompt_tokens <= 32 and r.usage.prompt_tokens + 50 > 64
        assert counts_on(r.choices[0].text), r.choices[0].text
        chunks = list(oai.completions.create(model="smallctx", prompt=COUNTING, max_tokens=50, temperature=0,
                                             stream=True))
        assert "".join(c.choices[0].text for c in chunks if c.choices) == r.choices[0].text
        assert chunks[-1].choices[0].finish_reason == "length"
        chat = oai.chat.completions.create(model="smallctx", max_tokens=20, temperature=0,
                                           messages=[{"role": "user", "content": "Continue: " + COUNTING}])
        assert chat.usage.prompt_tokens <= 64 - 20 and chat.usage.completion_tokens > 1, chat
    finally:
        server.request("DELETE", "/api/delete", {"model": "smallctx"})


# --- thinking between <think> tags

# Qwen3-2507-style: the generation prompt opens the thinking block, or (enable_thinking false)
# writes an empty one.
THINKER_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% else %}<think>\n{% endif %}"
    "{% endif %}")
# Worked examples the model follows: it writes its reasoning, closes the tag, answers.
SHOTS = [{"role": "user", "content": "What is 2+2?"},
         {"role": "assistant", "content": "<think>\nI add the two numbers.\n</think>\n\n4"},
         {"role": "user", "content": "What is 3+5?"},
         {"role": "assistant", "content": "<think>\nI add the two numbers.\n</think>\n\n8"},
         {"role": "user", "content": "What is 4+4?"}]
OPTIONS = {"num_predict": 24, "temperature": 0}


def rendered(messages):
    """THINKER_TEMPLATE's prompt with thinking on, for a raw request."""
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + "<|im_start|>assistant\n<think>\n"


def ollama_split(text, inside):
    """Ollama's thinking parser (thinking/parser.go) on a whole reply: (thinking, content)."""
    if not inside:
        if not text.lstrip().startswith("<think>"):
            return "", text
        text = text.lstrip()[len("<think>"):]
    text = text.lstrip()
    if "</think>" not in text:
        return text, ""
    thinking, content = text.split("</think>", 1)
    return thinking, content.lstrip()


@pytest.fixture(scope="module")
def thinker(server):
    status, _, body = server.request("POST", "/api/create", {
        "model": "thinker2", "from": MODEL, "template": THINKER_TEMPLATE, "stream": False})
    assert status == 200, body
    yield "thinker2"
    server.request("DELETE", "/api/delete", {"model": "thinker2"})


def test_thinking_is_split_from_the_answer(client, oai, thinker):
    assert "thinking" in client.show(thinker).capabilities
    # The text as the model wrote it: a raw prompt, not split (think false).
    raw = client.generate(model=thinker, prompt=rendered(SHOTS), raw=True, think=False, options=OPTIONS)
    assert "</think>" in raw.response, raw.response  # the examples were followed
    thinking, content = ollama_split(raw.response, inside=True)
    assert thinking and content and raw.thinking is None

    # /api/chat, thinking asked for or by default (Ollama thinks unless told not to).
    for think in (True, None):
        r = client.chat(model=thinker, messages=SHOTS, think=think, options=OPTIONS)
        assert (r.message.thinking, r.message.content) == (thinking, content), think
        parts = list(client.chat(model=thinker, messages=SHOTS, think=think, options=OPTIONS, stream=True))
        assert "".join(p.message.thinking or "" for p in parts) == thinking
        assert "".join(p.message.content for p in parts) == content
        assert len([p for p in parts if p.message.thinking]) > 1  # streamed as it came
    # A raw /api/generate whose prompt opened the tag is split too, as Ollama splits it.
    g = client.generate(model=thinker, prompt=rendered(SHOTS), raw=True, options=OPTIONS)
    assert (g.thinking, g.response) == (thinking, content)
    g_parts = list(client.generate(model=thinker, prompt=rendered(SHOTS), raw=True, options=OPTIONS, stream=True))
    assert "".join(p.thinking or "" for p in g_parts) == thinking
    assert "".join(p.response for p in g_parts) == content

    # OpenAI: the reasoning where Ollama's OpenAI layer puts it ("reasoning").
    c = oai.chat.completions.create(model=thinker, messages=SHOTS, max_tokens=24, temperature=0)
    message = c.choices[0].message
    assert message.content == content and message.model_extra.get("reasoning") == thinking
    chunks = list(oai.chat.completions.create(model=thinker, messages=SHOTS, max_tokens=24, temperature=0, stream=True))
    deltas = [ch.choices[0].delta for ch in chunks if ch.choices]
    assert "".join(d.model_extra.get("reasoning") or "" for d in deltas) == thinking
    assert "".join(d.content or "" for d in deltas) == content
    # /v1/completions continues a text as given: the text as the model wrote it.
    t = oai.completions.create(model=thinker, prompt=rendered(SHOTS), max_tokens=24, temperature=0)
    assert t.choices[0].text == raw.response


def test_think_false_writes_an_empty_thinking_block(client, thinker):
    on = client.chat(model=thinker, messages=SHOTS, think=True, options=OPTIONS)
    off = client.chat(model=thinker, messages=SHOTS, think=False, options=OPTIONS)
    assert off.message.thinking is None and "</think>" not in off.message.content
    assert off.prompt_eval_count > on.prompt_eval_count  # the template's "<think>\n\n</think>\n\n"
