"""The clients people use, unchanged, against `strata serve` on SmolLM2: the official openai SDK
(Responses API, chat completions with forced tools, logprobs, embeddings with dimensions), the
official anthropic SDK (Messages API, count_tokens) and langchain-openai (forced tools, function-
calling structured output). Greedy answers are compared across endpoints: every endpoint
translates into the same native request, so the same conversation gives the same text.
"""
import json
import math

import numpy as np
import pytest

import server_harness as harness
from conftest import run_strata

MODEL = harness.MODEL
WEATHER = harness.WEATHER_TOOL
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The local time in a time zone",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}}
QUESTION = "What is the weather in Paris?"


def flat(tool):
    """A chat-completions tool in the Responses API's flat shape."""
    return {"type": "function", **tool["function"]}


def anthropic_tool(tool):
    f = tool["function"]
    return {"name": f["name"], "description": f["description"], "input_schema": f["parameters"]}


@pytest.fixture(scope="module")
def claude(server):
    anthropic = pytest.importorskip("anthropic")
    return anthropic.Anthropic(base_url=server.url, api_key="unused", timeout=120, max_retries=0)


def chat_text(oai, messages, max_tokens, model=MODEL):
    r = oai.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0)
    return r.choices[0].message.content


# --- Responses API


def test_responses_plain_equals_chat_completions(oai):
    r = oai.responses.create(model=MODEL, instructions="Answer briefly.", input="Name a color.",
                             max_output_tokens=12, temperature=0)
    assert r.object == "response" and r.status in ("completed", "incomplete")
    assert r.output[0].type == "message" and r.output_text
    assert r.usage.output_tokens <= 12 and r.usage.input_tokens > 0
    same = chat_text(oai, [{"role": "system", "content": "Answer briefly."},
                           {"role": "user", "content": "Name a color."}], 12)
    assert r.output_text == same
    # Input items: a message list with content parts reads as the string form does.
    items = oai.responses.create(model=MODEL, instructions="Answer briefly.", max_output_tokens=12, temperature=0,
                                 input=[{"role": "user", "content": [{"type": "input_text", "text": "Name a color."}]}])
    assert items.output_text == r.output_text


def test_responses_stream(oai):
    kwargs = dict(model=MODEL, input="Write one short sentence about the sea.", max_output_tokens=16, temperature=0)
    whole = oai.responses.create(**kwargs)
    events = list(oai.responses.create(stream=True, **kwargs))
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.completed"
    for t in ("response.output_item.added", "response.content_part.added", "response.output_text.delta",
              "response.output_text.done", "response.content_part.done", "response.output_item.done"):
        assert t in types, t
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == whole.output_text == events[-1].response.output_text
    with oai.responses.stream(**kwargs) as s:
        for _ in s:
            pass
        assert s.get_final_response().output_text == whole.output_text


def test_responses_structured(oai):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
              "required": ["city", "population"], "additionalProperties": False}
    r = oai.responses.create(model=MODEL, input="Give a city and its population as JSON.", max_output_tokens=60,
                             temperature=0, text={"format": {"type": "json_schema", "name": "city", "schema": schema}})
    value = json.loads(r.output_text)
    assert list(value) == ["city", "population"] and isinstance(value["population"], int)


