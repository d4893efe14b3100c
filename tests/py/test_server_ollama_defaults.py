"""Ollama's defaults and fields on `strata serve` (issue 18 item 4), through the official `ollama`
client where a client is involved: keep_alive's 5-minute default (--keep-alive, OLLAMA_KEEP_ALIVE),
`think` on models that can and cannot think, prompts over the context (truncated as Ollama does, or
refused with truncate false), /api/pull progress, /api/show's modelfile, and bodies sent as
`curl -d` sends them (application/x-www-form-urlencoded)."""
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import time

import pytest

import server_harness as harness
from server_harness import MODEL

ollama = pytest.importorskip("ollama")


def seconds_until(expires_at):
    t = expires_at if isinstance(expires_at, datetime.datetime) else datetime.datetime.fromisoformat(
        expires_at.replace("Z", "+00:00"))
    return (t - datetime.datetime.now(datetime.timezone.utc)).total_seconds()


def loaded(client, name=MODEL):
    return [m for m in client.ps().models if m.model == f"{name}:latest"]


# --- keep_alive


def test_keep_alive_defaults_to_five_minutes(client):
    client.generate(model=MODEL, prompt="")  # loads, with no keep_alive
    [m] = loaded(client)
    assert 270 < seconds_until(m.expires_at) <= 301, m.expires_at
    client.generate(model=MODEL, prompt="Hi", keep_alive="90s", options={"num_predict": 1})
    [m] = loaded(client)
    assert 60 < seconds_until(m.expires_at) <= 91, m.expires_at


def test_ollama_keep_alive_and_the_flag(tmp_path):
    folder = harness.models_folder(str(tmp_path))
    srv = harness.Server(folder, env={"OLLAMA_KEEP_ALIVE": "1h"})
    try:
        client = ollama.Client(host=srv.url, timeout=120)
        client.generate(model=MODEL, prompt="")
        [m] = loaded(client)
        assert 3500 < seconds_until(m.expires_at) <= 3601, m.expires_at
    finally:
        srv.stop()
    # The flag wins over the variable; a plain number is seconds.
    srv = harness.Server(folder, extra_args=["--keep-alive", "2"], env={"OLLAMA_KEEP_ALIVE": "1h"})
    try:
        client = ollama.Client(host=srv.url, timeout=120)
        client.generate(model=MODEL, prompt="")
        assert loaded(client)
        deadline = time.time() + 15
        while loaded(client) and time.time() < deadline:
            time.sleep(0.2)
        assert not loaded(client), "the model outlived its 2 s keep-alive"
    finally:
        srv.stop()
    bad = subprocess.run([harness.strata_bin(), "serve", "--models", folder, "--host", "127.0.0.1:1"],
                         capture_output=True, text=True, timeout=30, env={**os.environ, "OLLAMA_KEEP_ALIVE": "soon"})
    assert bad.returncode != 0 and "OLLAMA_KEEP_ALIVE" in bad.stderr, bad.stderr


# --- think

THINKING_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}")


