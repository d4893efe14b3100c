"""gpt-oss's harmony replies through `strata serve` (issue 16 item 1), with the official ollama,
openai and anthropic clients, on a forged tiny gpt-oss.

Random weights write random text, so the reply is made to be harmony: a JSON schema whose only
value is a string holding harmony messages (the server's grammar makes the model write exactly
it, quotes included). The server parses what the model wrote, so each endpoint must return the
analysis channel as its reasoning field and the `to=functions.NAME` message as a tool call, the
same streamed and not. (The parse itself, on fixed text in any split, is in
tests/runtime/chat_format_test.cpp.)"""
import json
import os

import pytest

import server_harness as harness
from conftest import SMOLLM2, model_path, run_strata

ollama = pytest.importorskip("ollama")
openai = pytest.importorskip("openai")

MODEL = "gpt-oss-tiny"
FORGE = ["--arch", "gpt-oss", "--preset", "tiny", "--type", "MXFP4_MOE", "--seed", "1", "--fill", "values"]
ANSWER = ("<|channel|>analysis<|message|>Short question.<|end|>"
          "<|start|>assistant<|channel|>final<|message|>Paris.<|return|>")
CALL = ("<|channel|>analysis<|message|>Need the weather.<|end|>"
        "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{}<|call|>")
HI = [{"role": "user", "content": "Hi"}]


def only(text):
    return {"type": "string", "enum": [text]}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    folder = harness.models_folder(str(tmp_path_factory.mktemp("strata-harmony-models")))
    run_strata("forge", *FORGE, "--tokenizer-from", model_path(SMOLLM2), "--out",
               os.path.join(folder, MODEL + ".gguf"))
    s = harness.Server(folder)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(srv):
    return ollama.Client(host=srv.url, timeout=120)


@pytest.fixture(scope="module")
def oai(srv):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", timeout=120, max_retries=0)


def test_gpt_oss_thinks_at_every_level(client):
    # gpt-oss always thinks (its template takes only a reasoning effort): every think value is taken.
    assert "thinking" in client.show(MODEL).capabilities
    for think in (True, False, "low", "medium", "high", None):
        r = client.chat(model=MODEL, messages=HI, think=think, options={"num_predict": 2})
        assert r.done, think
        r = client.generate(model=MODEL, prompt="Hi", think=think, options={"num_predict": 2})
        assert r.done, think


def test_ollama_chat_thinking_and_content(client):
    r = client.chat(model=MODEL, messages=HI, format=only(ANSWER), think=True)
    assert (r.message.thinking, r.message.content, r.message.tool_calls) == ("Short question.", "Paris.", None), r
    thinking = content = ""
    for chunk in client.chat(model=MODEL, messages=HI, format=only(ANSWER), think=True, stream=True):
        thinking += chunk.message.thinking or ""
        content += chunk.message.content or ""
        assert "<|" not in (chunk.message.thinking or "") + (chunk.message.content or ""), chunk
    assert (thinking, content) == ("Short question.", "Paris.")


def test_ollama_generate_thinking(client):
    r = client.generate(model=MODEL, prompt="Hi", format=only(ANSWER), think="low")
    assert (r.thinking, r.response) == ("Short question.", "Paris."), r
    parts = list(client.generate(model=MODEL, prompt="Hi", format=only(ANSWER), think="low", stream=True))
    assert "".join(p.thinking or "" for p in parts) == "Short question."
    assert "".join(p.response for p in parts) == "Paris."


def test_ollama_tool_call(client):
    r = client.chat(model=MODEL, messages=HI, format=only(CALL))
    assert r.message.thinking == "Need the weather." and r.message.content == "", r
    [call] = r.message.tool_calls
    assert (call.function.name, dict(call.function.arguments)) == ("get_weather", {})
    calls = [c for chunk in client.chat(model=MODEL, messages=HI, format=only(CALL), stream=True)
             for c in chunk.message.tool_calls or []]
    assert [c.function.name for c in calls] == ["get_weather"]


def schema_format(text):
    return {"type": "json_schema", "json_schema": {"name": "reply", "schema": only(text)}}


def test_openai_chat_reasoning(oai):
    # Ollama's OpenAI layer returns the thinking as `reasoning` (an extra field the SDK keeps).
    r = oai.chat.completions.create(model=MODEL, messages=HI, response_format=schema_format(ANSWER),
                                    reasoning_effort="high")
    m = r.choices[0].message
    assert (m.reasoning, m.content, m.tool_calls) == ("Short question.", "Paris.", None), m
    reasoning = content = ""
    for chunk in oai.chat.completions.create(model=MODEL, messages=HI, response_format=schema_format(ANSWER),
                                             stream=True):
        if chunk.choices:
            reasoning += getattr(chunk.choices[0].delta, "reasoning", None) or ""
            content += chunk.choices[0].delta.content or ""
    assert (reasoning, content) == ("Short question.", "Paris.")
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model=MODEL, messages=HI, reasoning_effort="maximal", max_tokens=1)


def test_openai_chat_tool_call(oai):
    r = oai.chat.completions.create(model=MODEL, messages=HI, response_format=schema_format(CALL))
    c = r.choices[0]
    assert c.finish_reason == "tool_calls" and c.message.reasoning == "Need the weather.", c
    [call] = c.message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {})
    names = [t.function.name for chunk in oai.chat.completions.create(
        model=MODEL, messages=HI, response_format=schema_format(CALL), stream=True)
        if chunk.choices for t in chunk.choices[0].delta.tool_calls or []]
    assert names == ["get_weather"]


def responses_format(text):
    return {"format": {"type": "json_schema", "name": "reply", "schema": only(text)}}


def test_responses_reasoning_item(oai):
    r = oai.responses.create(model=MODEL, input="Hi", text=responses_format(ANSWER))
    assert [o.type for o in r.output] == ["reasoning", "message"], r.output
    assert r.output[0].content[0].text == "Short question." and r.output_text == "Paris."
    with oai.responses.stream(model=MODEL, input="Hi", text=responses_format(ANSWER)) as stream:
        deltas = [e.delta for e in stream if e.type == "response.reasoning_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "Short question."
    assert [o.type for o in final.output] == ["reasoning", "message"] and final.output_text == "Paris."
    r = oai.responses.create(model=MODEL, input="Hi", text=responses_format(CALL))
    assert [o.type for o in r.output] == ["reasoning", "function_call"] and r.output[1].name == "get_weather"


def test_anthropic_thinking_block(srv):
    anthropic = pytest.importorskip("anthropic")
    client = anthropic.Anthropic(base_url=srv.url, api_key="unused", timeout=120, max_retries=0)
    # No response format in the Messages API: the plumbing is checked on what the model writes.
    m = client.messages.create(model=MODEL, max_tokens=8, messages=HI, thinking={"type": "enabled",
                                                                                 "budget_tokens": 1024})
    assert m.content and m.content[-1].type in ("text", "tool_use"), m
    with client.messages.stream(model=MODEL, max_tokens=8, messages=HI) as stream:
        final = stream.get_final_message()
    assert final.content and all(b.type in ("thinking", "text", "tool_use") for b in final.content)
