"""`strata serve` and its CLI clients, on SmolLM2: `strata run NAME` as a client of a running
server, JSON-schema keywords (pattern, bounds, refusals), images refused, tool calls streamed,
/v1 honouring what /api/create stored, real sha256 digests, and CLI usage errors.

The `server`, `client` and `oai` fixtures come from conftest.py.
"""
import hashlib
import json
import os
import re
import subprocess

import pytest

import server_harness as harness

ollama = pytest.importorskip("ollama")
openai = pytest.importorskip("openai")

MODEL = harness.MODEL


def strata(*args, env=None, stdin=None, timeout=120):
    return subprocess.run([harness.strata_bin(), *map(str, args)], capture_output=True, text=True, env=env,
                          input=stdin, timeout=timeout)


def env_for(server):
    return dict(os.environ, OLLAMA_HOST=server.url)


# --- strata run as a client


def test_run_streams_from_the_server(server, client):
    greedy = {"temperature": 0, "num_predict": 12}
    expected = client.generate(model=MODEL, prompt="Name a color.", options=greedy).response
    out = strata("run", MODEL, "-p", "Name a color.", "--temp", 0, "-n", 12, env=env_for(server))
    assert out.returncode == 0, out.stderr
    assert out.stdout == expected + "\n"
    assert re.search(r"prompt: \d+ tokens in [\d.]+ s", out.stderr), out.stderr
    assert re.search(r"generation: (\d+) tokens in [\d.]+ s \([\d.]+ tok/s\), stop: (stop|length)", out.stderr)
    # The name with :latest, and --greedy, work too.
    out = strata("run", f"{MODEL}:latest", "-p", "Name a color.", "--greedy", "-n", 12, env=env_for(server))
    assert out.returncode == 0 and out.stdout == expected + "\n", out.stderr


def test_run_chats_interactively_without_a_prompt(server, client):
    greedy = {"temperature": 0, "num_predict": 10}
    first = client.chat(model=MODEL, messages=[{"role": "user", "content": "Hi there"}], options=greedy)
    out = strata("run", MODEL, "--temp", 0, "-n", 10, env=env_for(server), stdin="Hi there\nAnd again\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("> " + first.message.content + "\n> "), out.stdout
    assert out.stdout.count("> ") >= 3  # two turns and the prompt that met the end of input


def test_run_unknown_name_and_local(server, tmp_path):
    out = strata("run", "no-such-model", "-p", "hi", env=env_for(server))
    assert out.returncode == 1 and "no-such-model" in out.stderr and "no model of that name" in out.stderr
    # --local never asks the server: the name is a file path that does not exist.
    out = strata("run", MODEL, "-p", "hi", "--local", env=env_for(server))
    assert out.returncode == 1 and "No such file" in out.stderr, out.stderr
    # No server: a name is taken as a file, as before.
    out = strata("run", "no-such-file.gguf", "-p", "hi", env=dict(os.environ, OLLAMA_HOST="127.0.0.1:1"))
    assert out.returncode == 1 and "no-such-file.gguf" in out.stderr
    # A file runs here even while a server is up, and needs -p.
    path = harness.smollm2_path()
    out = strata("run", path, "-p", "Once upon a time", "-n", 4, "--temp", 0, "-t", 2, env=env_for(server))
    assert out.returncode == 0 and out.stdout.startswith("Once upon a time"), out.stderr
    assert "threads" in out.stderr  # the local run's report
    out = strata("run", path, env=env_for(server))
    assert out.returncode == 1 and "--prompt" in out.stderr


def test_cli_usage_errors_exit_2():
    out = strata("run")
    assert out.returncode == 2 and "model" in out.stderr, (out.returncode, out.stderr)
    out = strata("no-such-command")
    assert out.returncode == 2, (out.returncode, out.stderr)
    out = strata("run", "x", "--temp", "warm")
    assert out.returncode == 2 and "temp" in out.stderr, (out.returncode, out.stderr)
    assert strata("--help").returncode == 0


# --- structured output: the keywords the grammar enforces, and those it refuses

RECORD = {
    "type": "object",
    "properties": {
        "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"},
        "day": {"type": "string", "format": "date"},
        "age": {"type": "integer", "minimum": 20, "maximum": 30},
        "score": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "tags": {"type": "array", "items": {"type": "string", "minLength": 2, "maxLength": 5},
                 "minItems": 2, "maxItems": 3},
        "level": {"enum": ["low", "high"]},
    },
    "required": ["code", "day", "age", "score", "tags", "level"],
    "additionalProperties": False,
}


