"""`strata serve` against a hostile client (issue 17), on loopback only, every loop bounded.

One case per class of attack that once crashed, stalled or turned the server against the
machine (unbounded recursion, unbounded work in templates and schemas, files outside the models
folder, cross-site requests, exhaustion, and the smaller items), on each endpoint family (Ollama,
/v1, management). After each case the server must be alive, its RSS and thread count bounded,
and a greedy answer the same as before any attack.

The `server` fixture comes from conftest.py (one server for the module).
"""
import json
import os
import select
import socket
import subprocess
import threading
import time

import pytest

import server_harness as harness

MODEL = harness.MODEL
GREEDY = {"temperature": 0, "num_predict": 8}

# The server's limits (src/server/limits.h, template/render.h, runtime/grammar.h) as they show in
# its messages.
MAX_JSON_DEPTH = 128
MAX_BODY_MIB = 16
HTTP_THREADS = 128
PENDING_CONNECTIONS = 128
HEADER_TIMEOUT_S = 10
READ_TIMEOUT_S = 5

# After any attack: well under what the attacks once took (gigabytes, 1,000 threads).
MAX_RSS_BYTES = 1536 << 20
MAX_THREADS = HTTP_THREADS + 2 * (os.cpu_count() or 1) + 32

DEEP = 100_000  # arrays nested this deep once overflowed the stack


