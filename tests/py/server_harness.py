"""Starts a real `strata serve` for the server API tests (tests/py/test_server_*.py).

The server listens on a free loopback port, serves a temporary models folder holding a link to
SmolLM2 as "smollm2", and is killed at the end. Tests skip when the binary or the model is absent.
"""
import http.client
import json
import os
import shutil
import socket
import subprocess
import time

import pytest

from conftest import model_path, strata_bin  # noqa: F401 (strata_bin is used by the server tests as harness.strata_bin)

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL = "smollm2"

# A tool for the tool-calling tests.
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


# A ChatML template that lists the tools (SmolLM2's own has none): the "toolsy" model of the
# conftest's `tools_model` fixture.
TOOLS_TEMPLATE = """{%- if tools %}<|im_start|>system
You can call these tools by answering with JSON {"name": ..., "arguments": {...}}:
{% for t in tools %}{{ t | tojson }}
{% endfor %}<|im_end|>
{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""
TOOLS_MODEL = "toolsy"


def smollm2_path():
    return model_path(SMOLLM2_FILE)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def models_folder(tmp_dir):
    """A models folder with SmolLM2 as smollm2.gguf."""
    os.makedirs(tmp_dir, exist_ok=True)
    link = os.path.join(tmp_dir, MODEL + ".gguf")
    if not os.path.exists(link):
        os.symlink(smollm2_path(), link)
    return tmp_dir


class Server:
    """A running `strata serve`; its log goes to a file so a full pipe can never stall it."""

    def __init__(self, models_dir, extra_args=(), env=None, use_host_flag=True):
        self.port = free_port()
        self.host = "127.0.0.1"
        self.url = f"http://{self.host}:{self.port}"
        # /api/create and /api/pull may take SmolLM2 by its path (the tests create models from it).
        args = [strata_bin(), "serve", "--models", models_dir, "--threads", "2", "--ctx", "2048",
                "--import-from", os.path.dirname(os.path.realpath(smollm2_path())), *extra_args]
        run_env = dict(os.environ)
        run_env.pop("OLLAMA_HOST", None)
        if use_host_flag:
            args += ["--host", f"{self.host}:{self.port}"]
        else:
            run_env["OLLAMA_HOST"] = f"http://{self.host}:{self.port}"
        run_env.update(env or {})
        self.log_path = os.path.join(models_dir, f"serve-{self.port}.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=run_env)
        self._wait_ready()

    def _wait_ready(self, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"strata serve exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                status, _, body = self.request("GET", "/")
                if status == 200 and body == b"Ollama is running":
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"strata serve did not answer within {timeout} s:\n{self.log_text()}")

    def request(self, method, path, body=None, headers=None, timeout=60):
        """One raw HTTP request: (status, headers dict with lower-case names, body bytes)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def alive(self):
        return self.proc.poll() is None

    def log_text(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


def remove_folder(path):
    shutil.rmtree(path, ignore_errors=True)