def check_record(value):
    assert set(value) == set(RECORD["properties"]), value
    assert re.fullmatch(r"[A-Z]{3}-[0-9]{2}", value["code"]), value
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", value["day"]), value
    assert isinstance(value["age"], int) and 20 <= value["age"] <= 30, value
    assert isinstance(value["score"], (int, float)) and 0 < value["score"] <= 1, value
    assert 2 <= len(value["tags"]) <= 3 and all(2 <= len(t) <= 5 for t in value["tags"]), value
    assert value["level"] in ("low", "high")


def test_schema_keywords_are_enforced(client, oai):
    messages = [{"role": "user", "content": "Make up a product record."}]
    for opts in ({"temperature": 0, "num_predict": 200}, {"temperature": 1.0, "seed": 3, "num_predict": 200}):
        r = client.chat(model=MODEL, messages=messages, format=RECORD, options=opts)
        assert r.done_reason == "stop", r.message.content
        check_record(json.loads(r.message.content))
    r = oai.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=200,
                                    response_format={"type": "json_schema",
                                                     "json_schema": {"name": "record", "schema": RECORD}})
    check_record(json.loads(r.choices[0].message.content))


@pytest.mark.parametrize("schema,word", [
    ({"type": "object", "properties": {"s": {"type": "string", "pattern": "(a)\\1"}}}, "backreferences"),
    ({"type": "object", "properties": {"s": {"type": "string", "pattern": "(?=x)y"}}}, "lookaround"),
    ({"type": "object", "properties": {"s": {"not": {"type": "string"}}}}, "\"not\""),
    ({"type": "object", "properties": {"a": {"type": "array", "uniqueItems": True}}}, "uniqueItems"),
    ({"type": "object", "patternProperties": {"^x": {"type": "string"}}}, "patternProperties"),
    ({"type": "object", "properties": {"n": {"type": "number", "multipleOf": 0.3}}}, "multipleOf"),
])
def test_schema_keywords_it_cannot_enforce_are_refused(client, oai, schema, word):
    with pytest.raises(ollama.ResponseError) as e:
        client.generate(model=MODEL, prompt="hi", format=schema, stream=False)
    assert e.value.status_code == 400 and word in e.value.error, e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        list(client.generate(model=MODEL, prompt="hi", format=schema, stream=True))
    assert e.value.status_code == 400
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                    response_format={"type": "json_schema",
                                                     "json_schema": {"name": "x", "schema": schema}})
    assert word in str(e.value)


# --- images


def test_images_are_refused_without_vision(client, oai):
    image = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    with pytest.raises(ollama.ResponseError) as e:
        client.generate(model=MODEL, prompt="What is this?", images=[image])
    assert e.value.status_code == 400 and "image" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model=MODEL, messages=[{"role": "user", "content": "What is this?", "images": [image]}])
    assert e.value.status_code == 400 and "image" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        list(client.chat(model=MODEL, messages=[{"role": "user", "content": "What?", "images": [image]}], stream=True))
    assert e.value.status_code == 400
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + image}}]}])
    assert "image_url" in str(e.value)


# --- tool calls while streaming