def test_responses_tool_round_trip(oai, tools_model):
    tools = [flat(WEATHER), flat(TIME)]
    r = oai.responses.create(model=tools_model, input=QUESTION, tools=tools, tool_choice="required",
                             max_output_tokens=60, temperature=0)
    calls = [o for o in r.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name in ("get_weather", "get_time")
    assert isinstance(json.loads(calls[0].arguments), dict) and calls[0].call_id
    # Named: the call is to that tool whatever the question asks.
    r = oai.responses.create(model=tools_model, input=QUESTION, tools=tools, max_output_tokens=60, temperature=0,
                             tool_choice={"type": "function", "name": "get_time"})
    call = [o for o in r.output if o.type == "function_call"][0]
    assert call.name == "get_time" and isinstance(json.loads(call.arguments)["zone"], str)
    # The same, streamed: the call arrives as function_call items and argument events.
    events = list(oai.responses.create(model=tools_model, input=QUESTION, tools=tools, max_output_tokens=60,
                                       temperature=0, stream=True,
                                       tool_choice={"type": "function", "name": "get_time"}))
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert len(done) == 1 and done[0].arguments == call.arguments
    assert [o.type for o in events[-1].response.output] == ["function_call"]
    # The call and its output go back as input items; the answer is a message.
    follow = [{"role": "user", "content": QUESTION},
              {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
              {"type": "function_call_output", "call_id": call.call_id, "output": "14:05"}]
    answer = oai.responses.create(model=tools_model, input=follow, tools=tools, tool_choice="none",
                                  max_output_tokens=16, temperature=0)
    assert answer.output[0].type == "message" and answer.output_text
    # The call and its output are in the prompt: each item adds tokens.
    plain = oai.responses.create(model=tools_model, input=follow[:1], tools=tools, tool_choice="none",
                                 max_output_tokens=1, temperature=0)
    no_output = oai.responses.create(model=tools_model, input=follow[:2], tools=tools, tool_choice="none",
                                     max_output_tokens=1, temperature=0)
    assert answer.usage.input_tokens > no_output.usage.input_tokens > plain.usage.input_tokens


def test_responses_errors(oai):
    import openai
    with pytest.raises(openai.BadRequestError, match="previous_response_id"):
        oai.responses.create(model=MODEL, input="hi", previous_response_id="resp_1")
    with pytest.raises(openai.BadRequestError, match="not supported"):
        oai.responses.create(model=MODEL, input="hi", tools=[{"type": "web_search"}])
    with pytest.raises(openai.NotFoundError):
        oai.responses.create(model="no-such-model", input="hi")


# --- Anthropic Messages API


def test_messages_plain_equals_chat_completions(claude, oai):
    m = claude.messages.create(model=MODEL, max_tokens=12, system="Answer briefly.",
                               messages=[{"role": "user", "content": "Name a color."}], extra_body={"temperature": 0})
    assert m.type == "message" and m.role == "assistant" and m.content[0].type == "text"
    assert m.stop_reason in ("end_turn", "max_tokens") and m.usage.output_tokens <= 12
    same = chat_text(oai, [{"role": "system", "content": "Answer briefly."},
                           {"role": "user", "content": "Name a color."}], 12)
    assert m.content[0].text == same
    # Blocks read as strings do.
    blocks = claude.messages.create(model=MODEL, max_tokens=12, system=[{"type": "text", "text": "Answer briefly."}],
                                    messages=[{"role": "user", "content": [{"type": "text", "text": "Name a color."}]}],
                                    extra_body={"temperature": 0})
    assert blocks.content[0].text == same
    # Stop reasons: the token limit, and a stop sequence of the request's.
    short = claude.messages.create(model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "Count to ten."}],
                                   extra_body={"temperature": 0})
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 2
    full = claude.messages.create(model=MODEL, max_tokens=40, messages=[{"role": "user", "content": "Count to ten."}],
                                  extra_body={"temperature": 0}).content[0].text
    word = full.split()[1]
    cut = claude.messages.create(model=MODEL, max_tokens=40, messages=[{"role": "user", "content": "Count to ten."}],
                                 stop_sequences=[word], extra_body={"temperature": 0})
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == word
    assert word not in cut.content[0].text and full.startswith(cut.content[0].text)


