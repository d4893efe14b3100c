"""`strata serve` beyond generation, on SmolLM2 with the official clients: embeddings, structured
output (format json / JSON schema, OpenAI response_format), model management (create, copy,
delete, pull), /metrics, and the `strata list` / `strata ps` commands. The `server`, `client` and
`oai` fixtures come from conftest.py.
"""
import json
import math
import os
import subprocess

import pytest

import server_harness as harness

ollama = pytest.importorskip("ollama")
openai = pytest.importorskip("openai")

MODEL = harness.MODEL
GREEDY = {"temperature": 0, "num_predict": 120}


def norm(v):
    return math.sqrt(sum(x * x for x in v))


# --- embeddings


def test_embed_shapes_normalization_and_determinism(client):
    r = client.embed(model=MODEL, input=["The cat sat on the mat.", "Quarterly revenue grew 4%.", "The cat sat on the mat."])
    assert len(r.embeddings) == 3
    assert all(len(v) == 576 for v in r.embeddings)  # SmolLM2-135M: n_embd 576
    assert all(abs(norm(v) - 1) < 1e-4 for v in r.embeddings)
    assert r.embeddings[0] == r.embeddings[2]
    assert r.embeddings[0] != r.embeddings[1]
    assert r.prompt_eval_count > 6 and r.total_duration > 0 and r.load_duration is not None
    one = client.embed(model=MODEL, input="The cat sat on the mat.")
    assert one.embeddings == [r.embeddings[0]]


def test_embed_does_not_disturb_chat(client):
    messages = [{"role": "user", "content": "Name a fruit."}]
    opts = {"temperature": 0, "num_predict": 12}
    before = client.chat(model=MODEL, messages=messages, options=opts).message.content
    client.embed(model=MODEL, input="something else entirely")
    after = client.chat(model=MODEL, messages=messages, options=opts)
    assert after.message.content == before
    assert after.prompt_eval_count > 0


def test_legacy_embeddings_are_not_normalized(client):
    legacy = client.embeddings(model=MODEL, prompt="The cat sat on the mat.").embedding
    normed = client.embed(model=MODEL, input="The cat sat on the mat.").embeddings[0]
    assert len(legacy) == 576 and abs(norm(legacy) - 1) > 1e-3
    scaled = [x / norm(legacy) for x in legacy]
    assert max(abs(a - b) for a, b in zip(scaled, normed)) < 1e-4


def test_openai_embeddings(oai, client):
    r = oai.embeddings.create(model=MODEL, input=["hello world", "goodbye moon"])  # base64 on the wire
    assert [d.index for d in r.data] == [0, 1] and r.object == "list"
    assert all(len(d.embedding) == 576 for d in r.data)
    assert r.usage.prompt_tokens > 0
    ref = client.embed(model=MODEL, input="hello world").embeddings[0]
    assert max(abs(a - b) for a, b in zip(r.data[0].embedding, ref)) < 1e-6
    floats = oai.embeddings.create(model=MODEL, input="hello world", encoding_format="float")
    assert max(abs(a - b) for a, b in zip(floats.data[0].embedding, ref)) < 1e-6


def test_embed_errors(server, client):
    with pytest.raises(ollama.ResponseError) as e:
        client.embed(model="no-such-model", input="x")
    assert e.value.status_code == 404
    status, _, body = server.request("POST", "/api/embed", body={"model": MODEL, "input": 5})
    assert status == 400 and "input" in json.loads(body)["error"]
    # An input over the context (options.num_ctx, as Ollama takes it; small, so the test is quick).
    long_text = "word " * 300
    small = {"num_ctx": 128}
    status, _, body = server.request("POST", "/api/embed", body={"model": MODEL, "input": long_text, "truncate": False,
                                                                "options": small})
    assert status == 400 and "context of 128" in json.loads(body)["error"], body
    r = client.embed(model=MODEL, input=long_text, options=small)
    assert len(r.embeddings[0]) == 576 and r.prompt_eval_count == 128


# --- structured output

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "height": {"type": "number"},
        "pets": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        "alive": {"type": "boolean"},
        "mood": {"enum": ["happy", "sad"]},
        "address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "integer"}},
                    "required": ["city"]},
    },
    "required": ["name", "age", "alive"],
}


