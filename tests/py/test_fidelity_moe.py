"""The trained MoE test model (tests/models/strata-moe-pystd.gguf, a qwen3moe of 8 layers x 32
experts, top-4) against llama.cpp (tests/fixtures/moe/strata-moe-pystd.json, from
`scripts/train_moe.py fixtures`), resident and with its experts streamed from the file:

  - greedy continuations of a code, a prose and a chat prompt: the same text as llama.cpp's up to
    its first near-tie (a step whose top-2 logits are closer than NEAR_TIE);
  - perplexity of the GPL-3 (held out of training), ctx 256, 4 chunks: within 0.1%;
  - the routing trace (--trace-routing) of a greedy run: the same resident and streamed.
"""
import json
import os
import re

import pytest

from conftest import ROOT, fixtures_dir, report, run_strata

MODEL = os.environ.get("STRATA_MOE_MODEL", os.path.join(ROOT, "tests", "models", "strata-moe-pystd.gguf"))
NEAR_TIE = 0.05  # logits closer than this are a tie the engines' rounding may break either way
REL_TOL = 1e-3


def fixture():
    path = os.path.join(fixtures_dir(), "moe", "strata-moe-pystd.json")
    if not os.path.isfile(MODEL):
        pytest.skip(f"{MODEL} missing")
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def streaming_budget():
    """The least memory the model runs in at ctx 512: most experts stream from the file."""
    plan = json.loads(run_strata("plan", MODEL, "--mem", "1T", "-c", 512, "--json").stdout)
    return plan["memory"]["minimum_bytes"]


def assert_streams(stderr):
    m = re.search(rb"(\d+)/(\d+) expert slices resident", stderr)
    assert m and int(m.group(1)) < int(m.group(2)), stderr


def modes(budget):
    return {"resident": [], "streamed": ["--mem", budget]}


@pytest.mark.parametrize("mode", ["resident", "streamed"])
@pytest.mark.parametrize("kind", ["code", "prose", "chat"])
def test_greedy_matches_llama_cpp(kind, mode, streaming_budget, tmp_path):
    g = fixture()["greedy"][kind]
    n = len(g["greedy"])
    decisive = next((i for i, m in enumerate(g["greedy_margins"]) if m < NEAR_TIE), n)
    proc = run_strata("run", MODEL, "-p", g["prompt"], "-n", n, "--greedy", "-c", 512, "--fresh",
                      *modes(streaming_budget)[mode])
    if mode == "streamed":
        assert_streams(proc.stderr)
    prompt = g["prompt"].encode()
    out = proc.stdout
    assert out.startswith(prompt)
    generated = out[len(prompt):-1]  # run ends with a newline
    # llama.cpp's text up to its first near-tie: the bytes of its tokens before it
    expected = b"".join(bytes.fromhex(p) for p in g["greedy_pieces"][:decisive])
    report(f"moe greedy {kind} {mode}: {decisive} of {n} steps before a near-tie; "
           f"{generated[:60].decode(errors='replace')!r}")
    assert generated.startswith(expected), (generated, expected)
    if decisive == n:
        assert generated == b"".join(bytes.fromhex(p) for p in g["greedy_pieces"])


@pytest.mark.parametrize("mode", ["resident", "streamed"])
def test_perplexity_matches_llama_cpp(mode, streaming_budget):
    ref = fixture()["perplexity"]
    if not os.path.isfile(ref["text"]):
        pytest.skip(f"{ref['text']} not present")
    proc = run_strata("perplexity", MODEL, "-f", ref["text"], "-c", ref["n_ctx"], "--chunks", ref["chunks"], "--fresh",
                      *modes(streaming_budget)[mode])
    if mode == "streamed":
        assert_streams(proc.stderr)
    out, err = proc.stdout.decode(), proc.stderr.decode()
    m = re.search(r"^(\d+) chunks of (\d+) tokens, (\d+) scored", err, re.M)
    assert m, err
    assert (int(m.group(1)), int(m.group(3))) == (ref["chunks"], ref["n_scored"])
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", out)
    assert m, out
    ppl = float(m.group(1))
    rel = abs(ppl - ref["ppl"]) / ref["ppl"]
    report(f"moe perplexity {mode} (GPL-3, ctx {ref['n_ctx']}, {ref['chunks']} chunks): Strata {ppl:.4f}, "
           f"llama.cpp {ref['ppl']:.4f}, diff {100 * rel:.3f}%")
    assert rel <= REL_TOL, f"Strata {ppl} vs llama.cpp {ref['ppl']}"


def test_routing_trace_same_resident_and_streamed(streaming_budget, tmp_path):
    g = fixture()["greedy"]["code"]
    lines = {}
    for mode, extra in modes(streaming_budget).items():
        path = tmp_path / f"{mode}.txt"
        run_strata("run", MODEL, "-p", g["prompt"], "-n", 16, "--greedy", "-c", 512, "-b", 1, "--fresh",
                   "--trace-routing", path, *extra)
        with open(path) as f:
            lines[mode] = [line for line in f if line.startswith(("r ", "g "))]
    assert len(lines["resident"]) > 8 * 16
    assert lines["resident"] == lines["streamed"]