def proc_status(server):
    fields = {}
    with open(f"/proc/{server.proc.pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["Threads"])


def greedy_answer(server):
    status, _, body = server.request("POST", "/api/generate", body={
        "model": MODEL, "prompt": "Name a color.", "stream": False, "options": GREEDY})
    assert status == 200, body
    return json.loads(body)["response"]


@pytest.fixture(scope="module")
def baseline(server):
    return greedy_answer(server)


@pytest.fixture(autouse=True)
def still_healthy(server, baseline):
    """Every case ends with the server alive, bounded, and answering as before."""
    yield
    assert server.alive(), server.log_text()[-3000:]
    rss, threads = proc_status(server)
    assert rss < MAX_RSS_BYTES, f"RSS {rss >> 20} MiB"
    assert threads < MAX_THREADS, f"{threads} threads"
    assert greedy_answer(server) == baseline


def error_of(body):
    err = json.loads(body)["error"]
    return err["message"] if isinstance(err, dict) else err


def deep(n=DEEP):
    return "[" * n + "]" * n


# --- unbounded recursion: nesting in every body, on every endpoint


BODY_ENDPOINTS = [  # (method, path, a body whose "X" field is replaced by deep nesting)
    ("POST", "/api/generate", '{"model": "smollm2", "prompt": "hi", "format": X}'),
    ("POST", "/api/chat", '{"model": "smollm2", "messages": [], "tools": X}'),
    ("POST", "/api/show", '{"model": "smollm2", "x": X}'),
    ("POST", "/api/embed", '{"model": "smollm2", "input": X}'),
    ("POST", "/api/embeddings", '{"model": "smollm2", "prompt": X}'),
    ("POST", "/v1/chat/completions", '{"model": "smollm2", "messages": X}'),
    ("POST", "/v1/completions", '{"model": "smollm2", "prompt": X}'),
    ("POST", "/v1/embeddings", '{"model": "smollm2", "input": X}'),
    ("POST", "/api/create", '{"model": "x", "from": "smollm2", "parameters": X}'),
    ("POST", "/api/copy", '{"source": X, "destination": "y"}'),
    ("POST", "/api/pull", '{"model": X}'),
    ("DELETE", "/api/delete", '{"model": X}'),
]


@pytest.mark.parametrize("method,path,template", BODY_ENDPOINTS, ids=[e[1] for e in BODY_ENDPOINTS])
def test_deep_nesting_is_refused_on_every_endpoint(server, method, path, template):
    for nested in (deep(), "{\"a\":" * DEEP + "1" + "}" * DEEP, "[" * DEEP):  # closed, objects, unclosed
        status, _, body = server.request(method, path, body=template.replace("X", nested))
        assert status == 400, body[:300]
        assert f"more than {MAX_JSON_DEPTH} deep" in error_of(body)
    # Within the limit is parsed as usual: the request fails or not on its merits, not its depth.
    status, _, body = server.request(method, path, body=template.replace("X", deep(MAX_JSON_DEPTH - 4)))
    if status >= 400:
        assert status != 500 and "deep" not in error_of(body), body[:300]


# --- unbounded work (and recursion) in templates and schemas

HOSTILE_TEMPLATES = {
    "macro-recursion": ("{% macro f(x) %}{{ f(x) }}{% endmacro %}{{ f(1) }}", "called more than 64 deep"),
    "nested-loops": ("{% for a in range(100000) %}{% for b in range(100000) %}{{ '' }}{% endfor %}{% endfor %}",
                     "steps"),
    "string-doubling": ("{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}"
                        "{% endfor %}{{ ns.s }}", "MiB"),
    "string-repeat": ("{{ 'x' * 10**11 }}", "string repetition"),
    "list-repeat": ("{{ [[ 'x' * 1000000 ]] * 1000000 }}", "MiB"),
    "huge-join": ("{{ ['a', 'b', 'c']|join('y' * 60000000) }}", "join"),
    "self-containing": ("{% set ns = namespace(a=1) %}{% set ns.me = ns %}{{ ns }}", "nests more than"),
    "huge-range": ("{{ range(10**12)|length }}", "range"),
}


@pytest.fixture(scope="module")
def hostile_models(server):
    for name, (template, _) in HOSTILE_TEMPLATES.items():
        status, _, body = server.request("POST", "/api/create", body={
            "model": "evil-" + name, "from": MODEL, "template": template, "stream": False})
        assert status == 200, body
    yield
    for name in HOSTILE_TEMPLATES:
        server.request("DELETE", "/api/delete", body={"model": "evil-" + name})


@pytest.mark.parametrize("name", list(HOSTILE_TEMPLATES))
@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
def test_hostile_templates_end_with_a_clear_error(server, hostile_models, name, path):
    t0 = time.time()
    status, _, body = server.request("POST", path, body={
        "model": "evil-" + name, "messages": [{"role": "user", "content": "hi"}], "stream": False,
        "options": {"num_predict": 2}, "max_tokens": 2})
    assert status == 400, body[:300]
    message = error_of(body)
    assert "template" in message and "limit" in message and HOSTILE_TEMPLATES[name][1] in message, message
    assert time.time() - t0 < 30


def test_a_template_nested_too_deep_to_parse_falls_back(server):
    template = "{{ " + "(" * DEEP + "1" + ")" * DEEP + " }}"
    status, _, body = server.request("POST", "/api/create", body={
        "model": "evil-parens", "from": MODEL, "template": template, "stream": False})
    assert status == 200, body
    try:  # the model's built-in format takes over, as for any template the engine cannot parse
        status, _, body = server.request("POST", "/api/chat", body={
            "model": "evil-parens", "messages": [{"role": "user", "content": "hi"}], "stream": False,
            "options": GREEDY})
        assert status == 200, body
    finally:
        server.request("DELETE", "/api/delete", body={"model": "evil-parens"})


def test_a_template_over_the_size_limit_is_refused(server):
    status, _, body = server.request("POST", "/api/create", body={
        "model": "evil-big", "from": MODEL, "template": "x" * ((1 << 20) + 1), "stream": False})
    assert status == 400 and "KiB" in error_of(body)


SELF_REFERRING_SCHEMA = {"type": "object", "properties": {k: {"$ref": "#"} for k in "abcdefgh"}}  # ~100 bytes


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate", "/v1/chat/completions"])
def test_a_schema_expanding_without_end_is_refused(server, path):
    body = {"model": MODEL, "stream": False, "messages": [{"role": "user", "content": "hi"}], "prompt": "hi"}
    if path.startswith("/v1"):
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "x", "schema": SELF_REFERRING_SCHEMA}}
    else:
        body["format"] = SELF_REFERRING_SCHEMA
    t0 = time.time()
    status, _, data = server.request("POST", path, body=body)
    assert status == 400 and "$ref" in error_of(data) and "limit" in error_of(data), data
    assert time.time() - t0 < 10


# --- files outside the models folder


def test_pull_takes_no_file_from_outside(server):
    answers = set()
    for path in ("/etc/passwd", "/etc/no-such-file.gguf", "/etc", "../../etc/passwd"):
        status, _, body = server.request("POST", "/api/pull", body={"model": path, "stream": False})
        assert status == 404 and b"root:" not in body
        answers.add(error_of(body).replace(path, "PATH"))
    assert len(answers) == 1, answers  # missing and forbidden look the same
    assert not os.path.exists(os.path.join(server.folder, "passwd.gguf"))
    assert not [f for f in os.listdir(server.folder) if f.startswith("passwd")]