def check(value, schema):
    """A small JSON-schema validator for what the tests use."""
    if "enum" in schema:
        assert value in schema["enum"], (value, schema)
        return
    t = schema.get("type")
    if t == "object":
        assert isinstance(value, dict), value
        for key in schema.get("required", []):
            assert key in value, (key, value)
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                check(value[key], sub)
    elif t == "array":
        assert isinstance(value, list), value
        assert len(value) <= schema.get("maxItems", len(value))
        for item in value:
            check(item, schema.get("items", {}))
    elif t == "string":
        assert isinstance(value, str), value
    elif t == "integer":
        assert isinstance(value, int) and not isinstance(value, bool), value
    elif t == "number":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), value
    elif t == "boolean":
        assert isinstance(value, bool), value


def test_format_json_generate(client):
    for stream in (False, True):
        if stream:
            text = "".join(p.response for p in client.generate(
                model=MODEL, prompt="Describe a cat.", format="json", options=GREEDY, stream=True))
        else:
            r = client.generate(model=MODEL, prompt="Describe a cat.", format="json", options=GREEDY)
            assert r.done_reason == "stop"
            text = r.response
        assert isinstance(json.loads(text), dict), text


def test_format_schema_chat(client):
    messages = [{"role": "user", "content": "Invent a person and describe them."}]
    for opts in (GREEDY, {"temperature": 0.9, "seed": 7, "num_predict": 400}):
        r = client.chat(model=MODEL, messages=messages, format=PERSON, options=opts)
        check(json.loads(r.message.content), PERSON)
        parts = list(client.chat(model=MODEL, messages=messages, format=PERSON, options=opts, stream=True))
        streamed = "".join(p.message.content for p in parts)
        assert streamed == r.message.content
        check(json.loads(streamed), PERSON)


def test_format_pydantic_style_refs(client):
    schema = {
        "$defs": {"Pet": {"type": "object", "properties": {"kind": {"type": "string"}, "legs": {"type": "integer"}},
                          "required": ["kind", "legs"]}},
        "type": "object",
        "properties": {"owner": {"type": "string"}, "pet": {"$ref": "#/$defs/Pet"}},
        "required": ["owner", "pet"],
    }
    r = client.generate(model=MODEL, prompt="Describe someone and their pet.", format=schema, options=GREEDY)
    value = json.loads(r.response)
    check(value, {**schema, "properties": {"owner": {"type": "string"}, "pet": schema["$defs"]["Pet"]}})


def test_openai_response_format(oai):
    messages = [{"role": "user", "content": "Name a city. Answer with a short JSON object."}]
    r = oai.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=300,
                                    response_format={"type": "json_object"})
    assert isinstance(json.loads(r.choices[0].message.content), dict)
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
              "required": ["city", "population"]}
    r = oai.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=200,
                                    response_format={"type": "json_schema",
                                                     "json_schema": {"name": "city", "schema": schema}})
    check(json.loads(r.choices[0].message.content), schema)


# --- model management


def test_create_copy_delete(server, client):
    src = harness.smollm2_path()
    client.create(model="tiny", from_=src, system="You are terse.", parameters={"temperature": 0, "num_predict": 5})
    names = [m.model for m in client.list().models]
    assert "tiny:latest" in names
    with open(os.path.join(server.folder, "tiny.json")) as f:
        sidecar = json.load(f)
    assert sidecar["system"] == "You are terse." and sidecar["parameters"]["num_predict"] == 5
    r = client.generate(model="tiny", prompt="Tell me a long story.")
    assert r.eval_count <= 5  # the stored parameters apply
    status, _, body = server.request("POST", "/api/create", body={
        "model": "tiny2", "modelfile": f"FROM {src}\nPARAMETER num_predict 3\nPARAMETER stop \"\\n\"\nSYSTEM \"\"\"Be brief.\"\"\"\n",
        "stream": False})
    assert status == 200 and json.loads(body)["status"] == "success", body
    client.copy("tiny", "tiny-copy")
    assert client.show("tiny-copy").details.family == "llama"
    status, _, body = server.request("POST", "/api/show", body={"model": "tiny2"})
    shown = json.loads(body)
    assert shown["system"] == "Be brief." and "num_predict 3" in shown["parameters"]
    for name in ("tiny", "tiny2", "tiny-copy"):
        client.delete(name)
    names = [m.model for m in client.list().models]
    assert not any(n.startswith("tiny") for n in names) and f"{MODEL}:latest" in names
    assert os.path.exists(src) and not os.path.exists(os.path.join(server.folder, "tiny.json"))
    with pytest.raises(ollama.ResponseError) as e:
        client.delete("tiny")
    assert e.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as e:
        client.copy(MODEL, "../escape")
    assert e.value.status_code == 400
    with pytest.raises(ollama.ResponseError) as e:
        client.create(model="bad", from_="/nonexistent/file.gguf")
    assert e.value.status_code == 400


