"""Perplexity with a q8_0 KV cache against llama.cpp's with the same cache type (which llama.cpp
runs with flash attention), on a real text: the 14 licenses of /usr/share/common-licenses (the
files that are not links, in name order, concatenated: 237,320 bytes, 52,177 SmolLM2 tokens),
context 256, 64 chunks, 8,128 scored tokens (fixture: tests/fixtures/models/kv_q8_0_perplexity.json,
which states how llama.cpp's value was measured). Within 0.1%, as for the f16 cache.

Strata runs a quantized cache through ggml-cpu's own flash kernel for it, bit for bit
(src/ops/attention.h; tests/ops/attention_test.cpp checks it, and it was checked against
libggml-cpu itself). The rest of the forward pass is not bit-equal to llama.cpp's (8-bit
activations before every matmul turn last-bit differences into whole quanta; see
test_fidelity_logits.py), so the perplexities agree as the f16 cache's do, not exactly. Measured
2026-12-07 (AVX-512 build, 2 threads): SmolLM2 17.3760 against llama.cpp 17.3630 (0.075%; before
the kernel followed ggml's, 17.4082, 0.26%), Gemma 3 13.6270 against 13.6352 (0.060%; 51,490
tokens). The floor, with an f16 cache (llama.cpp without flash attention): SmolLM2 Strata 17.3706
against 17.3603 (0.059%).

On the 508 scored tokens of the GPL-3 alone (tests/fixtures/models/long_context.json, the cases
below, xfail) a last-bit change anywhere moves the perplexity by tenths of a percent (llama.cpp's
own f16 cache: 19.2798 without flash attention, 19.3583 with it): Strata 19.2392 against 19.3610
(0.63%), Gemma 3 15.2581 against 15.3024 (0.29%)."""
import json
import os
import re

import pytest

from conftest import fixtures_dir, model_path, report, run_strata

REL_TOL = 1e-3


def q8_cases():
    with open(os.path.join(fixtures_dir(), "models", "long_context.json")) as f:
        fx = json.load(f)
    return [c for c in fx["cases"] if "perplexity" in c]


def strata_perplexity(model, text, n_ctx, chunks, kv_type, n_tokens, timeout=300):
    proc = run_strata("perplexity", model, "-f", text, "-c", n_ctx, "--chunks", chunks, "--kv-type", kv_type,
                      timeout=timeout)
    out, err = proc.stdout.decode(), proc.stderr.decode()
    m = re.search(r"^(\d+) tokens, ctx (\d+)$", err, re.M)
    assert m and (int(m.group(1)), int(m.group(2))) == (n_tokens, n_ctx), err
    m = re.search(r"Final estimate: PPL = ([0-9.]+)", out + err)
    assert m, out + err
    return float(m.group(1))


def licenses_text(path):
    folder = "/usr/share/common-licenses"
    if not os.path.isdir(folder):
        return None
    names = sorted(n for n in os.listdir(folder)
                   if not os.path.islink(os.path.join(folder, n)) and os.path.isfile(os.path.join(folder, n)))
    data = b"".join(open(os.path.join(folder, n), "rb").read() for n in names)
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


def long_cases():
    with open(os.path.join(fixtures_dir(), "models", "kv_q8_0_perplexity.json")) as f:
        fx = json.load(f)
    return [dict(c, n_ctx=fx["n_ctx"], chunks=fx["chunks"], text_bytes=fx["text_bytes"]) for c in fx["cases"]]


@pytest.mark.parametrize("case", long_cases(), ids=lambda c: f"{c['name']}-{c['kv_type']}")
def test_perplexity_with_q8_0_cache_matches_llama_cpp_on_a_long_text(case, tmp_path):
    text = str(tmp_path / "licenses.txt")
    if licenses_text(text) != case["text_bytes"]:
        pytest.skip("/usr/share/common-licenses differs from the fixture's (Debian's 14 license files)")
    ours = strata_perplexity(model_path(case["model"]), text, case["n_ctx"], case["chunks"], case["kv_type"],
                             case["n_tokens"], timeout=1800)
    rel = abs(ours - case["ppl"]) / case["ppl"]
    report(f"perplexity {case['name']} kv {case['kv_type']} (licenses, {case['n_scored']} scored): strata {ours:.4f} "
           f"llama.cpp {case['ppl']:.4f} ({100 * rel:.3f}%, tol {100 * REL_TOL:.1f}%)")
    assert rel <= REL_TOL


@pytest.mark.xfail(reason="508 scored tokens: last-bit noise outside attention moves the perplexity by tenths of a "
                          "percent (see the module docstring); the long text is within 0.1%", strict=False)
@pytest.mark.parametrize("case", q8_cases(), ids=lambda c: f"{c['name']}-{c['kv_type']}")
def test_perplexity_with_quantized_cache_matches_llama_cpp(case):
    ref = case["perplexity"]
    if not os.path.isfile(ref["text"]):
        pytest.skip(f"{ref['text']} not present")
    ours = strata_perplexity(model_path(case["model"]), ref["text"], ref["n_ctx"], ref["chunks"], case["kv_type"],
                             ref["n_tokens"])
    rel = abs(ours - ref["ppl"]) / ref["ppl"]
    report(f"perplexity {case['name']} kv {case['kv_type']}: strata {ours:.4f} llama.cpp {ref['ppl']:.4f} "
           f"({100 * rel:.3f}%, tol {100 * REL_TOL:.1f}%)")
    assert rel <= REL_TOL
