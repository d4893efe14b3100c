"""Shared helpers for the pytest layer: the built binary, the fixtures, the cached real models,
and the `server`, `client` and `oai` fixtures of the server tests (tests/py/test_server_*.py).

Environment (set by CTest): STRATA_BIN (the strata binary), STRATA_FIXTURES (tests/fixtures);
models come from STRATA_MODELS, else $STRATA_CACHE/models, else ~/.cache/strata/models, as the
C++ tests find them (tests/support/paths.h). Tests needing a model skip when it is absent.
"""
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3 = "gemma-3-270m-q4_k_m.gguf"

# Lines for the terminal summary: the numbers a reader wants to see even when everything passes.
_REPORT = []


def report(line):
    _REPORT.append(line)


def pytest_terminal_summary(terminalreporter):
    if _REPORT:
        terminalreporter.section("fidelity numbers")
        for line in _REPORT:
            terminalreporter.write_line(line)


def strata_bin():
    path = os.environ.get("STRATA_BIN", os.path.join(ROOT, "build", "strata"))
    if not os.path.isfile(path):
        pytest.skip(f"strata binary not built: {path} (set STRATA_BIN)")
    return path


def fixtures_dir():
    return os.environ.get("STRATA_FIXTURES", os.path.join(ROOT, "tests", "fixtures"))


def models_dir():
    if "STRATA_MODELS" in os.environ:
        return os.environ["STRATA_MODELS"]
    if "STRATA_CACHE" in os.environ:
        return os.path.join(os.environ["STRATA_CACHE"], "models")
    return os.path.expanduser("~/.cache/strata/models")


def model_path(file):
    path = os.path.join(models_dir(), file)
    if not os.path.isfile(path):
        pytest.skip(f"model not fetched: {path} (run make models)")
    return path


def run_strata(*args, check=True, timeout=300):
    """Runs strata with args; returns the CompletedProcess (stdout/stderr as bytes)."""
    proc = subprocess.run([strata_bin(), *map(str, args)], capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"strata {' '.join(map(str, args))} exited {proc.returncode}:\n"
                             f"{proc.stderr.decode(errors='replace')}")
    return proc


# --- the server tests' fixtures: one `strata serve` per test module, on SmolLM2 as "smollm2"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import server_harness as harness

    folder = harness.models_folder(str(tmp_path_factory.mktemp("strata-serve-models")))
    srv = harness.Server(folder)
    srv.folder = folder
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    ollama = pytest.importorskip("ollama")
    return ollama.Client(host=server.url, timeout=120)


@pytest.fixture(scope="module")
def oai(server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", timeout=120, max_retries=0)


@pytest.fixture(scope="module")
def tools_model(server):
    """SmolLM2 with a template that renders tools (harness.TOOLS_TEMPLATE), as "toolsy"."""
    import server_harness as harness

    status, _, body = server.request("POST", "/api/create", {
        "model": harness.TOOLS_MODEL, "from": harness.MODEL, "template": harness.TOOLS_TEMPLATE, "stream": False})
    assert status == 200, body
    yield harness.TOOLS_MODEL
    server.request("DELETE", "/api/delete", {"model": harness.TOOLS_MODEL})
