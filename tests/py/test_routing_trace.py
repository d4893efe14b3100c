"""`strata run|bench --trace-routing FILE` on a forged qwen3moe model: one routing record per token
and layer, guesses for every later layer of a token, and a file bench/routing_replay.py reads.
(The trained model's traces, resident and streamed, are compared in test_fidelity_moe.py.)"""
import importlib.util
import json
import os
import subprocess

import pytest

from conftest import ROOT, run_strata, strata_bin

_spec = importlib.util.spec_from_file_location("routing_replay", os.path.join(ROOT, "bench", "routing_replay.py"))
rr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rr)

PROMPT = "import os\nimport sys\n\ndef main(argv):\n    return 0\n"
N_PREDICT = 6


@pytest.fixture(scope="module")
def moe(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("trace") / "moe.gguf")
    subprocess.run([strata_bin(), "forge", "--arch", "qwen3moe", "--preset", "tiny", "--type", "Q8_0", "--seed", "7",
                    "--out", path], check=True, capture_output=True)
    return path


def routing_lines(path):
    with open(path) as f:
        return [line.split() for line in f if line.startswith("r ")]


def test_trace_records(moe, tmp_path):
    resident = tmp_path / "resident.txt"
    run_strata("run", moe, "-p", PROMPT, "-n", N_PREDICT, "--greedy", "-b", "1", "-c", 256, "--fresh",
               "--trace-routing", resident)
    with open(resident) as f:
        header = [next(f) for _ in range(4)]
    assert header[0] == "strata-routing-trace 1\n"
    assert header[2] == "n_layer 2 n_expert 4 n_expert_used 2\n"
    n_bytes = [int(x) for x in header[3].split()[1:]]
    assert len(n_bytes) == 2 and n_bytes[0] == n_bytes[1] > 0

    r_res = routing_lines(resident)
    # one record per token and layer: the prompt's tokens and every generated token but the last
    positions = sorted({int(r[2]) for r in r_res})
    assert positions == list(range(len(positions)))
    assert len(r_res) == 2 * len(positions)
    for r in r_res:
        experts = [int(e) for e in r[3:]]
        assert len(experts) == 2 and len(set(experts)) == 2 and all(0 <= e < 4 for e in experts)

    trace = rr.parse(str(resident))
    assert trace.n_tokens == len(positions)
    # layer 1 of every token was guessed twice (before and after layer 0's FFN); layer 0 never
    q = rr.guess_quality(trace)
    assert q["early"]["layers_guessed"] == q["refined"]["layers_guessed"] == len(positions)


def test_bench_trace(moe, tmp_path):
    path = tmp_path / "bench.txt"
    run_strata("bench", moe, "-p", 8, "-n", 4, "--trace-routing", path)
    # the warm-up token, an 8-token batch (one record per token), 4 generated tokens; 2 layers
    assert len(routing_lines(path)) == 2 * (1 + 8 + 4)
    trace = rr.parse(str(path))
    assert [r[4] for r in trace.requests if r[0] == 0] == [1, 8, 1, 1, 1, 1]


def test_trace_needs_experts(tmp_path):
    dense = str(tmp_path / "dense.gguf")
    subprocess.run([strata_bin(), "forge", "--arch", "qwen3", "--preset", "tiny", "--type", "Q8_0", "--out", dense],
                   check=True, capture_output=True)
    proc = run_strata("run", dense, "-p", "hi", "-n", 1, "--trace-routing", tmp_path / "t.txt", check=False)
    assert proc.returncode != 0
    assert b"no experts to trace" in proc.stderr