def test_messages_stream(claude):
    kwargs = dict(model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "Say something about the sea."}],
                  extra_body={"temperature": 0})
    whole = claude.messages.create(**kwargs)
    events = list(claude.messages.create(stream=True, **kwargs))
    types = [e.type for e in events]
    assert types[0] == "message_start" and types[-2:] == ["message_delta", "message_stop"]
    assert types[1:-2] == ["content_block_start"] + ["content_block_delta"] * (len(types) - 5) + ["content_block_stop"]
    assert events[-2].delta.stop_reason == whole.stop_reason
    assert events[-2].usage.output_tokens == whole.usage.output_tokens
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == whole.content[0].text
    with claude.messages.stream(**kwargs) as s:
        assert s.get_final_text() == whole.content[0].text


def test_messages_tool_round_trip(claude, tools_model):
    tools = [anthropic_tool(WEATHER), anthropic_tool(TIME)]
    question = [{"role": "user", "content": QUESTION}]
    m = claude.messages.create(model=tools_model, max_tokens=60, messages=question, tools=tools,
                               tool_choice={"type": "tool", "name": "get_weather"}, extra_body={"temperature": 0})
    uses = [b for b in m.content if b.type == "tool_use"]
    assert m.stop_reason == "tool_use" and len(uses) == 1
    assert uses[0].name == "get_weather" and isinstance(uses[0].input["city"], str) and uses[0].id
    # "any": some tool; streamed, the input arrives as input_json_delta.
    with claude.messages.stream(model=tools_model, max_tokens=60, messages=question, tools=tools,
                                tool_choice={"type": "any"}, extra_body={"temperature": 0}) as s:
        final = s.get_final_message()
    streamed = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and len(streamed) == 1 and streamed[0].name in ("get_weather", "get_time")
    # The call and its result go back as blocks; the answer is text.
    follow = question + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "18 C, sunny"}]}]
    answer = claude.messages.create(model=tools_model, max_tokens=16, messages=follow, tools=tools,
                                    tool_choice={"type": "none"}, extra_body={"temperature": 0})
    assert answer.content[0].type == "text" and answer.stop_reason in ("end_turn", "max_tokens")
    # The call and its result are in the prompt: each adds tokens.
    counts = [claude.messages.count_tokens(model=tools_model, messages=follow[:n]).input_tokens for n in (1, 2, 3)]
    assert counts[2] == answer.usage.input_tokens and counts[2] > counts[1] > counts[0]


def test_count_tokens(claude, tools_model):
    messages = [{"role": "user", "content": "Name a color."}]
    counted = claude.messages.count_tokens(model=MODEL, system="Answer briefly.", messages=messages)
    m = claude.messages.create(model=MODEL, max_tokens=1, system="Answer briefly.", messages=messages)
    assert counted.input_tokens == m.usage.input_tokens > 0
    tools = [anthropic_tool(WEATHER)]
    with_tools = claude.messages.count_tokens(model=tools_model, messages=messages, tools=tools)
    assert with_tools.input_tokens > claude.messages.count_tokens(model=tools_model, messages=messages).input_tokens


def test_messages_errors(claude, server):
    import anthropic
    with pytest.raises(anthropic.BadRequestError) as e:
        claude.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "system", "content": "x"}])
    assert e.value.body["type"] == "error" and "role" in e.value.body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.create(model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(anthropic.BadRequestError, match="not among the tools"):
        claude.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}],
                               tools=[anthropic_tool(WEATHER)], tool_choice={"type": "tool", "name": "nope"})
    assert server.alive()


# --- forced tools on /v1/chat/completions and through langchain-openai


