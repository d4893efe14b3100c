"""`strata serve --gpu-mem SIZE` (issue 14): a MoE model's session on the GPU with its routed experts in
host RAM, planned and attached as `run` and `bench` do (tier/gpu/gpu_session.h). On a forged tiny MoE:
with STRATA_REQUIRE_GPU=1 (a CUDA build on a GPU machine, as make test-gpu) a generation runs, the log
names the expert tier and /api/ps's size_vram counts the session and the tier's arena within the
budget; elsewhere the request fails naming why (no CUDA backend or device) and the server lives on.
"""
import json
import os
import urllib.error
import urllib.request

import pytest

import server_harness as harness
from conftest import run_strata

ON_GPU = os.environ.get("STRATA_REQUIRE_GPU") == "1"
BUDGET_MIB = 256


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tokenizer = harness.smollm2_path()  # skips without it
    folder = harness.models_folder(str(tmp_path_factory.mktemp("strata-gpu-mem-models")))
    run_strata("forge", "--arch", "llama", "--preset", "tiny-moe", "--type", "Q8_0", "--seed", "5",
               "--tokenizer-from", tokenizer, "--out", os.path.join(folder, "tinymoe.gguf"))
    srv = harness.Server(folder, extra_args=["--gpu-mem", f"{BUDGET_MIB}M"])
    yield srv
    srv.stop()


def generate(srv):
    body = {"model": "tinymoe", "prompt": "Hello there", "raw": True, "stream": False,
            "options": {"num_predict": 4, "temperature": 0, "num_ctx": 256}}
    req = urllib.request.Request(srv.url + "/api/generate", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def test_gpu_mem_serves_a_moe_model_through_the_expert_tier(server):
    if not ON_GPU:
        with pytest.raises(urllib.error.HTTPError) as e:
            generate(server)
        text = e.value.read().decode("utf-8", "replace")
        assert "CUDA" in text or "--gpu" in text, text
        assert server.alive()
        return
    assert generate(server)["done"]
    assert "gpu experts:" in server.log_text()
    with urllib.request.urlopen(server.url + "/api/ps", timeout=60) as r:
        [entry] = [m for m in json.loads(r.read())["models"] if m["name"].startswith("tinymoe")]
    assert 0 < entry["size_vram"] <= BUDGET_MIB << 20