def test_create_reads_no_file_from_outside(server):
    # A non-GGUF file inside the models folder, and a link in it that leads outside.
    fake = os.path.join(server.folder, "notes.txt")
    with open(fake, "w") as f:
        f.write("secret text")
    link = os.path.join(server.folder, "escape.gguf.lnk")
    if not os.path.lexists(link):
        os.symlink("/etc/passwd", link)
    answers = set()
    for path in ("/etc/passwd", "/etc/no-such-file.gguf", fake, link, "/proc/self/environ"):
        status, _, body = server.request("POST", "/api/create", body={"model": "stolen", "from": path, "stream": False})
        assert status == 400, body
        assert b"root:" not in body and b"secret" not in body and b"PATH=" not in body
        answers.add(error_of(body).replace(path, "PATH"))
    assert len(answers) == 1, answers
    status, _, body = server.request("POST", "/api/create", body={
        "model": "stolen", "modelfile": "FROM /etc/passwd\n", "stream": False})
    assert status == 400 and error_of(body).replace("/etc/passwd", "PATH") in answers
    assert not os.path.exists(os.path.join(server.folder, "stolen.gguf"))
    os.remove(fake)
    os.remove(link)


# --- cross-site requests


@pytest.mark.parametrize("path,body", [
    ("/api/create", {"model": "x", "from": MODEL}),
    ("/api/pull", {"model": MODEL}),
    ("/api/generate", {"model": MODEL, "prompt": "hi"}),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}),
])
def test_foreign_origins_and_hosts_are_refused(server, path, body):
    text = json.dumps(body)
    for headers in ({"Origin": "http://evil.example", "Content-Type": "text/plain"},
                    {"Origin": "null"},
                    {"Host": "evil.example"},
                    {"Host": f"rebind.example:{server.port}"}):
        status, _, data = server.request("POST", path, body=text, headers=headers)
        assert status == 403, (headers, data)
        assert "not allowed" in error_of(data)
    assert not os.path.exists(os.path.join(server.folder, "x.gguf"))