def test_forced_tools_chat_completions(oai, tools_model):
    messages = [{"role": "user", "content": QUESTION}]
    for stream in (False, True):
        kwargs = dict(model=tools_model, messages=messages, tools=[WEATHER, TIME], temperature=0, max_tokens=60,
                      tool_choice={"type": "function", "function": {"name": "get_time"}})
        if stream:
            chunks = list(oai.chat.completions.create(stream=True, **kwargs))
            calls = [c for ch in chunks if ch.choices for c in (ch.choices[0].delta.tool_calls or [])]
            assert chunks[-1].choices[0].finish_reason == "tool_calls"
        else:
            r = oai.chat.completions.create(**kwargs)
            assert r.choices[0].finish_reason == "tool_calls"
            calls = r.choices[0].message.tool_calls
        assert len(calls) == 1 and calls[0].function.name == "get_time"
        assert isinstance(json.loads(calls[0].function.arguments)["zone"], str)
    r = oai.chat.completions.create(model=tools_model, messages=messages, tools=[WEATHER, TIME], temperature=0,
                                    max_tokens=60, tool_choice="required")
    assert r.choices[0].message.tool_calls[0].function.name in ("get_weather", "get_time")
    none = oai.chat.completions.create(model=tools_model, messages=messages, tools=[WEATHER, TIME], temperature=0,
                                       max_tokens=12, tool_choice="none")
    assert not none.choices[0].message.tool_calls and none.choices[0].finish_reason in ("stop", "length")


def test_a_forced_call_cut_by_max_tokens(oai, tools_model):
    # As OpenAI returns it: the call with its arguments so far, finish reason "length"; the
    # Responses API marks the call and the response incomplete.
    messages = [{"role": "user", "content": QUESTION}]
    kwargs = dict(model=tools_model, messages=messages, tools=[WEATHER], temperature=0, max_tokens=24,
                  tool_choice={"type": "function", "function": {"name": "get_weather"}})
    r = oai.chat.completions.create(**kwargs)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "length" and not r.choices[0].message.content, r
    assert call.function.name == "get_weather" and call.function.arguments.startswith('{\n  "city": "'), call
    with pytest.raises(json.JSONDecodeError):
        json.loads(call.function.arguments)  # cut off
    chunks = list(oai.chat.completions.create(stream=True, **kwargs))
    calls = [c for ch in chunks if ch.choices for c in (ch.choices[0].delta.tool_calls or [])]
    assert chunks[-1].choices[0].finish_reason == "length"
    assert [(c.function.name, c.function.arguments) for c in calls] == [(call.function.name, call.function.arguments)]
    rr = oai.responses.create(model=tools_model, input=QUESTION, tools=[flat(WEATHER)], max_output_tokens=24,
                              temperature=0, tool_choice={"type": "function", "name": "get_weather"})
    assert rr.status == "incomplete" and [o.type for o in rr.output] == ["function_call"], rr
    assert rr.output[0].status == "incomplete" and rr.output[0].arguments == call.function.arguments
    events = list(oai.responses.create(model=tools_model, input=QUESTION, tools=[flat(WEATHER)], max_output_tokens=24,
                                       temperature=0, tool_choice={"type": "function", "name": "get_weather"},
                                       stream=True))
    done = [e.arguments for e in events if e.type == "response.function_call_arguments.done"]
    assert done == [call.function.arguments] and events[-1].response.status == "incomplete"


def test_streamed_tool_answers_keep_every_logprob(oai, tools_model):
    # Text held back while it may be a call still has its logprobs, in the delta that sends it.
    kwargs = dict(model=tools_model, messages=[{"role": "user", "content": QUESTION}], tools=[WEATHER],
                  temperature=0, max_tokens=24, logprobs=True, top_logprobs=2,
                  tool_choice={"type": "function", "function": {"name": "get_weather"}})
    whole = oai.chat.completions.create(**kwargs)
    chunks = list(oai.chat.completions.create(stream=True, **kwargs))
    streamed = [lp for ch in chunks if ch.choices and ch.choices[0].logprobs
                for lp in (ch.choices[0].logprobs.content or [])]
    assert len(streamed) == len(whole.choices[0].logprobs.content) == whole.usage.completion_tokens
    assert [lp.token for lp in streamed] == [lp.token for lp in whole.choices[0].logprobs.content]


