"""Perplexity with a q8_0 KV cache against llama.cpp's with the same cache type (which llama.cpp
runs with flash attention), same text, context and chunks as test_fidelity_perplexity.py
(fixture: tests/fixtures/models/long_context.json from scripts/gen_long_context_fixtures.py).
Within 0.1%, as for the f16 cache.

Not met yet (xfail, measured 2026-12-07 on the AVX-512 build): SmolLM2 19.2412 against 19.3610
(0.62%), Gemma 3 15.2667 against 15.3024 (0.23%).

Cause, as far as it was traced: at this size (508 scored tokens) the perplexity moves by tenths
of a percent with any last-bit change inside attention, because every matmul re-quantizes its
input to 8 bits (Q8_1 / Q8_K activations for Q4_1 / Q4_K weights) and the cache is q8_0: one bit
elsewhere flips a rounding there, a whole quantum downstream. Measured on the same build:
- llama.cpp's own f16 cache: 19.2798 / 15.2534 without flash attention, 19.3583 / 15.2806 with it.
- Strata's online kernel on an f16 cache: 19.2881 / 15.1400; the same with the query left in f32
  (as llama.cpp's tiled f16 flash kernel keeps it): 19.3032 / 15.3308.
- A step-for-step copy of ggml-cpu's flash_attn_ext_f16_one_chunk, which is what llama.cpp runs
  for a q8_0 cache (query quantized to q8_0 and dotted with the q8_0 vec_dot key by key, glibc
  expf per key, V dequantized to f32 and added with an FMA, S = S * ms + vs, one division at the
  end): 19.3327 / 15.4346 with S rounded twice, 19.4313 / 15.4019 with S as one FMA. Neither is
  within 0.1%, and the two differ from each other by 0.5% on a last-bit choice.
So 0.1% on this text needs the whole forward pass bit for bit equal to llama.cpp's (its prompt
matmuls included, which on this AMX machine may go through its repacked kernels), not a closer
attention kernel.

A longer text does not close it either (measured 2026-12-07, same build, 2 threads): the 14
licenses of /usr/share/common-licenses (no links, in name order, concatenated: 237,320 bytes,
52,177 SmolLM2 tokens), context 256, 64 chunks, 8,128 scored tokens: Strata 17.4082, llama.cpp
(q8_0 cache, flash attention, plain CPU buffers) 17.3630, 0.26% apart. The running values wander
from -0.19% to +0.26% apart between chunks 20 and 64 (0.00% at chunk 22, 0.02% at 26 and 32):
single chunks still move the gap by tenths of a percent at this length, so whether all 203
chunks of the text would land within 0.1% is not known (llama.cpp took 875 s for 64 chunks on
this loaded machine). Command: build/strata perplexity SmolLM2-135M-Instruct.Q4_1.gguf -f licenses.txt -c 256
--chunks 64 --kv-type q8_0; the reference: scripts/gen_fidelity_fixtures.perplexity_fixture on the
same text with type_k = type_v = q8_0 and flash_attn on."""
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


@pytest.mark.xfail(reason="0.2-0.6% from llama.cpp's q8_0 perplexity at 508 scored tokens, still 0.26% at 8,128 "
                          "(SmolLM2, 14 license texts); see the module docstring", strict=False)
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