def test_think_on_a_model_that_cannot_think(server, client):
    for think in (True, "high", "medium", "low"):
        with pytest.raises(ollama.ResponseError) as e:
            client.chat(model=MODEL, messages=[{"role": "user", "content": "Hi"}], think=think,
                        options={"num_predict": 1})
        assert e.value.status_code == 400 and f'"{MODEL}" does not support thinking' in e.value.error, e.value
        with pytest.raises(ollama.ResponseError) as e:
            client.generate(model=MODEL, prompt="Hi", think=think, options={"num_predict": 1})
        assert e.value.status_code == 400
    r = client.chat(model=MODEL, messages=[{"role": "user", "content": "Hi"}], think=False, options={"num_predict": 1})
    assert r.done
    for bad in ("max", 1, [True]):
        status, _, body = server.request("POST", "/api/chat", body={
            "model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "think": bad, "stream": False})
        assert status == 400 and "think" in json.loads(body)["error"], body
    assert "thinking" not in client.show(MODEL).capabilities


def test_think_on_a_model_that_can(client):
    client.create(model="thinker", from_=harness.smollm2_path(), template=THINKING_TEMPLATE)
    try:
        assert "thinking" in client.show("thinker").capabilities
        for think in (True, False, "high", None):
            r = client.chat(model="thinker", messages=[{"role": "user", "content": "Hi"}], think=think,
                            options={"num_predict": 2, "temperature": 0})
            assert r.done, think
        # think false renders the template's empty thinking block: more prompt tokens than think true.
        on = client.generate(model="thinker", prompt="Hi", think=True, options={"num_predict": 1})
        off = client.generate(model="thinker", prompt="Hi", think=False, options={"num_predict": 1})
        assert off.prompt_eval_count > on.prompt_eval_count, (on, off)
    finally:
        client.delete("thinker")


# --- prompts over the context


def long_conversation(turns=40):
    messages = [{"role": "system", "content": "You are a pirate named Bob."}]
    for i in range(turns):
        messages += [{"role": "user", "content": f"Tell me fact number {i} about the sea, please."},
                     {"role": "assistant", "content": "Arr, the sea is wide and deep and blue. " * 2}]
    return messages + [{"role": "user", "content": "What is your name?"}]


def test_a_conversation_over_the_context_loses_its_oldest_messages(server, client):
    messages = long_conversation()
    r = client.chat(model=MODEL, messages=messages, options={"num_ctx": 256, "num_predict": 2, "temperature": 0})
    assert r.done and 128 < r.prompt_eval_count < 256, r.prompt_eval_count
    assert "dropped its" in server.log_text()
    # truncate false: Ollama's 400.
    status, _, body = server.request("POST", "/api/chat", body={
        "model": MODEL, "messages": messages, "stream": False, "truncate": False,
        "options": {"num_ctx": 256, "num_predict": 2}})
    assert status == 400 and "exceeds the context length" in json.loads(body)["error"], body
    # A generate prompt over the context keeps its first num_keep tokens and its end.
    r = client.generate(model=MODEL, prompt="word " * 600, options={"num_ctx": 256, "num_predict": 1})
    assert r.done and r.prompt_eval_count == 255, r.prompt_eval_count


# --- /api/pull and /api/show


def test_pull_reports_digest_total_and_completed(server, client):
    path = os.path.realpath(harness.smollm2_path())
    size = os.path.getsize(path)
    events = list(client.pull(path, stream=True))
    stem = os.path.splitext(os.path.basename(path))[0]
    try:
        layers = [e for e in events if e.digest]
        assert layers, events
        digest = layers[-1].digest
        assert digest.startswith("sha256:") and len(digest) == 7 + 64
        assert layers[-1].total == size and layers[-1].completed == size
        assert events[-1].status == "success"
        with open(path, "rb") as f:
            assert digest == "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
        # Pulling a model already here reports the same layer.
        again = [e for e in client.pull(MODEL, stream=True) if e.digest]
        assert again and again[-1].digest == digest and again[-1].completed == size
    finally:
        client.delete(stem)


def test_show_modelfile_has_system_and_parameter_lines(server, client):
    client.create(model="terse2", from_=MODEL, system="Answer in one word.",
                  parameters={"temperature": 0.25, "num_ctx": 1024, "stop": ["END"]})
    try:
        modelfile = client.show("terse2").modelfile
        assert 'SYSTEM """Answer in one word."""' in modelfile, modelfile
        for line in ("PARAMETER temperature 0.25", "PARAMETER num_ctx 1024", 'PARAMETER stop "END"'):
            assert line in modelfile.splitlines(), modelfile
        # The modelfile is one /api/create takes back (the client's create no longer sends modelfiles).
        from_line = next(line for line in modelfile.splitlines() if line.startswith("FROM "))
        status, _, data = server.request("POST", "/api/create", body={
            "model": "terse3", "modelfile": modelfile.replace(from_line, "FROM terse2"), "stream": False})
        assert status == 200, data
        shown = client.show("terse3")  # the client's ShowResponse has no "system": read the modelfile
        assert 'SYSTEM """Answer in one word."""' in shown.modelfile and "temperature 0.25" in shown.parameters
        client.delete("terse3")
    finally:
        client.delete("terse2")


# --- bodies whatever their content type


def test_form_encoded_bodies_over_8_kib(server, tmp_path):
    body = json.dumps({"model": MODEL, "prompt": "Say hi. " + " " * 9000, "stream": False,
                       "options": {"num_predict": 1}})
    assert len(body) > 8192
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, data = server.request("POST", "/api/generate", body=body, headers=form)
    assert status == 200 and json.loads(data)["done"], data
    # A route without a body (or no route) answers as it would without the type, not 413.
    status, _, data = server.request("POST", "/api/tags", body=body, headers=form)
    assert status == 404, data
    status, _, data = server.request("POST", "/api/chat", body="x" * (17 << 20), headers=form)
    assert status == 413 and "16 MiB" in json.loads(data)["error"], data[:200]
    if shutil.which("curl"):
        f = tmp_path / "body.json"
        f.write_text(body)
        out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", f"{server.url}/api/generate", "-d", f"@{f}"],
                             capture_output=True, text=True, timeout=120)
        text, code = out.stdout.rsplit("\n", 1)
        assert code == "200" and json.loads(text)["done"], out.stdout