def test_pull(client, server):
    with pytest.raises(ollama.ResponseError) as e:
        client.pull("llama3.2")
    assert e.value.status_code == 404 and "registry" in e.value.error
    assert client.pull(MODEL).status == "success"  # already here


def test_metrics(server, client):
    client.generate(model=MODEL, prompt="Hi", options={"temperature": 0, "num_predict": 4})
    status, headers, body = server.request("GET", "/metrics")
    text = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert "# TYPE strata_generated_tokens_total counter" in text
    values = {line.split(" ")[0]: float(line.split(" ")[-1]) for line in text.splitlines() if line and line[0] != "#"}
    assert values["strata_generated_tokens_total"] > 0 and values["strata_prompt_tokens_total"] > 0
    assert values["strata_loaded_models"] >= 1
    assert values['strata_http_requests_total{method="POST",route="/api/generate",status="200"}'] >= 1
    # A CPU-only model has no GPU tier to report (as --stats and /api/ps leave it out).
    assert f'strata_tier_streaming{{model="{MODEL}"}}' in text and "strata_tier_gpu_" not in text


# --- CLI


def test_list_and_ps_commands(server, client):
    client.generate(model=MODEL, prompt="Hi", options={"temperature": 0, "num_predict": 2})
    env = dict(os.environ, OLLAMA_HOST=server.url)
    out = subprocess.run([harness.strata_bin(), "list"], capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    assert any(line.startswith(f"{MODEL}:latest") and "MB" in line for line in lines[1:])
    out = subprocess.run([harness.strata_bin(), "ps"], capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:4] == ["NAME", "ID", "SIZE", "PROCESSOR"]
    assert any(line.startswith(f"{MODEL}:latest") and "100% CPU" in line for line in lines[1:])
    env["OLLAMA_HOST"] = "127.0.0.1:1"  # nothing listens there
    out = subprocess.run([harness.strata_bin(), "list"], capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode != 0 and "could not connect" in out.stderr


# --- tools

WEATHER_TOOL = harness.WEATHER_TOOL


def test_tools(client, tools_model):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
    assert e.value.status_code == 400 and "does not support tools" in e.value.error
    assert "tools" in client.show(tools_model).capabilities
    # The format forces the answer into a call, so the parser's path is exercised every time.
    call_schema = {"type": "object", "properties": {
        "name": {"enum": ["get_weather"]},
        "arguments": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
        "required": ["name", "arguments"]}
    for stream in (False, True):
        opts = {"temperature": 0, "num_predict": 60}
        if stream:
            parts = list(client.chat(model=tools_model, messages=messages, tools=[WEATHER_TOOL], format=call_schema,
                                     options=opts, stream=True))
            assert parts[-1].done
            calls = [c for p in parts for c in (p.message.tool_calls or [])]
        else:
            r = client.chat(model=tools_model, messages=messages, tools=[WEATHER_TOOL], format=call_schema,
                            options=opts)
            calls = r.message.tool_calls
        assert len(calls) == 1 and calls[0].function.name == "get_weather"
        assert isinstance(calls[0].function.arguments["city"], str)
    oai = openai.OpenAI(base_url=client._client.base_url.__str__().rstrip("/") + "/v1", api_key="x", max_retries=0)
    for stream in (False, True):
        kwargs = dict(model=tools_model, messages=messages, tools=[WEATHER_TOOL], temperature=0, max_tokens=60,
                      response_format={"type": "json_schema", "json_schema": {"name": "call", "schema": call_schema}})
        if stream:
            chunks = list(oai.chat.completions.create(stream=True, **kwargs))
            oai_calls = [c for ch in chunks if ch.choices for c in (ch.choices[0].delta.tool_calls or [])]
            assert chunks[-1].choices[0].finish_reason == "tool_calls"
        else:
            r = oai.chat.completions.create(**kwargs)
            assert r.choices[0].finish_reason == "tool_calls"
            oai_calls = r.choices[0].message.tool_calls
        assert len(oai_calls) == 1 and oai_calls[0].function.name == "get_weather"
        assert "city" in json.loads(oai_calls[0].function.arguments)
    plain = client.chat(model=tools_model, messages=messages, tools=[WEATHER_TOOL], options={"temperature": 0, "num_predict": 8})
    assert plain.message.content is not None
