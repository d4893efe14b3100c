"""/api/ps reports size_vram: the GPU memory the loaded model's session holds (weights, KV cache,
activations). A --cpu server holds none, so size_vram is 0 after a generation; with
STRATA_REQUIRE_GPU=1 (a CUDA build on a GPU machine, as make test-gpu) a --gpu server reports at
least the model's weights and at most the card, and the number follows a new context (the old
session's VRAM is freed before the new one takes its own).
"""
import json
import os
import urllib.request

import pytest

import server_harness as harness

ON_GPU = os.environ.get("STRATA_REQUIRE_GPU") == "1"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not os.path.exists(harness.smollm2_path()):
        pytest.skip("SmolLM2 not fetched (make models)")
    folder = harness.models_folder(str(tmp_path_factory.mktemp("strata-vram-models")))
    srv = harness.Server(folder, extra_args=["--gpu" if ON_GPU else "--cpu"])
    yield srv
    srv.stop()


def generate(srv, num_ctx):
    body = {"model": harness.MODEL, "prompt": "Hello", "raw": True, "stream": False,
            "options": {"num_predict": 4, "temperature": 0, "num_ctx": num_ctx}}
    req = urllib.request.Request(srv.url + "/api/generate", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        assert json.loads(r.read())["done"]


def size_vram(srv):
    with urllib.request.urlopen(srv.url + "/api/ps", timeout=60) as r:
        [entry] = [m for m in json.loads(r.read())["models"] if m["name"].startswith(harness.MODEL)]
    assert isinstance(entry["size_vram"], int)
    return entry["size_vram"], entry["size"]


def test_size_vram_is_the_sessions_gpu_memory(server):
    generate(server, 1024)
    vram, size = size_vram(server)
    if not ON_GPU:
        assert vram == 0
        return
    weights = os.path.getsize(harness.smollm2_path())
    assert weights * 0.9 < vram < 80 << 30
    # A larger context: a new session, whose KV cache is larger; the old one's memory is gone.
    generate(server, 2048)
    vram_2048, _ = size_vram(server)
    assert vram < vram_2048 < 2 * vram
