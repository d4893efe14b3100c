#!/usr/bin/env python3
"""Regenerates the forged-model fixtures from llama.cpp (PyPI llama-cpp-python).

For every architecture and weight type below, forges a model with `strata forge` (deterministic
random weights, the SmolLM2 tokenizer by default), evaluates a fixed token sequence in llama.cpp
with all logits kept, and stores in tests/fixtures/forged/<name>.json: the forge arguments, the
file's sha256 (tests/model/forged_test.cpp forges again and checks it, so the file Strata reads is
the one llama.cpp read), the tokens and, per position, the top-20 ids and logits, the top-2
margin and the logits of a fixed spread of 64 ids.

  python3 scripts/gen_forged_fixtures.py --strata build/strata [--out tests/fixtures/forged]
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import llama_cpp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_plain import no_extra_buffers  # noqa: E402

CACHE = os.path.expanduser(os.environ.get("STRATA_CACHE", "~/.cache/strata"))
TOKENIZER = os.path.join(CACHE, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")

SEED = 1
N_CTX = 256
N_TOKENS = 20  # more than gemma3 tiny's 16-token sliding window; 20 keeps the fixtures under 300 KB
N_TOP = 20
N_SPREAD = 64

# (arch, preset, type, fill). tiny rows are 64 wide, so K-quants only apply on small; there the
# weights are random valid blocks (forge --fill blocks): every bit of the K-quant blocks in play,
# and forging takes 0.1 s instead of seconds of reference quantization.
CASES = [(arch, preset, type_, "values")
         for arch, preset in [("llama", "tiny"), ("llama", "tiny-moe"), ("qwen2", "tiny"), ("qwen3", "tiny"),
                              ("qwen3moe", "tiny"), ("gemma3", "tiny")]
         for type_ in ["Q8_0", "F16"]]
CASES += [(arch, "small", "Q4_K_M", "blocks") for arch in ["llama", "qwen2", "qwen3", "qwen3moe", "gemma3"]]
# gpt-oss as it ships (MXFP4 experts, Q8_0 elsewhere) and in F16: sinks, alternating windows of 8
# (shorter than the 20 tokens), biases everywhere, the clamped SwiGLU and YaRN.
CASES += [("gpt-oss", "tiny", "MXFP4_MOE", "values"), ("gpt-oss", "tiny", "F16", "values")]
# Qwen3.5: gated delta-rule layers (conv1d history and recurrent state) between gated full-attention
# layers with partial (interleaved M-RoPE) rope; routed and shared experts in the MoE form.
CASES += [("qwen35moe", "tiny", "Q8_0", "values"), ("qwen35moe", "tiny", "F16", "values"),
          ("qwen35", "tiny", "F16", "values"), ("qwen35moe", "small", "Q4_K_M", "blocks")]


def case_name(arch, preset, type_):
    return f"{arch}-{preset}-{type_}"


def fixed_tokens(n_vocab):
    # Spread over the vocabulary, never a special token at the start (ids 0..16 are SmolLM2's).
    return [int(100 + (7919 * i + 13) % (n_vocab - 100)) for i in range(N_TOKENS)]


def spread_ids(n_vocab):
    return [int(i) for i in np.linspace(0, n_vocab - 1, N_SPREAD).astype(np.int64)]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def evaluate(path, plain_buffers=False):
    if plain_buffers:
        no_extra_buffers()
    llm = llama_cpp.Llama(model_path=path, n_ctx=N_CTX, n_batch=N_CTX, n_threads=2, logits_all=True,
                          flash_attn=False, verbose=False)
    n_vocab = llm.n_vocab()
    tokens = fixed_tokens(n_vocab)
    llm.eval(tokens)
    return n_vocab, tokens, np.array(llm.scores[: len(tokens)], dtype=np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strata", default=os.environ.get("STRATA_BIN", "build/strata"))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "forged"))
    ap.add_argument("--only", nargs="*", default=[], help="case names to regenerate (default all)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for arch, preset, type_, fill in CASES:
            name = case_name(arch, preset, type_)
            if args.only and name not in args.only:
                continue
            path = os.path.join(tmp, name + ".gguf")
            forge_args = ["--arch", arch, "--preset", preset, "--type", type_, "--seed", str(SEED), "--fill", fill]
            subprocess.run([args.strata, "forge", *forge_args, "--tokenizer-from", TOKENIZER, "--out", path],
                           check=True, stdout=subprocess.DEVNULL)
            n_vocab, tokens, scores = evaluate(path, plain_buffers=arch in ("gpt-oss", "qwen35", "qwen35moe"))
            spread = spread_ids(n_vocab)
            positions = []
            for row in scores:
                ids = np.argsort(-row, kind="stable")[:N_TOP]
                positions.append({
                    "top_ids": [int(i) for i in ids],
                    "top_logits": [round(float(row[i]), 4) for i in ids],
                    "margin": round(float(row[ids[0]] - row[ids[1]]), 4),
                    "spread_logits": [round(float(row[i]), 4) for i in spread],
                })
            data = {
                "name": name, "forge_args": forge_args, "sha256": sha256(path), "n_vocab": n_vocab, "n_ctx": N_CTX,
                "llama_cpp_python": llama_cpp.__version__, "tokens": tokens, "spread_ids": spread,
                "positions": positions,
            }
            with open(os.path.join(args.out, name + ".json"), "w") as f:
                json.dump(data, f, indent=None, separators=(",", ":"))
            margins = [p["margin"] for p in positions]
            stored = [x for p in positions for x in p["top_logits"] + p["spread_logits"]]
            span = max(stored) - min(stored)  # as forged_test.cpp measures it
            print(f"{name:28s} logit range {min(stored):7.3f}..{max(stored):6.3f}, top-2 margin median "
                  f"{np.median(margins):.3f}, {sum(m > 0.04 * span for m in margins)}/{len(margins)} above 4% of the "
                  f"range (decisive for forged_test.cpp)",
                  file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
