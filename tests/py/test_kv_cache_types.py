"""Perplexity with a q8_0 KV cache against llama.cpp's with the same cache type (which llama.cpp
runs with flash attention), same text, context and chunks as test_fidelity_perplexity.py
(fixture: tests/fixtures/models/long_context.json from scripts/gen_long_context_fixtures.py).
Within 0.1%, as for the f16 cache.

Not met yet (xfail, measured 2026-12-07 on the AVX-512 build): SmolLM2 19.2412 against 19.3610
(0.62%), Gemma 3 15.2667 against 15.3024 (0.23%). These perplexities move by tenths of a percent
with any rounding choice inside attention: llama.cpp's own f16 cache gives 19.2798 / 15.2534
without flash attention and 19.3583 / 15.2806 with it (0.41% / 0.18% apart), and rounding
Strata's probabilities to f16 moves Gemma 3 from 15.14 to 15.36."""
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


@pytest.mark.xfail(reason="0.2-0.6% from llama.cpp's q8_0 perplexity; see the module docstring", strict=False)
@pytest.mark.parametrize("case", q8_cases(), ids=lambda c: f"{c['name']}-{c['kv_type']}")
def test_perplexity_with_quantized_cache_matches_llama_cpp(case):
    ref = case["perplexity"]
    if not os.path.isfile(ref["text"]):
        pytest.skip(f"{ref['text']} not present")
    model = model_path(case["model"])
    proc = run_strata("perplexity", model, "-f", ref["text"], "-c", ref["n_ctx"], "--chunks", ref["chunks"],
                      "--kv-type", case["kv_type"])
    out, err = proc.stdout.decode(), proc.stderr.decode()
    m = re.search(r"^(\d+) tokens, ctx (\d+)$", err, re.M)
    assert m and (int(m.group(1)), int(m.group(2))) == (ref["n_tokens"], ref["n_ctx"]), err
    m = re.search(r"Final estimate: PPL = ([0-9.]+)", out + err)
    assert m, out + err
    ours = float(m.group(1))
    rel = abs(ours - ref["ppl"]) / ref["ppl"]
    report(f"perplexity {case['name']} kv {case['kv_type']}: strata {ours:.4f} llama.cpp {ref['ppl']:.4f} "
           f"({100 * rel:.3f}%, tol {100 * REL_TOL:.1f}%)")
    assert rel <= REL_TOL
