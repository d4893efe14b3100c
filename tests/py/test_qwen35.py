"""Qwen3.5 MoE (llama.cpp's qwen35moe layout) on a forged tiny model: gated delta-rule layers with
their recurrent state between gated full-attention layers, routed and shared experts.

- greedy tokens as llama.cpp's, decoding one token at a time;
- the experts streamed from the file under a small memory budget give the resident logits bit for
  bit;
- perplexity on the GPL-3 within 0.1% of llama.cpp's, resident and streamed;
- through the server, a request sharing a prompt prefix with the one before resumes (or restarts)
  the recurrent state correctly: each request's reply is what it is on its own.

(The logits against llama.cpp at every position, batched and token by token, are checked by
tests/model/forged_test.cpp on the fixtures qwen35moe-tiny-* and qwen35-tiny-F16.)
"""
import json
import os
import re
import sys

import numpy as np
import pytest

import server_harness as harness
from conftest import ROOT, SMOLLM2, model_path, report, run_strata

FORGE = ["--arch", "qwen35moe", "--preset", "tiny", "--type", "Q8_0", "--seed", "1", "--fill", "values"]
PROMPT = "The quick brown fox jumps over the lazy dog. Once upon a time"
N_PREDICT = 24
NEAR_TIE = 1e-3


@pytest.fixture(scope="module")
def model():
    tokenizer = model_path(SMOLLM2)
    # On the real filesystem: the expert streamer reads with O_DIRECT, which tmpfs refuses.
    folder = os.path.join(os.path.dirname(tokenizer), "..", f"qwen35_test_{os.getpid()}")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "qwen35moe-tiny.gguf")
    run_strata("forge", *FORGE, "--tokenizer-from", tokenizer, "--out", path)
    yield path
    os.remove(path)
    os.rmdir(folder)


def llama(model):
    llama_cpp = pytest.importorskip("llama_cpp")
    default_params = llama_cpp.llama_cpp.llama_model_default_params

    def params():  # the repacked CPU buffers crash with Q8_0 on this llama-cpp-python build
        p = default_params()
        p.use_extra_bufts = False
        return p

    llama_cpp.llama_cpp.llama_model_default_params = params
    try:
        return llama_cpp.Llama(model_path=model, n_ctx=256, n_batch=256, n_threads=2, flash_attn=False,
                               verbose=False, logits_all=True)
    finally:
        llama_cpp.llama_cpp.llama_model_default_params = default_params


def test_greedy_tokens_match_llama_cpp(model):
    llm = llama(model)
    ids = llm.tokenize(PROMPT.encode(), add_bos=True, special=True)
    llm.eval(ids)
    ref, margins = [], []
    for _ in range(N_PREDICT):
        row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        top = np.argsort(-row, kind="stable")[:2]
        ref.append(int(top[0]))
        margins.append(float(row[top[0]] - row[top[1]]))
        llm.eval([int(top[0])])  # one token at a time: llama.cpp's recurrent state carries the sequence
    out = run_strata("run", model, "-p", PROMPT, "-n", N_PREDICT, "--greedy", "-c", 256, "--fresh").stdout
    assert out.startswith(PROMPT.encode())
    generated = out[len(PROMPT):-1]  # run ends with a newline
    # Random weights give nearly tied logits: compare up to llama.cpp's first near-tie.
    decisive = next((i for i, m in enumerate(margins) if m < NEAR_TIE), N_PREDICT)
    expected = llm.detokenize(ref[:decisive])
    report(f"qwen35moe tiny greedy: {decisive} of {N_PREDICT} steps before a near-tie (margins "
           f"{', '.join(f'{m:.4f}' for m in margins[:8])} ...); {generated[:50]!r}")
    assert decisive >= 4
    assert generated.startswith(expected), (generated, expected)
    if decisive == N_PREDICT:
        assert generated == llm.detokenize(ref)


@pytest.fixture(scope="module")
def small_budget(model):
    plan = json.loads(run_strata("plan", model, "--mem", "1T", "-c", 256, "--json").stdout)
    return str(plan["memory"]["minimum_bytes"])


def assert_streams(stderr):
    m = re.search(rb"(\d+)/(\d+) expert slices resident", stderr)
    assert m and int(m.group(1)) < int(m.group(2)), stderr


