"""--kv-type auto: the planner picks the KV cache's type for the memory budget
(PlanInputs::kv_type_auto): f16 where every weight stays in memory with it, else the widest of
q8_0 and q4_0 that keeps them, else q4_0 (weights stream whatever the type; the narrowest cache
leaves them the most memory). `strata plan` shows the choice; run, bench and serve allocate that
type (the same tokens as naming it); f16 stays the default (the same command gives the same tokens
whatever memory happens to be free).

The budgets come from SmolLM2's own plan at 2,048 tokens: "tight" is a quarter of the f16 cache
short of holding everything, so f16 would stream weights and q8_0 (17/32 of the bytes) fits.
"""
import json
import os

import pytest

import server_harness as harness
from conftest import SMOLLM2, model_path, run_strata

CTX = 2048
PROMPT = "The capital of France is"


def plan(model, mem, *extra):
    return json.loads(run_strata("plan", model, "--mem", mem, "-c", CTX, "--json", *extra).stdout)


@pytest.fixture(scope="module")
def tight():
    memory = plan(model_path(SMOLLM2), "1T")["memory"]
    return str(memory["used_bytes"] - memory["kv_bytes"] // 4)


def test_plan_picks_the_widest_type_that_keeps_every_weight(tight):
    model = model_path(SMOLLM2)
    assert plan(model, "1T", "--kv-type", "auto")["inputs"]["kv_type"] == "F16"
    chosen = plan(model, tight, "--kv-type", "auto")
    assert chosen["inputs"]["kv_type"] == "Q8_0"
    assert chosen["memory"]["streamed_weight_bytes"] == 0
    assert chosen["memory"]["kv_bytes"] == plan(model, tight, "--kv-type", "q8_0")["memory"]["kv_bytes"]
    named = plan(model, tight)  # the default, f16: some weights stream under this budget
    assert named["inputs"]["kv_type"] == "F16"
    assert named["memory"]["streamed_weight_bytes"] > 0


def test_below_every_type_picks_q4_0_which_streams_the_least():
    # A budget short of even q4_0's plan: every type streams weights; q4_0 leaves them the most
    # memory, so the fewest bytes are read from the file per token (the choice made on purpose).
    model = model_path(SMOLLM2)
    memory = plan(model, "1T")["memory"]
    starved = str(memory["used_bytes"] - memory["kv_bytes"])
    chosen = plan(model, starved, "--kv-type", "auto")
    assert chosen["inputs"]["kv_type"] == "Q4_0"
    streamed = {t: plan(model, starved, "--kv-type", t)["memory"]["streamed_weight_bytes"] for t in ("f16", "q8_0")}
    assert 0 < chosen["memory"]["streamed_weight_bytes"] < streamed["q8_0"] < streamed["f16"]
    run = run_strata("run", model, "-p", PROMPT, "-n", 2, "--greedy", "-c", CTX, "--mem", starved, "--kv-type", "auto")
    assert b"KV cache: Q4_0 (--kv-type auto: no cache type keeps every weight in memory" in run.stderr, run.stderr


def test_run_and_bench_allocate_the_chosen_type(tight):
    model = model_path(SMOLLM2)
    args = ["run", model, "-p", PROMPT, "-n", 8, "--greedy", "-c", CTX, "--mem", tight]
    auto = run_strata(*args, "--kv-type", "auto")
    assert b"KV cache: Q8_0 (--kv-type auto" in auto.stderr, auto.stderr
    assert auto.stdout == run_strata(*args, "--kv-type", "q8_0").stdout
    default = run_strata(*args)
    assert b"KV cache:" not in default.stderr
    ample = run_strata("run", model, "-p", PROMPT, "-n", 8, "--greedy", "-c", CTX, "--mem", "1T", "--kv-type", "auto")
    assert b"KV cache: F16 (--kv-type auto" in ample.stderr, ample.stderr
    assert ample.stdout == run_strata("run", model, "-p", PROMPT, "-n", 8, "--greedy", "-c", CTX).stdout

    bench = json.loads(run_strata("bench", model, "-p", 32, "-n", 2, "-c", CTX, "--json", "--mem", tight,
                                  "--kv-type", "auto").stdout)
    assert bench["kv_type"] == "Q8_0"
    assert bench["streaming"] is False


def test_serve_sizes_the_cache_of_the_chosen_type(tmp_path, tight):
    model = model_path(SMOLLM2)
    q8_kv = plan(model, tight, "--kv-type", "q8_0")["memory"]["kv_bytes"]
    folder = harness.models_folder(str(tmp_path))
    srv = harness.Server(folder, extra_args=["--mem", tight, "--kv-type", "auto"])
    try:
        status, _, body = srv.request("POST", "/api/generate",
                                      {"model": harness.MODEL, "prompt": PROMPT, "raw": True, "stream": False,
                                       "options": {"num_predict": 4, "temperature": 0}})
        assert status == 200, body
        status, _, body = srv.request("GET", "/api/ps")
        [entry] = json.loads(body)["models"]
        assert entry["strata"]["streaming"] is False
        assert entry["size"] == os.path.getsize(os.path.realpath(model)) + q8_kv
    finally:
        srv.stop()