TOOLS_TEMPLATE = """{% if tools %}<|im_start|>system
You can call these tools:
{% for t in tools %}{{ t | tojson }}
{% endfor %}Answer with <tool_call>{"name": ..., "arguments": {...}}</tool_call>.<|im_end|>
{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""

WEATHER_TOOL = harness.WEATHER_TOOL

def test_tool_calls_stream_in_a_chunk_before_done(server, client, oai):
    client.create(model="toolsy2", from_=harness.smollm2_path(), template=TOOLS_TEMPLATE)
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    try:
        # The whole answer is a call: no content chunk, the call in a chunk, then the done object.
        call_schema = {"type": "object", "properties": {
            "name": {"enum": ["get_weather"]},
            "arguments": {"type": "object", "properties": {"city": {"const": "Paris"}}}}}
        parts = list(client.chat(model="toolsy2", messages=messages, tools=[WEATHER_TOOL], format=call_schema,
                                 options={"temperature": 0, "num_predict": 60}, stream=True))
        assert parts[-1].done and not parts[-1].message.tool_calls
        with_calls = [i for i, p in enumerate(parts) if p.message.tool_calls]
        assert len(with_calls) == 1 and with_calls[0] < len(parts) - 1 and not parts[with_calls[0]].done
        call = parts[with_calls[0]].message.tool_calls[0]
        assert call.function.name == "get_weather" and call.function.arguments == {"city": "Paris"}
        assert "".join(p.message.content for p in parts) == ""

        # OpenAI: the call in a delta before the chunk with finish_reason "tool_calls".
        chunks = list(oai.chat.completions.create(
            model="toolsy2", messages=messages, tools=[WEATHER_TOOL], temperature=0, max_tokens=60, stream=True,
            response_format={"type": "json_schema", "json_schema": {"name": "call", "schema": call_schema}}))
        deltas = [c.choices[0] for c in chunks if c.choices]
        assert deltas[-1].finish_reason == "tool_calls"
        calls = [tc for d in deltas[:-1] for tc in (d.delta.tool_calls or [])]
        assert len(calls) == 1 and json.loads(calls[0].function.arguments) == {"city": "Paris"}
    finally:
        client.delete("toolsy2")


def test_plain_answers_with_tools_stream_token_by_token(client):
    client.create(model="toolsy3", from_=harness.smollm2_path(), template=TOOLS_TEMPLATE)
    try:
        messages = [{"role": "user", "content": "Say hello in French."}]
        opts = {"temperature": 0, "num_predict": 16}
        full = client.chat(model="toolsy3", messages=messages, tools=[WEATHER_TOOL], options=opts)
        parts = list(client.chat(model="toolsy3", messages=messages, tools=[WEATHER_TOOL], options=opts, stream=True))
        assert "".join(p.message.content for p in parts) == full.message.content
        if not full.message.tool_calls and not full.message.content.lstrip().startswith(("{", "[", "<")):
            assert len([p for p in parts if p.message.content]) > 1  # streamed, not held to the end
    finally:
        client.delete("toolsy3")


# --- what /api/create stored applies on /v1 too


def test_openai_endpoints_honour_created_settings(server, client, oai):
    template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\nMARKER{% endif %}")
    client.create(model="terse", from_=harness.smollm2_path(), system="Always answer in French.",
                  parameters={"num_predict": 3, "temperature": 0}, template=template)
    try:
        messages = [{"role": "user", "content": "Tell me a long story."}]
        r = oai.chat.completions.create(model="terse", messages=messages)
        assert r.usage.completion_tokens <= 3  # the stored num_predict
        native = client.chat(model="terse", messages=messages)
        assert r.choices[0].message.content == native.message.content  # same system, template, temperature
        assert r.usage.prompt_tokens == native.prompt_eval_count
        # The stored system message is in the prompt: the same as when the request gives it itself.
        explicit = oai.chat.completions.create(
            model="terse", messages=[{"role": "system", "content": "Always answer in French."}, *messages])
        assert explicit.usage.prompt_tokens == r.usage.prompt_tokens
        other = oai.chat.completions.create(model="terse", messages=[{"role": "system", "content": "Hi."}, *messages])
        assert other.usage.prompt_tokens < r.usage.prompt_tokens
        # The request's own fields still win.
        longer = oai.chat.completions.create(model="terse", messages=messages, max_tokens=6)
        assert longer.usage.completion_tokens > 3
        c = oai.completions.create(model="terse", prompt="Once upon a time")
        assert c.usage.completion_tokens <= 3
    finally:
        client.delete("terse")


# --- digests


def test_digests_are_the_files_sha256(server, client):
    with open(harness.smollm2_path(), "rb") as f:
        expected = hashlib.sha256(f.read()).hexdigest()
    listed = {m.model: m.digest for m in client.list().models}
    assert listed[f"{MODEL}:latest"] == expected
    client.generate(model=MODEL, prompt="", keep_alive=60)
    assert {m.model: m.digest for m in client.ps().models}[f"{MODEL}:latest"] == expected
    out = strata("list", env=env_for(server))
    assert expected[:12] in out.stdout


def test_tags_give_every_models_sha256_right_after_start(tmp_path):
    # The server hashes every model in the background from its start; a listing that comes first
    # waits for each digest rather than returning an empty or partial one.
    folder = harness.models_folder(str(tmp_path))
    with open(os.path.join(folder, "junk.gguf"), "wb") as f:
        f.write(bytes(range(256)) * 4099)  # not a model: listed with its digest all the same
    open(os.path.join(folder, "empty.gguf"), "wb").close()
    expected = {}
    for name in ("smollm2", "junk", "empty"):
        with open(os.path.join(folder, name + ".gguf"), "rb") as f:
            expected[f"{name}:latest"] = hashlib.sha256(f.read()).hexdigest()
    srv = harness.Server(folder)
    try:
        for _ in range(2):  # the second listing comes from the cache
            status, _, body = srv.request("GET", "/api/tags")
            assert status == 200
            assert {m["model"]: m["digest"] for m in json.loads(body)["models"]} == expected
    finally:
        srv.stop()


# --- the context a request asks for


def test_a_larger_num_ctx_plans_the_model_for_it(server, client):
    greedy = {"temperature": 0, "num_predict": 6}
    client.generate(model=MODEL, prompt="Name a color.", options=greedy)
    [before] = [m for m in client.ps().models if m.model == f"{MODEL}:latest"]
    assert before.context_length == 2048  # the harness's --ctx
    r = client.generate(model=MODEL, prompt="Name a color.", options={**greedy, "num_ctx": 4096})
    assert r.done and r.eval_count > 0
    [after] = [m for m in client.ps().models if m.model == f"{MODEL}:latest"]
    assert after.context_length == 4096
    assert after.size > before.size  # the larger KV cache is counted
    # Requests at the default context run on the larger plan; the model is not planned again.
    r = client.chat(model=MODEL, messages=[{"role": "user", "content": "Hi"}], options=greedy)
    assert r.done and r.eval_count > 0
    assert [m.context_length for m in client.ps().models if m.model == f"{MODEL}:latest"] == [4096]


def test_a_larger_num_ctx_waits_for_the_request_running_on_the_model(server, client):
    import threading

    long_one = client.generate(model=MODEL, prompt="Count to a hundred.", stream=True,
                               options={"temperature": 0, "num_predict": 64})
    first = next(long_one)  # it runs now; the one below re-plans the model once it is done
    answers = {}
    other = threading.Thread(target=lambda: answers.update(
        r=client.generate(model=MODEL, prompt="Hi", options={"temperature": 0, "num_predict": 4, "num_ctx": 6144})))
    other.start()
    rest = list(long_one)
    other.join(timeout=120)
    assert first.response is not None and rest[-1].done and rest[-1].eval_count > 0
    assert answers["r"].done and answers["r"].eval_count > 0
    assert [m.context_length for m in client.ps().models if m.model == f"{MODEL}:latest"] == [6144]
