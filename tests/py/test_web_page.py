"""The chat page `strata serve` answers at / (src/server/web/chat.html), driven in headless Chromium.

A small DevTools-protocol client (the `websockets` package) loads the page from a real server on
SmolLM2, picks the model, sends a message and reads the answer from the DOM while it streams; then
stops a long answer with the Stop button and checks, from the server's log, that generation stopped
when the browser went away. Skips, saying why, where Chromium or websockets is missing (`make test`
installs both: scripts/setup_deps.sh, scripts/setup_python.sh).

STRATA_WEB_SCREENSHOT=path.png saves a screenshot of the page after the first answer.
"""
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request

import pytest

import server_harness as harness

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """Headless Chromium with one page, driven over the DevTools protocol (synchronously)."""

    def __init__(self):
        from websockets.sync.client import connect

        self.profile = tempfile.mkdtemp(prefix="strata-chromium-")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-extensions", "--disable-background-networking", "--remote-debugging-port=0",
             f"--user-data-dir={self.profile}", "--window-size=1200,800", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port = None
        deadline = time.time() + 30
        while time.time() < deadline and port is None:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                break
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if m:
                port = int(m.group(1))
        if port is None:
            self.close()
            pytest.fail("headless Chromium did not start its DevTools endpoint within 30 s")
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(t for t in targets if t["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=64 << 20, open_timeout=10).__enter__()
        self.ids = itertools.count(1)

    def call(self, method, timeout=30, **params):
        n = next(self.ids)
        self.ws.send(json.dumps({"id": n, "method": method, "params": params}))
        deadline = time.time() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.time())))
            if msg.get("id") == n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expression, timeout, what):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.js(expression):
                return
            time.sleep(0.05)
        raise AssertionError(f"{what} not seen within {timeout} s")

    def screenshot(self, path):
        import base64

        data = self.call("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self):
        try:
            self.ws.close()
        except Exception:
            pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM:
        pytest.skip("chromium is not installed (Debian package `chromium`; `make test` installs it)")
    pytest.importorskip("websockets", reason="the websockets package drives Chromium (scripts/setup_python.sh)")
    b = Browser()
    yield b
    b.close()


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    folder = harness.models_folder(str(tmp_path_factory.mktemp("strata-web-models")))
    # A budget below SmolLM2's size, so that its FFN weights stream and the tier panel has
    # something to show (plan: 55 of 92 MiB resident at 2048 tokens).
    srv = harness.Server(folder, extra_args=["--mem", "120M"])
    yield srv
    srv.stop()


LAST = "document.querySelector('.msg.assistant:last-of-type')"


def test_root_answers_clients_and_browsers(serve):
    status, headers, body = serve.request("GET", "/")
    assert (status, body) == (200, b"Ollama is running")  # what Ollama's clients probe for
    status, headers, body = serve.request("GET", "/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"<title>Strata chat</title>" in body
    assert b"http://" not in body and b"https://" not in body  # nothing fetched from elsewhere
    assert "connect-src 'self'" in headers["content-security-policy"]


def test_chat_in_the_browser(serve, browser):
    browser.call("Page.enable")
    browser.call("Page.navigate", url=serve.url + "/")
    browser.wait_for("document.getElementById('model') && document.getElementById('model').options.length > 0",
                     20, "the model list")
    assert browser.js("[...document.getElementById('model').options].map(o => o.value)") == ["smollm2:latest"]
    browser.js("document.getElementById('num_predict').value = '24'")
    browser.call("Runtime.evaluate", expression="document.getElementById('prompt').focus()")
    browser.call("Input.insertText", text="Name three colours of the rainbow.")
    browser.js("document.getElementById('send').click()")

    # Read the answer from the DOM while it streams: it must grow in several steps before it is done.
    seen = []
    deadline = time.time() + 120
    while time.time() < deadline:
        state, text = browser.js(f"[{LAST}?.dataset.state, {LAST}?.querySelector('.content').textContent]")
        if text and (not seen or seen[-1] != text):
            seen.append(text)
        if state in ("done", "error"):
            break
        time.sleep(0.02)
    assert state == "done", f"answer state {state}: {browser.js(LAST + '.textContent')}"
    answer = seen[-1]
    assert answer.strip(), "empty answer"
    assert len(seen) >= 2 and all(answer.startswith(s) for s in seen), seen  # streamed, in order
    assert browser.js("document.querySelector('.msg.user').textContent") == "Name three colours of the rainbow."

    # The statistics panel: the loaded model's tiers (from /api/ps) and the answer's speed.
    browser.wait_for("document.getElementById('tier').textContent.includes('streams from SSD')", 10, "tier panel")
    tier = browser.js("document.getElementById('tier').innerText")
    assert re.search(r"streams from SSD\s+dense FFN", tier), tier
    assert re.search(r"hit rate \(read ahead in time\)\s+[\d.]+ %", tier), tier
    assert re.search(r"predicted speed\s+[\d.]+ tok/s", tier), tier
    details = browser.js("document.getElementById('details').innerText")
    assert re.search(r"ssd bytes read\s+[\d.]+ [KMG]B", details) and "read ahead in time" in details, details
    last = browser.js("document.getElementById('last').innerText")
    assert re.search(r"generation\s+[\d.]+ tok/s", last), last
    assert "tokens (prompt / answer)" in last
    shot = os.environ.get("STRATA_WEB_SCREENSHOT")
    if shot:
        os.makedirs(os.path.dirname(os.path.abspath(shot)), exist_ok=True)
        browser.screenshot(shot)


def test_stop_button_stops_the_server(serve, browser):
    if not browser.js("!!document.getElementById('stop')"):
        browser.call("Page.navigate", url=serve.url + "/")
        browser.wait_for("document.getElementById('model').options.length > 0", 20, "the model list")
    browser.js("document.getElementById('new').click(); document.getElementById('num_predict').value = ''")
    log_before = serve.log_text()
    browser.js("document.getElementById('prompt').value = 'Write a very long story about a dragon and a lighthouse.';"
               "document.getElementById('send').click()")
    browser.wait_for(f"({LAST}?.querySelector('.content').textContent || '').length > 0", 120, "the first words")
    assert browser.js("document.getElementById('stop').disabled") is False
    browser.js("document.getElementById('stop').click()")
    browser.wait_for(f"{LAST}.dataset.state === 'stopped'", 10, "the stopped state")
    text = browser.js(f"{LAST}.querySelector('.content').textContent")
    time.sleep(1.0)
    assert browser.js(f"{LAST}.querySelector('.content').textContent") == text  # nothing more arrives
    assert browser.js("document.getElementById('send').disabled") is False

    # The server noticed the browser leave and stopped generating (completion.cpp logs it).
    deadline = time.time() + 15
    stopped = None
    while time.time() < deadline and not stopped:
        stopped = re.search(r"the client went away after (\d+) tokens; generation stopped",
                            serve.log_text()[len(log_before):])
        time.sleep(0.1)
    assert stopped, "the server did not stop the generation:\n" + serve.log_text()[len(log_before):]
    assert 0 < int(stopped.group(1)) < 2048  # well before the context (no num_predict was sent)

    # And the model is free for the next message at once.
    browser.js("document.getElementById('num_predict').value = '4';"
               "document.getElementById('prompt').value = 'Hi'; document.getElementById('send').click()")
    browser.wait_for(f"{LAST}.dataset.state === 'done'", 60, "the next answer")