def test_allowed_origins_and_preflight(server):
    status, headers, _ = server.request("GET", "/api/version", headers={"Origin": "http://localhost:3000"})
    assert status == 200 and headers["access-control-allow-origin"] == "http://localhost:3000"
    status, headers, _ = server.request("GET", "/api/tags", headers={"Origin": "app://obsidian.md"})
    assert status == 200
    status, headers, _ = server.request("GET", "/api/version", headers={"Host": "localhost", "Origin": "http://localhost"})
    assert status == 200
    status, headers, _ = server.request("OPTIONS", "/api/chat", headers={
        "Origin": "http://127.0.0.1:8080", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert status == 204 and "POST" in headers["access-control-allow-methods"]
    assert headers["access-control-allow-origin"] == "http://127.0.0.1:8080"
    status, _, _ = server.request("OPTIONS", "/api/chat", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert status == 403


def test_ollama_origins_extends_the_allow_list(tmp_path):
    folder = harness.models_folder(str(tmp_path / "models"))
    srv = harness.Server(folder, env={"OLLAMA_ORIGINS": "https://ok.example, chrome-extension://*"})
    try:
        for origin, expected in (("https://ok.example", 200), ("chrome-extension://abc", 200),
                                 ("http://localhost:5173", 200), ("https://evil.example", 403)):
            status, _, _ = srv.request("GET", "/api/version", headers={"Origin": origin})
            assert status == expected, origin
    finally:
        srv.stop()


# --- exhaustion


def raw_exchange(server, data, read_timeout=30, send_gap=None):
    """Sends raw bytes (a list: one piece per send, send_gap seconds apart) and reads until the
    server closes or read_timeout; returns (reply bytes, seconds)."""
    s = socket.create_connection((server.host, server.port))
    s.settimeout(read_timeout)
    t0 = time.time()
    reply = b""
    try:
        for k, piece in enumerate(data if isinstance(data, list) else [data]):
            if k and send_gap:
                time.sleep(send_gap)
            s.sendall(piece)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    except OSError:
        pass
    finally:
        s.close()
    return reply, time.time() - t0


def test_a_chunked_body_over_the_limit_is_cut_off(server):
    rss_before, _ = proc_status(server)
    s = socket.create_connection((server.host, server.port))
    s.settimeout(30)
    s.sendall(b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n")
    piece = b"%x\r\n" % (1 << 20) + b" " * (1 << 20) + b"\r\n"

    def offer():  # 64 MiB offered; the server must stop reading at 16
        try:
            for _ in range(64):
                s.sendall(piece)
        except OSError:
            pass

    sender = threading.Thread(target=offer, daemon=True)
    sender.start()
    reply = b""
    try:
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    except OSError:
        pass
    s.close()
    sender.join(timeout=30)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert f"larger than {MAX_BODY_MIB} MiB".encode() in reply
    rss_after, _ = proc_status(server)
    assert rss_after - rss_before < 64 << 20


def test_a_body_over_the_limit_with_content_length(server):
    status, _, body = server.request("POST", "/v1/chat/completions", body=b" " * ((MAX_BODY_MIB << 20) + 1))
    assert status == 413 and f"{MAX_BODY_MIB} MiB" in error_of(body)


def test_num_thread_is_clamped_to_the_machine(server):
    _, threads_before = proc_status(server)
    for path, body in (("/api/generate", {"model": MODEL, "prompt": "Hi", "stream": False,
                                          "options": {"num_thread": 1024, "num_predict": 2}}),
                       ("/api/chat", {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "stream": False,
                                      "options": {"num_thread": 100000, "num_predict": 2}})):
        status, _, data = server.request("POST", path, body=body)
        assert status == 200, data
        _, threads = proc_status(server)
        assert threads <= threads_before + (os.cpu_count() or 1), threads


def test_a_non_streaming_generation_stops_when_its_client_leaves(server):
    endless = {"model": MODEL, "prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "raw": True, "stream": False,
               "options": {"temperature": 0, "repeat_penalty": 1.0, "num_predict": 100000, "num_ctx": 8192}}
    data = json.dumps(endless).encode()
    s = socket.create_connection((server.host, server.port))
    s.sendall(b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(data) + data)
    time.sleep(2)  # generating
    s.close()
    t0 = time.time()
    # The model's queue is free again within a token or two: a short request is not stuck behind it.
    status, _, body = server.request("POST", "/api/generate", body={
        "model": MODEL, "prompt": "Hi", "stream": False, "options": {"temperature": 0, "num_predict": 2,
                                                                      "num_ctx": 8192}})
    assert status == 200, body
    assert time.time() - t0 < 20, "the abandoned generation kept the model busy"
    assert "the client went away" in server.log_text()


def test_slow_clients_are_dropped_and_others_served(server):
    slow = []
    for _ in range(HTTP_THREADS // 2 + 10):  # more than the ~70 that once stalled the server
        s = socket.create_connection((server.host, server.port))
        s.sendall(b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and then one byte a while
        slow.append(s)
    try:
        t0 = time.time()
        status, _, _ = server.request("GET", "/api/version", timeout=10)
        assert status == 200 and time.time() - t0 < 5
        for _ in range(3):  # trickle: silence shorter than the read timeout, yet the headers never end
            time.sleep(READ_TIMEOUT_S - 2)
            for s in slow:
                try:
                    s.sendall(b"X")
                except OSError:
                    pass
        # Past the header deadline every slow connection has been answered 408 and closed.
        deadline = time.time() + 10
        timed_out = 0
        for s in slow:
            s.settimeout(max(0.1, deadline - time.time()))
            reply = b""
            try:
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
            except OSError:
                pass
            timed_out += reply.startswith(b"HTTP/1.1 408")
        assert timed_out == len(slow)
        assert time.time() - t0 < HEADER_TIMEOUT_S + 12
    finally:
        for s in slow:
            s.close()


def test_idle_connections_cannot_exhaust_the_pool(server):
    # The server holds HTTP_THREADS + PENDING_CONNECTIONS connections; each one past them is
    # answered 503 at once and closed. Which ones those are depends on how fast the workers take
    # connections off the queue (under load the queue can fill before they wake), so every
    # connection is watched, not the last ones.
    extra = 40
    idle = []
    refused, other = 0, []
    try:
        for _ in range(HTTP_THREADS + PENDING_CONNECTIONS + extra):
            idle.append(socket.create_connection((server.host, server.port)))
        waiting = set(idle)
        deadline = time.time() + 10
        while refused < extra and time.time() < deadline:
            ready, _, _ = select.select(list(waiting), [], [], 0.2)
            for s in ready:
                waiting.discard(s)
                try:
                    reply = s.recv(4096)
                except OSError as e:
                    reply = repr(e).encode()
                if reply.startswith(b"HTTP/1.1 503"):
                    refused += 1
                else:
                    other.append(reply[:40])
        assert refused >= extra and not other, (refused, other)
    finally:
        for s in idle:
            s.close()
    # Once they are gone the server answers at once.
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            if server.request("GET", "/api/version", timeout=5)[0] == 200:
                break
        except OSError:
            time.sleep(0.5)
    else:
        pytest.fail("the server did not recover from idle connections")


def test_a_lying_content_length_frees_its_worker(server):
    reply, seconds = raw_exchange(server, b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                          b"Content-Length: 1000\r\n\r\n{\"model\"")
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"limit" in reply
    assert seconds < READ_TIMEOUT_S + 3  # not the 60 s it once took


# --- smaller items


def test_a_port_in_use_is_an_error(server):
    out = subprocess.run([harness.strata_bin(), "serve", "--models", server.folder, "--host",
                          f"{server.host}:{server.port}"], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "in use" in out.stderr, out.stderr


def test_a_huge_keep_alive_means_forever(server):
    for path, keep_alive in (("/api/generate", 1e300), ("/api/generate", "1e300h"), ("/api/chat", 10**30),
                             ("/api/embed", 1e300)):
        status, _, body = server.request("POST", path, body={
            "model": MODEL, "prompt": "Hi", "messages": [{"role": "user", "content": "Hi"}], "input": "Hi",
            "stream": False, "keep_alive": keep_alive, "options": {"num_predict": 1}})
        assert status == 200, body
        time.sleep(1.5)  # the reaper looks every second
        status, _, body = server.request("GET", "/api/ps")
        [m] = [m for m in json.loads(body)["models"] if m["model"] == f"{MODEL}:latest"]
        assert int(m["expires_at"][:4]) > 2100, m["expires_at"]


def test_prompt_eval_duration_covers_the_whole_prompt(server):
    prompt = " ".join(f"word{k}" for k in range(300))  # never cached: a fresh prefix
    status, _, body = server.request("POST", "/api/generate", body={
        "model": MODEL, "prompt": "Unique " + str(time.time()) + prompt, "raw": True, "stream": False,
        "options": {"temperature": 0, "num_predict": 4}})
    r = json.loads(body)
    assert status == 200 and r["prompt_eval_count"] > 300
    per_token = r["eval_duration"] / max(1, r["eval_count"])
    # The whole prompt's evaluation, not only its last token's.
    assert r["prompt_eval_duration"] > 3 * per_token, r


@pytest.mark.parametrize("path,body", [
    ("/api/generate", {"model": MODEL, "prompt": "hi", "options": {"num_ctx": 18446744073709551615}}),
    ("/api/generate", {"model": MODEL, "prompt": "hi", "options": {"seed": 99999999999999999999}}),
    ("/api/generate", {"model": MODEL, "prompt": "hi", "options": {"temperature": "1e999"}}),
    ("/api/generate", {"model": MODEL, "prompt": "hi", "keep_alive": "99999999999999999999999999999h1x"}),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                              "max_tokens": 18446744073709551615}),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "seed": 1e300}),
])
def test_numbers_out_of_range_are_400(server, path, body):
    status, _, data = server.request("POST", path, body=body)
    assert status == 400, data
    assert error_of(data)


def test_raw_huge_numbers_are_400(server):
    for path in ("/api/generate", "/v1/completions", "/api/create"):
        status, _, data = server.request("POST", path,
                                         body='{"model": "smollm2", "prompt": "hi", "options": {"temperature": 1e400}}')
        assert status == 400 and "out of range" in error_of(data), data


def test_v1_max_tokens_minus_one_means_no_limit(server):
    status, _, body = server.request("POST", "/v1/chat/completions", body={
        "model": MODEL, "messages": [{"role": "user", "content": "Name a color."}], "max_tokens": -1,
        "temperature": 0, "stop": ["\n"]})
    assert status == 200, body
    assert json.loads(body)["choices"][0]["message"]["content"]


def test_v1_tool_choice_object_and_logit_bias(server):
    tools_template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                      "{% if tools %}{{ tools|tojson }}{% endif %}<|im_start|>assistant\n")
    status, _, body = server.request("POST", "/api/create", body={
        "model": "tooly", "from": MODEL, "template": tools_template, "stream": False})
    assert status == 200, body
    try:
        other = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
        status, _, body = server.request("POST", "/v1/chat/completions", body={
            "model": "tooly", "messages": [{"role": "user", "content": "Weather in Paris?"}], "max_tokens": 4,
            "tools": [harness.WEATHER_TOOL, other],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}})
        assert status == 200, body
        status, _, body = server.request("POST", "/v1/chat/completions", body={
            "model": "tooly", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
            "tools": [harness.WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}})
        assert status == 400 and "nope" in error_of(body)
    finally:
        server.request("DELETE", "/api/delete", body={"model": "tooly"})
    status, _, body = server.request("POST", "/v1/chat/completions", body={
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "logit_bias": {"42": -100}})
    assert status == 400 and "logit_bias" in error_of(body)
