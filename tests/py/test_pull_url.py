"""Pulling a model by http(s) URL: `strata pull URL` and /api/pull {"model": URL}.

A local HTTP server started here (loopback only) serves a small real GGUF file the ways a source
can: with Range support and its SHA-256 as ETag, behind a Hugging-Face-style redirect carrying
X-Linked-Etag / X-Linked-Size, dropping the connection mid-file once, publishing a wrong digest,
answering HTML instead of GGUF, cutting the file short without a Content-Length, 404, and a
redirect loop. Each test checks the models folder afterwards: the model whole and renamed into
place, or nothing but (by design) a resumable NAME.gguf.partial after a dropped connection.
"""
import hashlib
import http.server
import json
import os
import socket
import subprocess
import threading
import time

import numpy as np
import pytest

from conftest import strata_bin

NAME = "tiny-pull"
FILE = NAME + ".gguf"


def make_gguf(path, seed=7):
    import gguf

    w = gguf.GGUFWriter(path, "llama")
    w.add_name("tiny pull test")
    rng = np.random.default_rng(seed)
    w.add_tensor("blob", rng.standard_normal(256 * 1024).astype(np.float32))  # 1 MiB: room to drop mid-file
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(path, "rb") as f:
        return f.read()


class Source(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, data, new_data):
        super().__init__(("127.0.0.1", 0), Handler)
        self.data = data
        self.sha = hashlib.sha256(data).hexdigest()
        self.new_data = new_data  # what /changing/ serves after its first, cut request
        self.new_sha = hashlib.sha256(new_data).hexdigest()
        self.requests = []  # (path, Range header or None)
        self.if_ranges = []  # (path, If-Range header)
        self.dropped = set()  # paths whose first full request was cut
        self.lock = threading.Lock()

    def handle_error(self, request, client_address):
        pass  # a client hanging up mid-file is what several tests do

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_file(self, data, etag=None, extra=(), chunk_delay=0):
        start, status = 0, 200
        rng = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if if_range and if_range != f'"{etag}"':
            rng = None  # the file changed since the validator: the whole new file (RFC 9110)
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(data) - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if etag:
            self.send_header("ETag", f'"{etag}"')
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if not chunk_delay:
            return self.wfile.write(data[start:])
        try:
            for at in range(start, len(data), 32 << 10):
                self.wfile.write(data[at:at + (32 << 10)])
                self.wfile.flush()
                time.sleep(chunk_delay)
        except OSError:
            self.close_connection = True

    def cut(self, data, n, with_length=True):
        """Sends the first n bytes of data (announcing all of it, or no length at all) and hangs up."""
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if with_length:
            self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data[:n])
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def redirect(self, to, extra=()):
        self.send_response(302)
        self.send_header("Location", to)
        self.send_header("Content-Length", "0")
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()

    def do_GET(self):
        src = self.server
        path = self.path.split("?")[0]
        with src.lock:
            src.requests.append((path, self.headers.get("Range")))
            if self.headers.get("If-Range"):
                src.if_ranges.append((path, self.headers.get("If-Range")))
        data, sha = src.data, src.sha
        if path.startswith("/plain/"):
            return self.send_file(data, etag=sha)
        if path.startswith("/cdn/"):
            return self.send_file(data, etag=sha)
        if path.startswith("/hf/"):  # Hugging Face's resolve: a redirect with the LFS digest and size
            return self.redirect("/cdn/" + path.split("/")[-1],
                                 [("X-Linked-Etag", f'"{sha}"'), ("X-Linked-Size", str(len(data)))])
        if path.startswith("/drop/"):  # first full request cut in the middle, ranges served
            with src.lock:
                first = path not in src.dropped and not self.headers.get("Range")
                src.dropped.add(path)
            if first:
                return self.cut(data, len(data) // 2)
            return self.send_file(data, etag=sha)
        if path.startswith("/changing/"):  # cut once, then a new version of the file
            with src.lock:
                first = path not in src.dropped
                src.dropped.add(path)
            if first:
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", f'"{sha}"')
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data[:len(data) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            return self.send_file(src.new_data, etag=src.new_sha)
        if path.startswith("/slow/"):  # ~1 s for the file: time for a client to leave
            return self.send_file(data, etag=sha, chunk_delay=0.03)
        if path.startswith("/badsha/"):
            return self.send_file(data, extra=[("X-Linked-Etag", '"' + "0" * 64 + '"')])
        if path.startswith("/html/"):
            page = b"<!DOCTYPE html><html><body>" + b"x" * (2 << 20) + b"</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            try:
                self.wfile.write(page)
            except OSError:
                pass
            return
        if path.startswith("/nolen/"):  # close-delimited body cut short: only the GGUF reader can tell
            return self.cut(data, len(data) - 1000, with_length=False)
        if path.startswith("/loop/"):
            return self.redirect(path)
        self.send_response(404)
        self.send_header("Content-Length", "9")
        self.end_headers()
        self.wfile.write(b"not found")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pull-src")
    src = Source(make_gguf(str(folder / FILE)), make_gguf(str(folder / "new.gguf"), seed=8))
    t = threading.Thread(target=src.serve_forever, daemon=True)
    t.start()
    yield src
    src.shutdown()
    src.server_close()


def pull_cli(url, models, *extra):
    return subprocess.run([strata_bin(), "pull", url, "--models", str(models), *extra],
                          capture_output=True, text=True, timeout=60)


def files(folder):
    return sorted(p for p in os.listdir(folder) if not p.startswith("serve-"))


def assert_whole(folder, source, name=NAME):
    with open(os.path.join(folder, name + ".gguf"), "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == source.sha
    assert files(folder) == [name + ".gguf"]


# --- the CLI


def test_cli_pull_through_redirect_checks_digest(source, tmp_path):
    p = pull_cli(f"{source.url}/hf/org/repo/resolve/main/{FILE}?download=true", tmp_path)
    assert p.returncode == 0, p.stderr
    assert "matches the source's digest" in p.stdout
    assert "verifying sha256 digest" in p.stderr and "100%" in p.stderr
    assert_whole(tmp_path, source)
    again = pull_cli(f"{source.url}/hf/org/repo/resolve/main/{FILE}", tmp_path)
    assert again.returncode == 0 and "already" in again.stdout


def test_cli_resumes_after_dropped_connection(source, tmp_path):
    url = f"{source.url}/drop/cli/{FILE}"
    first = pull_cli(url, tmp_path)
    assert first.returncode == 1
    assert "pull again to resume" in first.stderr and "of 1," in first.stderr, first.stderr
    partial = tmp_path / (FILE + ".partial")
    kept = partial.stat().st_size
    assert 0 < kept < len(source.data)
    assert files(tmp_path) == [FILE + ".partial", FILE + ".partial.json"]
    second = pull_cli(url, tmp_path)
    assert second.returncode == 0, second.stderr
    assert f"resumed at byte {kept}" in second.stdout
    assert ("/drop/cli/" + FILE, f"bytes={kept}-") in source.requests
    assert "matches the source's digest" in second.stdout  # ETag sha256 over the whole, resumed file
    assert_whole(tmp_path, source)


def test_cli_restarts_when_the_file_changed(source, tmp_path):
    url = f"{source.url}/changing/{FILE}"
    assert pull_cli(url, tmp_path).returncode == 1
    assert (tmp_path / (FILE + ".partial")).exists()
    second = pull_cli(url, tmp_path)
    assert second.returncode == 0, second.stderr
    assert ("/changing/" + FILE, f'"{source.sha}"') in source.if_ranges  # resumed only if unchanged
    assert "resumed" not in second.stdout
    with open(tmp_path / FILE, "rb") as f:
        assert f.read() == source.new_data  # the new version whole, not old bytes + new bytes
    assert files(tmp_path) == [FILE]


def test_cli_wrong_digest_leaves_nothing(source, tmp_path):
    p = pull_cli(f"{source.url}/badsha/{FILE}", tmp_path)
    assert p.returncode == 1
    assert "SHA-256 is " + source.sha in p.stderr and "publishes " + "0" * 64 in p.stderr
    assert files(tmp_path) == []


def test_cli_not_gguf_stops_early_and_leaves_nothing(source, tmp_path):
    p = pull_cli(f"{source.url}/html/page.gguf", tmp_path)
    assert p.returncode == 1
    assert "not a GGUF file" in p.stderr and "text/html" in p.stderr
    assert files(tmp_path) == []


def test_cli_truncated_without_length_leaves_nothing(source, tmp_path):
    p = pull_cli(f"{source.url}/nolen/{FILE}", tmp_path)
    assert p.returncode == 1
    assert "not a usable GGUF file" in p.stderr and "past the end" in p.stderr, p.stderr
    assert files(tmp_path) == []


def test_cli_http_errors_and_bad_urls(source, tmp_path):
    p = pull_cli(f"{source.url}/nothing/{FILE}", tmp_path)
    assert p.returncode == 1 and "HTTP 404" in p.stderr
    p = pull_cli(f"{source.url}/loop/{FILE}", tmp_path)
    assert p.returncode == 1 and "redirect" in p.stderr.lower(), p.stderr
    p = pull_cli(f"{source.url}/plain/readme.txt", tmp_path)
    assert p.returncode == 1 and "does not end in .gguf" in p.stderr
    p = pull_cli("ftp://example.invalid/x.gguf", tmp_path)
    assert p.returncode == 1 and "http" in p.stderr
    p = pull_cli(f"{source.url}/plain/..%2F..%2Fescape.gguf", tmp_path)
    assert p.returncode == 1 and "invalid model name" in p.stderr
    p = pull_cli("http://127.0.0.1:1/refused.gguf", tmp_path)
    assert p.returncode == 1 and "127.0.0.1:1" in p.stderr
    assert files(tmp_path) == []


def test_cli_name_option(source, tmp_path):
    p = pull_cli(f"{source.url}/plain/{FILE}", tmp_path, "--name", "renamed")
    assert p.returncode == 0, p.stderr
    assert_whole(tmp_path, source, "renamed")


# --- the API


@pytest.fixture
def serve(tmp_path):
    import server_harness as harness

    folder = str(tmp_path / "models")
    os.makedirs(folder)
    srv = harness.Server(folder)
    srv.folder = folder
    yield srv
    srv.stop()


def ndjson(body):
    return [json.loads(line) for line in body.decode().splitlines() if line.strip()]


def test_api_pull_streams_ollama_progress(source, serve):
    url = f"{source.url}/hf/org/repo/resolve/main/{FILE}"
    status, headers, body = serve.request("POST", "/api/pull", {"model": url})
    assert status == 200, body
    lines = ndjson(body)
    assert lines[0] == {"status": "pulling " + NAME}
    progress = [l for l in lines if "completed" in l]
    assert progress, lines
    for l in progress:
        assert l["digest"] == "sha256:" + source.sha
        assert l["total"] == len(source.data)
        assert l["status"] == "pulling " + source.sha[:12]
    done = [l["completed"] for l in progress]
    assert done == sorted(done) and done[-1] == len(source.data)
    assert {"status": "verifying sha256 digest"} in lines
    assert lines[-1] == {"status": "success", "model": NAME}
    assert_whole(serve.folder, source)
    status, _, body = serve.request("GET", "/api/tags")
    assert NAME in [m["name"].split(":")[0] for m in json.loads(body)["models"]]


def test_api_pull_not_streamed(source, serve):
    status, _, body = serve.request("POST", "/api/pull", {"model": f"{source.url}/plain/{FILE}", "stream": False})
    assert status == 200 and json.loads(body)["status"] == "success"
    assert_whole(serve.folder, source)


def test_api_pull_resumes_after_dropped_connection(source, serve):
    url = f"{source.url}/drop/api/{FILE}"
    status, _, body = serve.request("POST", "/api/pull", {"model": url})
    lines = ndjson(body)
    assert "pull again to resume" in lines[-1]["error"]
    kept = os.path.getsize(os.path.join(serve.folder, FILE + ".partial"))
    assert 0 < kept < len(source.data)
    status, _, body = serve.request("POST", "/api/pull", {"model": url})
    lines = ndjson(body)
    assert lines[-1]["status"] == "success", lines
    assert lines[[i for i, l in enumerate(lines) if "completed" in l][0]]["completed"] >= kept
    assert ("/drop/api/" + FILE, f"bytes={kept}-") in source.requests
    assert_whole(serve.folder, source)


def test_api_pull_client_leaving_keeps_a_resumable_partial(source, serve):
    import http.client

    url = f"{source.url}/slow/{FILE}"
    conn = http.client.HTTPConnection(serve.host, serve.port, timeout=30)
    conn.request("POST", "/api/pull", body=json.dumps({"model": url}))
    resp = conn.getresponse()
    while "completed" not in json.loads(resp.readline()):
        pass
    conn.close()  # the client goes away mid-download
    partial = os.path.join(serve.folder, FILE + ".partial")
    deadline = time.time() + 10
    while time.time() < deadline and files(serve.folder) != [FILE + ".partial", FILE + ".partial.json"]:
        time.sleep(0.05)
    time.sleep(0.5)  # the server stops writing once it notices
    kept = os.path.getsize(partial)
    time.sleep(0.5)
    assert os.path.getsize(partial) == kept < len(source.data)
    assert not os.path.exists(os.path.join(serve.folder, FILE))
    status, _, body = serve.request("POST", "/api/pull", {"model": url, "stream": False})
    assert status == 200, body
    assert ("/slow/" + FILE, f"bytes={kept}-") in source.requests
    assert_whole(serve.folder, source)


def test_api_pull_errors(source, serve):
    status, _, body = serve.request("POST", "/api/pull", {"model": f"{source.url}/badsha/{FILE}", "stream": False})
    assert status == 502 and "SHA-256" in json.loads(body)["error"]
    status, _, body = serve.request("POST", "/api/pull", {"model": f"{source.url}/html/x.gguf", "stream": False})
    assert status == 400 and "not a GGUF file" in json.loads(body)["error"]
    status, _, body = serve.request("POST", "/api/pull", {"model": f"{source.url}/badsha/{FILE}"})
    assert status == 200 and "SHA-256" in ndjson(body)[-1]["error"]
    status, _, body = serve.request("POST", "/api/pull", {"model": f"{source.url}/plain/notes.txt"})
    assert status == 400 and "does not end in .gguf" in json.loads(body)["error"]
    assert files(serve.folder) == []
    assert serve.alive()


def test_api_pull_with_the_ollama_client(source, serve):
    ollama = pytest.importorskip("ollama")
    client = ollama.Client(host=serve.url)
    events = list(client.pull(f"{source.url}/hf/org/repo/resolve/main/{FILE}", stream=True))
    assert events[-1].status == "success"
    sized = [e for e in events if e.total]
    assert sized and sized[-1].completed == sized[-1].total == len(source.data)
    assert sized[-1].digest == "sha256:" + source.sha
    assert NAME in [m.model.split(":")[0] for m in client.list().models]