def test_langchain_openai_forced_tools(server, tools_model):
    lc = pytest.importorskip("langchain_openai")
    from pydantic import BaseModel

    llm = lc.ChatOpenAI(model=tools_model, base_url=server.url + "/v1", api_key="unused", temperature=0,
                        max_tokens=60, max_retries=0)
    msg = llm.bind_tools([WEATHER, TIME], tool_choice="get_time").invoke(QUESTION)
    assert [c["name"] for c in msg.tool_calls] == ["get_time"] and isinstance(msg.tool_calls[0]["args"]["zone"], str)

    class City(BaseModel):
        """A city and the country it is in."""
        name: str
        country: str

    city = llm.with_structured_output(City, method="function_calling").invoke("Name a city in France.")
    assert isinstance(city, City) and isinstance(city.name, str)


# --- logprobs


def cli_logprobs(prompt, tmp_path):
    """log-softmax of `strata logits` for the prompt's next token (float64), and its top 5 as
    (id, piece) from the CLI's listing."""
    out = tmp_path / "logits.bin"
    listing = run_strata("logits", harness.smollm2_path(), "-p", prompt, "--top", 5, "--out", out).stdout
    top = [(int(i), piece) for i, _, piece in (line.split("\t", 2) for line in listing.decode().splitlines())]
    v = np.fromfile(out, dtype=np.float32).astype(np.float64)
    return v - v.max() - np.log(np.exp(v - v.max()).sum()), top


def escaped(piece):
    """A token's text as `strata logits` lists it (control characters escaped)."""
    return piece.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def test_logprobs_equal_strata_logits(server, client, oai, tmp_path):
    # A one-token prompt: the server and `strata logits` evaluate the same single token.
    prompt = "Hello"
    ref, top = cli_logprobs(prompt, tmp_path)
    order = np.argsort(-ref)[:5]
    assert [i for i, _ in top] == order.tolist()
    r = client.generate(model=MODEL, prompt=prompt, raw=True, logprobs=True, top_logprobs=5,
                        options={"temperature": 0, "num_predict": 3})
    first = r.logprobs[0]
    assert len(r.logprobs) == r.eval_count == 3
    assert r.context[1] == int(order[0])  # greedy took the most likely token
    assert math.isclose(first.logprob, ref[order[0]], abs_tol=1e-4)
    assert [t.logprob for t in first.top_logprobs] == pytest.approx(ref[order].tolist(), abs=1e-4)
    assert [escaped(t.token) for t in first.top_logprobs] == [piece for _, piece in top]
    # A longer prompt: the server evaluates all its tokens but the last as a batch and the last
    # alone, the CLI all as one batch (kernels that round activations to 8 bits differently, see
    # test_fidelity_logits.py): the same ranking, values within that noise (measured 0.08).
    longer = "The capital of France is"
    ref_long, top_long = cli_logprobs(longer, tmp_path)
    lr = client.generate(model=MODEL, prompt=longer, raw=True, logprobs=True, top_logprobs=3,
                         options={"temperature": 0, "num_predict": 1})
    # (the top 3 sit far apart; the 4th and 5th of this prompt are closer than the noise)
    assert [escaped(t.token) for t in lr.logprobs[0].top_logprobs] == [piece for _, piece in top_long[:3]]
    got = [t.logprob for t in lr.logprobs[0].top_logprobs]
    assert got == pytest.approx([ref_long[i] for i, _ in top_long[:3]], abs=0.15)
    # Streamed: the same values, chunk by chunk; /api/chat carries them too.
    parts = list(client.generate(model=MODEL, prompt=prompt, raw=True, logprobs=True, top_logprobs=5, stream=True,
                                 options={"temperature": 0, "num_predict": 3}))
    streamed = [lp for p in parts for lp in (p.logprobs or [])]
    assert [(lp.token, lp.logprob) for lp in streamed] == [(lp.token, lp.logprob) for lp in r.logprobs]
    chat = client.chat(model=MODEL, messages=[{"role": "user", "content": "hi"}], logprobs=True,
                       options={"temperature": 0, "num_predict": 2})
    assert len(chat.logprobs) == 2 and all(lp.logprob <= 0 for lp in chat.logprobs)
    # OpenAI's legacy completions and chat completions give the same numbers.
    c = oai.completions.create(model=MODEL, prompt=prompt, max_tokens=3, temperature=0, logprobs=5)
    assert c.choices[0].logprobs.token_logprobs == pytest.approx([lp.logprob for lp in r.logprobs], abs=1e-6)
    assert list(c.choices[0].logprobs.top_logprobs[0].values()) == pytest.approx(ref[order].tolist(), abs=1e-4)
    kwargs = dict(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3, temperature=0,
                  logprobs=True, top_logprobs=2)
    whole = oai.chat.completions.create(**kwargs).choices[0].logprobs.content
    chunks = oai.chat.completions.create(stream=True, **kwargs)
    streamed = [t for ch in chunks if ch.choices and ch.choices[0].logprobs for t in ch.choices[0].logprobs.content]
    assert [(t.token, t.logprob) for t in streamed] == [(t.token, t.logprob) for t in whole]
    assert len(whole) == 3 and all(len(t.top_logprobs) == 2 and t.top_logprobs[0].logprob >= t.logprob - 1e-6
                                   for t in whole)
    # The Responses API: the same numbers in output_text's logprobs, streamed and not.
    resp = oai.responses.create(model=MODEL, input="hi", max_output_tokens=3, temperature=0, top_logprobs=2)
    assert [(t.token, t.logprob) for t in resp.output[0].content[0].logprobs] == [(t.token, t.logprob) for t in whole]
    events = list(oai.responses.create(model=MODEL, input="hi", max_output_tokens=3, temperature=0, top_logprobs=2,
                                       stream=True))
    deltas = [t for e in events if e.type == "response.output_text.delta" for t in e.logprobs]
    assert [(t.token, t.logprob) for t in deltas] == [(t.token, t.logprob) for t in whole]
    status, _, body = server.request("POST", "/v1/chat/completions", dict(kwargs, top_logprobs=21))
    assert status == 400 and b"top_logprobs" in body