def test_streamed_logits_equal_resident(model, small_budget, tmp_path):
    outs = {}
    for mode, extra in {"resident": [], "streamed": ["--mem", small_budget]}.items():
        path = tmp_path / f"{mode}.bin"
        proc = run_strata("logits", model, "-p", PROMPT, "-c", 256, "--out", path, *extra)
        if mode == "streamed":
            assert_streams(proc.stderr)
        outs[mode] = path.read_bytes()
    assert len(outs["resident"]) > 0
    assert outs["streamed"] == outs["resident"]


def test_streamed_greedy_equals_resident(model, small_budget):
    args = ["run", model, "-p", PROMPT, "-n", 16, "--greedy", "-c", 256, "--fresh"]
    resident = run_strata(*args).stdout
    streamed = run_strata(*args, "--mem", small_budget)
    assert_streams(streamed.stderr)
    assert streamed.stdout == resident


@pytest.mark.parametrize("mode", ["resident", "streamed"])
def test_perplexity_matches_llama_cpp(model, small_budget, mode):
    """llama-perplexity's method (scripts/gen_fidelity_fixtures.py) on the GPL-3 at context 256:
    within 0.1%, resident and with the experts streamed."""
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import gen_fidelity_fixtures as fidelity

    if not os.path.isfile(fidelity.PERPLEXITY_TEXT):
        pytest.skip(f"{fidelity.PERPLEXITY_TEXT} not present")
    with open(fidelity.PERPLEXITY_TEXT, encoding="utf-8") as f:
        text = f.read()
    if text.endswith("\n"):
        text = text[:-1]
    ref = fidelity.perplexity_fixture(llama(model), text.encode(), 256, 4)
    extra = ["--mem", small_budget] if mode == "streamed" else []
    proc = run_strata("perplexity", model, "-f", fidelity.PERPLEXITY_TEXT, "-c", 256, "--chunks", 4, *extra)
    if mode == "streamed":
        assert_streams(proc.stderr)
    m = re.search(r"Final estimate: PPL = ([0-9.]+)", proc.stdout.decode())
    assert m, proc.stdout
    ppl = float(m.group(1))
    rel = abs(ppl - ref["ppl"]) / ref["ppl"]
    report(f"qwen35moe tiny perplexity {mode} (GPL-3, ctx 256, 4 chunks): Strata {ppl:.4f}, llama.cpp "
           f"{ref['ppl']:.4f}, diff {100 * rel:.4f}%")
    assert rel <= 1e-3


def test_server_prefix_reuse_keeps_each_reply(model, tmp_path):
    """A, then B (sharing A's first words, then not: the server cuts back inside A's prompt, where
    the recurrent state cannot go, so it starts over), then A again (its prompt's checkpoint is
    gone with B: starts over), then A once more (resumes from A's checkpoint): every A alike, every
    B alike."""
    folder = harness.models_folder(str(tmp_path / "models"))
    os.symlink(model, os.path.join(folder, "qwen35moe-tiny.gguf"))
    srv = harness.Server(folder)
    try:
        def generate(prompt):
            status, _, body = srv.request("POST", "/api/generate", {
                "model": "qwen35moe-tiny", "prompt": prompt, "raw": True, "stream": False,
                "options": {"temperature": 0, "num_predict": 12}})
            assert status == 200, body
            return json.loads(body)["response"]

        a = PROMPT
        b = "The quick brown fox sleeps all day long"
        replies = [generate(p) for p in (a, b, a, a, b)]
    finally:
        srv.stop()
    assert replies[0] == replies[2] == replies[3], replies
    assert replies[1] == replies[4], replies
    assert replies[0] != replies[1]


def test_bench_reports_the_streamed_bound(model, small_budget):
    """Streaming, `strata bench` measures no RAM bandwidth (its buffer would not fit the budget):
    its bound is the plan's, from the speeds the plan used (RAM over the weight bytes a token reads,
    or the SSD over the bytes the plan expects it to read), never 0."""
    proc = run_strata("bench", model, "-p", 8, "-n", 4, "-c", 256, "--json", "--mem", small_budget)
    out = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert out["streaming"] is True, out
    assert out["read_bandwidth_gb_s"] > 0, out
    assert out["tg_bound_tok_s"] > 0, out
    assert out["tg_bound_by"] in ("ram", "ssd"), out
    ram_bound = out["read_bandwidth_gb_s"] * 1e9 / out["weight_bytes_per_token"]
    assert out["tg_bound_tok_s"] <= ram_bound * (1 + 1e-3), out
    report(f"qwen35moe tiny bench, streamed: {out['tg_tok_s']:.1f} tok/s, bound {out['tg_bound_tok_s']:.1f} "
           f"({out['tg_bound_by']}), plan {out['predicted_tok_s']:.1f}")
