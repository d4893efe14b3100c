"""`strata serve` under a memory budget smaller than a model: the model streams its experts from
the file, answers, and reports its tiered-weight statistics in /api/ps and /metrics; a model (or a
context, options.num_ctx) that cannot fit even the minimum is refused with a clear error and the
server keeps serving.
"""
import json
import os
import subprocess
import urllib.request

import pytest

import server_harness as harness
from conftest import model_path, strata_bin

MOE = "moe"


@pytest.fixture(scope="module")
def tight(tmp_path_factory):
    folder = harness.models_folder(str(tmp_path_factory.mktemp("strata-tiering-models")))
    moe = os.path.join(folder, MOE + ".gguf")
    subprocess.run([strata_bin(), "forge", "--arch", "qwen3moe", "--preset", "tiny", "--type", "Q8_0", "--seed", "7",
                    "--tokenizer-from", model_path(harness.SMOLLM2_FILE), "--out", moe], check=True,
                   capture_output=True)
    plan = json.loads(subprocess.run([strata_bin(), "plan", moe, "--mem", "1T", "-c", "2048", "--json"], check=True,
                                     capture_output=True).stdout)
    # Halfway between the minimum resident set and the whole model: most experts must stream.
    budget = (plan["memory"]["minimum_bytes"] + plan["memory"]["used_bytes"]) // 2
    srv = harness.Server(folder, extra_args=["--mem", str(budget)])
    srv.budget = budget
    yield srv
    srv.stop()


def get_json(srv, path):
    with urllib.request.urlopen(srv.url + path, timeout=60) as r:
        return json.loads(r.read())


def test_streamed_model_answers_and_reports_its_tiering(tight):
    ollama = pytest.importorskip("ollama")
    client = ollama.Client(host=tight.url, timeout=120)
    r = client.generate(model=MOE, prompt="Hello there", raw=True, options={"num_predict": 8, "temperature": 0})
    assert r.done and r.eval_count > 0

    ps = get_json(tight, "/api/ps")
    [entry] = [m for m in ps["models"] if m["name"].startswith(MOE)]
    tier = entry["strata"]
    assert tier["streaming"] is True
    assert tier["budget_bytes"] <= tight.budget
    assert tier["ssd_bytes_read"] > 0
    experts = tier["experts"]
    assert experts["routed"] > 0
    assert 0.0 <= experts["cache_hit_rate"] <= 1.0
    assert experts["slots"] >= 1
    assert 0 <= experts["prefetch_dropped_unread"] <= experts["prefetch_wasted"]
    assert tier["disk_idle_seconds"] >= 0
    # The official client still parses /api/ps with the extra field.
    assert any(m.model.startswith(MOE) for m in client.ps().models)

    with urllib.request.urlopen(tight.url + "/metrics", timeout=60) as r:
        text = r.read().decode()
    assert f'strata_tier_streaming{{model="{MOE}"}} 1' in text
    routed = [line for line in text.splitlines() if line.startswith(f'strata_tier_expert_routed_total{{model="{MOE}"}}')]
    assert routed and float(routed[0].split()[-1]) > 0
    assert f'strata_tier_disk_idle_seconds_total{{model="{MOE}"}}' in text
    assert f'strata_tier_expert_prefetch_dropped_total{{model="{MOE}"}}' in text


def test_model_beyond_the_budget_is_refused_clearly_and_the_server_stays_up(tight):
    ollama = pytest.importorskip("ollama")
    client = ollama.Client(host=tight.url, timeout=120)
    with pytest.raises(ollama.ResponseError) as e:
        client.generate(model=harness.MODEL, prompt="hi", options={"num_predict": 2})
    assert e.value.status_code == 500
    assert "memory budget" in str(e.value) and "minimum" in str(e.value)
    r = client.generate(model=MOE, prompt="Again", raw=True, options={"num_predict": 4, "temperature": 0})
    assert r.done and r.eval_count > 0


def test_context_beyond_the_budget_is_refused_and_the_model_keeps_its_own(tight):
    ollama = pytest.importorskip("ollama")
    client = ollama.Client(host=tight.url, timeout=120)
    greedy = {"num_predict": 4, "temperature": 0}
    expected = client.generate(model=MOE, prompt="Once", raw=True, options=greedy).response
    # The forged model trains on 4096 tokens; its KV cache for them is more than the three spare
    # expert slots of the budget.
    for stream in (False, True):
        with pytest.raises(ollama.ResponseError) as e:
            r = client.generate(model=MOE, prompt="Once", raw=True, options={**greedy, "num_ctx": 4096},
                                stream=stream)
            if stream:
                list(r)  # the error comes with the first chunk
        assert e.value.status_code == 500
        message = str(e.value)
        assert f'"{MOE}"' in message and "context of 4096 tokens" in message and "minimum" in message, message
    # Still loaded with its context, and answering as before.
    [entry] = [m for m in get_json(tight, "/api/ps")["models"] if m["name"].startswith(MOE)]
    assert entry["context_length"] == 2048
    assert entry["strata"]["budget_bytes"] <= tight.budget
    r = client.generate(model=MOE, prompt="Once", raw=True, options=greedy)
    assert r.done and r.response == expected