# --- embeddings


def test_embeddings_dimensions_and_token_ids(server, client, oai):
    text = "The quick brown fox"
    full = np.array(oai.embeddings.create(model=MODEL, input=text).data[0].embedding)
    short = np.array(oai.embeddings.create(model=MODEL, input=text, dimensions=8).data[0].embedding)
    assert short.shape == (8,) and math.isclose(np.linalg.norm(short), 1, abs_tol=1e-5)
    assert short == pytest.approx(full[:8] / np.linalg.norm(full[:8]), abs=1e-5)
    ollama_short = client.embed(model=MODEL, input=text, dimensions=8).embeddings[0]
    assert ollama_short == pytest.approx(short.tolist(), abs=1e-5)
    # Token ids: the ids of the text (from a raw generate's context) embed as the text does.
    ids = client.generate(model=MODEL, prompt=text, raw=True, options={"num_predict": 1, "temperature": 0}).context[:-1]
    by_ids = oai.embeddings.create(model=MODEL, input=ids).data[0].embedding
    assert by_ids == pytest.approx(full.tolist(), abs=1e-5)
    batch = oai.embeddings.create(model=MODEL, input=[ids, ids[:2]]).data
    assert len(batch) == 2 and batch[0].embedding == pytest.approx(full.tolist(), abs=1e-5)
    status, _, body = server.request("POST", "/api/embed", {"model": MODEL, "input": [ids]})
    assert status == 200 and json.loads(body)["embeddings"][0] == pytest.approx(full.tolist(), abs=1e-5)
    for bad, why in (({"input": text, "dimensions": 100000}, b"576 dimensions"),
                     ({"input": [10 ** 9]}, b"outside the vocabulary"),
                     ({"input": [1, "x"]}, b"token ids")):
        status, _, body = server.request("POST", "/v1/embeddings", dict(bad, model=MODEL))
        assert status == 400 and why in body, body
    assert server.alive()
