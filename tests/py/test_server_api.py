"""`strata serve` against the official `ollama` and `openai` Python clients, on SmolLM2.

One server for the module (started once, killed at the end); a second, short-lived one checks
OLLAMA_HOST and the per-model queue bound. Generations are greedy and short (num_predict <= 24).
The `server`, `client` and `oai` fixtures come from conftest.py.
"""
import http.client
import json
import threading
import time

import pytest

import server_harness as harness

ollama = pytest.importorskip("ollama")
openai = pytest.importorskip("openai")

MODEL = harness.MODEL
GREEDY = {"temperature": 0, "num_predict": 16}


def ndjson(body):
    return [json.loads(line) for line in body.decode().splitlines() if line.strip()]


# --- basics


def test_root_version_and_content_types(server):
    status, headers, body = server.request("GET", "/")
    assert (status, body) == (200, b"Ollama is running")
    assert headers["content-type"].startswith("text/plain")
    status, _, body = server.request("HEAD", "/")
    assert status == 200 and body == b""
    status, headers, body = server.request("GET", "/api/version")
    assert status == 200 and headers["content-type"].startswith("application/json")
    assert isinstance(json.loads(body)["version"], str)


def test_list(client):
    models = client.list().models
    names = [m.model for m in models]
    assert f"{MODEL}:latest" in names
    m = models[names.index(f"{MODEL}:latest")]
    assert m.size > 50_000_000 and len(m.digest) == 64
    assert m.details.format == "gguf" and m.details.family == "llama"
    assert m.details.quantization_level == "Q4_1"
    assert m.details.parameter_size.endswith("M")


def test_show(client):
    info = client.show(MODEL)
    assert info.capabilities == ["completion"]
    assert info.details.family == "llama"
    assert info.modelinfo["general.architecture"] == "llama"
    assert info.modelinfo["llama.context_length"] > 0
    assert "<|im_start|>" in info.template
    assert "stop" in info.parameters
    assert client.show(f"{MODEL}:latest").details.family == "llama"


# --- generation


def test_generate_stream_matches_non_stream(client):
    prompt = "Name three colors of the rainbow."
    full = client.generate(model=MODEL, prompt=prompt, options=GREEDY, stream=False)
    assert full.done and full.done_reason in ("stop", "length")
    assert full.response and full.eval_count > 0 and full.prompt_eval_count > 0
    assert full.total_duration > 0 and full.eval_duration > 0 and full.load_duration is not None
    assert full.context and len(full.context) >= full.prompt_eval_count + full.eval_count

    parts = list(client.generate(model=MODEL, prompt=prompt, options=GREEDY, stream=True))
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    assert "".join(p.response for p in parts) == full.response
    assert parts[-1].eval_count == full.eval_count and parts[-1].context == full.context


def test_generate_raw_system_and_context(client):
    first = client.generate(model=MODEL, prompt="Hello", system="Answer in one word.", options=GREEDY, stream=False)
    assert first.response
    again = client.generate(model=MODEL, prompt="And again?", context=first.context, options=GREEDY, stream=False)
    assert again.prompt_eval_count > len(first.context)
    raw = client.generate(model=MODEL, prompt="The capital of France is", raw=True,
                          options={"temperature": 0, "num_predict": 4}, stream=False)
    assert raw.eval_count <= 4 and raw.response


def test_generate_options(client):
    r = client.generate(model=MODEL, prompt="Count from one to twenty in words.", stream=False,
                        options={"temperature": 0.7, "top_k": 20, "top_p": 0.9, "min_p": 0.05, "seed": 7,
                                 "num_predict": 5, "repeat_penalty": 1.2, "repeat_last_n": 32,
                                 "presence_penalty": 0.1, "frequency_penalty": 0.1, "num_thread": 2,
                                 "num_ctx": 1024, "unknown_option": True})
    assert r.eval_count <= 5 and r.done_reason == "length"
    again = client.generate(model=MODEL, prompt="Count from one to twenty in words.", stream=False,
                            options={"temperature": 0.7, "seed": 7, "num_predict": 5, "num_ctx": 1024})
    same = client.generate(model=MODEL, prompt="Count from one to twenty in words.", stream=False,
                           options={"temperature": 0.7, "seed": 7, "num_predict": 5, "num_ctx": 1024})
    assert again.response == same.response  # a seed makes sampling repeatable
    stopped = client.generate(model=MODEL, prompt="Count from one to ten: one, two,", raw=True, stream=False,
                              options={"temperature": 0, "num_predict": 24, "stop": [","]})
    assert "," not in stopped.response and stopped.done_reason == "stop"


def test_chat_stream_matches_non_stream(client):
    messages = [{"role": "system", "content": "You are brief."},
                {"role": "user", "content": "What is the capital of France?"}]
    full = client.chat(model=MODEL, messages=messages, options=GREEDY, stream=False)
    assert full.message.role == "assistant" and full.message.content
    assert full.done and full.eval_count > 0 and full.prompt_eval_count > 0
    parts = list(client.chat(model=MODEL, messages=messages, options=GREEDY, stream=True))
    assert parts[-1].done and parts[-1].done_reason == full.done_reason
    assert all(p.message.role == "assistant" for p in parts)
    assert "".join(p.message.content for p in parts) == full.message.content


def test_ps_and_keep_alive(client):
    client.generate(model=MODEL, prompt="")  # loads
    ps = client.ps().models
    assert [m.model for m in ps] == [f"{MODEL}:latest"] and ps[0].context_length > 0 and ps[0].size > 0
    r = client.generate(model=MODEL, prompt="", keep_alive=0)
    assert r.done and r.done_reason == "unload"
    assert client.ps().models == []
    r = client.chat(model=MODEL, messages=[])
    assert r.done and r.done_reason == "load"
    assert len(client.ps().models) == 1


# --- errors


def test_unknown_model_is_404(client):
    for call in (lambda: client.generate(model="no-such-model", prompt="hi", stream=False),
                 lambda: list(client.generate(model="no-such-model", prompt="hi", stream=True)),
                 lambda: client.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}]),
                 lambda: client.show("no-such-model")):
        with pytest.raises(ollama.ResponseError) as e:
            call()
        assert e.value.status_code == 404 and "not found" in e.value.error


def test_bad_input_is_400(client, server):
    with pytest.raises(ollama.ResponseError) as e:
        client.generate(model="../outside", prompt="hi")
    assert e.value.status_code == 400 and "invalid model name" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        client.generate(model=MODEL, prompt="describe", images=["aGVsbG8="], stream=False)
    assert e.value.status_code == 400 and "image" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model=MODEL, messages=[{"role": "user", "content": "hi"}], options={"temperature": "hot"})
    assert e.value.status_code == 400 and "temperature" in e.value.error

    bad = [
        (b"{not json", "invalid JSON"),
        (b"[1, 2]", "object"),
        (b"", "body"),
        (json.dumps({"model": MODEL, "prompt": 5}), "prompt"),
        (json.dumps({"model": MODEL, "prompt": "hi", "stream": "yes"}), "stream"),
        (json.dumps({"model": 7, "prompt": "hi"}), "model"),
        (json.dumps({"model": MODEL, "prompt": "hi", "options": {"num_predict": "many"}}), "num_predict"),
        (json.dumps({"model": MODEL, "prompt": "hi", "options": [1]}), "options"),
        (json.dumps({"model": MODEL, "prompt": "hi", "context": ["a"]}), "context"),
        (json.dumps({"model": "../../etc/passwd", "prompt": "hi"}), "invalid model name"),
        (json.dumps({"prompt": "hi"}), "model is required"),
    ]
    for body, word in bad:
        status, headers, data = server.request("POST", "/api/generate", body=body,
                                               headers={"Content-Type": "application/json"})
        assert status == 400, (body, data)
        assert headers["content-type"].startswith("application/json")
        assert word in json.loads(data)["error"], (body, data)
    status, _, data = server.request("POST", "/api/chat", body=json.dumps({"model": MODEL, "messages": "hi"}))
    assert status == 400 and "messages" in json.loads(data)["error"]
    status, _, data = server.request("POST", "/api/chat", body=json.dumps({"model": MODEL, "messages": [{"content": "x"}]}))
    assert status == 400 and "role" in json.loads(data)["error"]
    status, headers, data = server.request("GET", "/api/nothing-here")
    assert status == 404 and "error" in json.loads(data)
    status, _, data = server.request("POST", "/api/generate", body=json.dumps({"model": MODEL, "prompt": "hi", "format": "xml"}))
    assert status == 400 and "format" in json.loads(data)["error"]
    status, _, data = server.request("POST", "/api/generate", body=b"x" * (17 << 20))
    assert status == 413 and "error" in json.loads(data)


# --- OpenAI


def test_openai_models(oai):
    ids = [m.id for m in oai.models.list().data]
    assert f"{MODEL}:latest" in ids
    assert oai.models.retrieve(MODEL).id == f"{MODEL}:latest"


def test_openai_chat_stream_and_non_stream(oai):
    messages = [{"role": "user", "content": "Say hello to the world."}]
    full = oai.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=16)
    assert full.object == "chat.completion" and full.choices[0].message.role == "assistant"
    text = full.choices[0].message.content
    assert text and full.choices[0].finish_reason in ("stop", "length")
    assert full.usage.completion_tokens > 0 and full.usage.prompt_tokens > 0
    assert full.usage.total_tokens == full.usage.prompt_tokens + full.usage.completion_tokens

    stream = oai.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=16, stream=True,
                                         stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [full.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_openai_completions_and_sse_framing(oai, server):
    full = oai.completions.create(model=MODEL, prompt="The sky is", temperature=0, max_tokens=8)
    assert full.object == "text_completion" and full.choices[0].text and full.usage.completion_tokens <= 8
    status, headers, body = server.request("POST", "/v1/chat/completions", body={
        "model": MODEL, "stream": True, "max_tokens": 4, "temperature": 0,
        "messages": [{"role": "user", "content": "Hi"}]})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [e for e in body.decode().split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"


def test_openai_errors(oai, server):
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model=MODEL, messages=[])
    status, headers, data = server.request("POST", "/v1/chat/completions", body=b"{oops")
    err = json.loads(data)["error"]
    assert status == 400 and err["type"] == "invalid_request_error" and err["message"]


# --- concurrency, cancellation, health


def test_concurrent_clients_get_their_own_answers(server):
    prompts = ["What is 2 + 2?", "Name a fruit.", "What color is grass?", "Say goodbye."]
    options = {"temperature": 0, "num_predict": 12}
    expected = {p: ollama.Client(host=server.url).generate(model=MODEL, prompt=p, options=options, stream=False).response
                for p in prompts}
    results, errors = {}, []

    def worker(p, stream):
        try:
            c = ollama.Client(host=server.url, timeout=60)
            if stream:
                results[(p, stream)] = "".join(x.response for x in c.generate(model=MODEL, prompt=p, options=options,
                                                                               stream=True))
            else:
                results[(p, stream)] = c.generate(model=MODEL, prompt=p, options=options, stream=False).response
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(p, s)) for p in prompts for s in (False, True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    for (p, _), text in results.items():
        assert text == expected[p], p
    assert len(results) == 2 * len(prompts)


# A greedy raw prompt SmolLM2 keeps continuing (it counts on) for far longer than any test waits.
ENDLESS = {"prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "raw": True,
           "options": {"temperature": 0, "repeat_penalty": 1.0, "num_predict": 100000, "num_ctx": 8192}}


def stream_lines(server, path, body):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    return conn, resp


def test_client_disconnect_cancels_generation(server):
    conn, resp = stream_lines(server, "/api/generate", {
        "model": MODEL, **ENDLESS})
    assert resp.status == 200 and resp.getheader("Content-Type").startswith("application/x-ndjson")
    for _ in range(3):
        assert json.loads(resp.readline())["done"] is False
    conn.sock.shutdown(2)
    conn.close()
    # Generation on a model is serialized: this answers quickly only if the abandoned one stopped.
    t0 = time.time()
    status, _, body = server.request("POST", "/api/generate", body={
        "model": MODEL, "prompt": "Hi", "stream": False, "options": {"temperature": 0, "num_predict": 2}})
    assert status == 200 and json.loads(body)["done"]
    # Generous on a loaded machine, yet a stream left running would hold the model far longer:
    # ENDLESS runs until its 8192-token context is full (minutes at ~100 tok/s).
    assert time.time() - t0 < 60, "the disconnected stream kept generating"


def test_server_healthy_after_everything(server, client):
    assert server.alive()
    status, _, body = server.request("GET", "/")
    assert (status, body) == (200, b"Ollama is running")
    r = client.chat(model=MODEL, messages=[{"role": "user", "content": "Hi"}], options=GREEDY, stream=False)
    assert r.done and r.message.content


def test_ollama_host_and_queue_bound(tmp_path):
    folder = harness.models_folder(str(tmp_path / "models"))
    srv = harness.Server(folder, extra_args=["--max-queue", "1"], use_host_flag=False)  # listens via OLLAMA_HOST
    try:
        conn, resp = stream_lines(srv, "/api/generate", {
            "model": MODEL, **ENDLESS})
        assert resp.status == 200
        json.loads(resp.readline())  # the first request holds the model's only slot
        status, headers, data = srv.request("POST", "/api/generate", body={
            "model": MODEL, "prompt": "Hi", "stream": False, "options": {"num_predict": 2}})
        assert status == 503 and "busy" in json.loads(data)["error"]
        conn.close()
        assert srv.alive()
    finally:
        srv.stop()
