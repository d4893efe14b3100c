#!/usr/bin/env python3
"""Checks that models written by `strata forge` load in llama.cpp and give finite logits.

For every architecture and type asked for, forges a model (tiny preset by default), loads it with
llama-cpp-python (the reference build: pip install ~/.cache/strata/wheels/llama_cpp_python-*.whl),
evaluates a few tokens and checks that every logit is finite and that the logits differ between
positions (a model whose weights were all zero would give constant logits).

  scripts/check_forge_with_llamacpp.py --strata build/strata
  scripts/check_forge_with_llamacpp.py --strata build/strata --presets tiny small --types Q8_0 Q4_K Q4_K_M
  scripts/check_forge_with_llamacpp.py --strata build/strata --archs llama --presets tiny-moe --fill blocks
"""
import argparse
import math
import os
import subprocess
import sys
import tempfile

ARCHS = ["llama", "qwen2", "qwen3", "qwen3moe", "gemma3"]


def forge(strata, arch, preset, type_, out, tokenizer, fill):
    cmd = [strata, "forge", "--arch", arch, "--preset", preset, "--type", type_, "--out", out, "--seed", "7",
           "--fill", fill]
    if tokenizer:
        cmd += ["--tokenizer-from", tokenizer]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def check(path, n_tokens):
    import llama_cpp

    llm = llama_cpp.Llama(model_path=path, n_ctx=64, logits_all=True, verbose=False, n_threads=2, seed=1)
    n_vocab = llm.n_vocab()
    tokens = [(17 * i + 5) % n_vocab for i in range(n_tokens)]
    llm.eval(tokens)
    rows = [list(llm.scores[i][:n_vocab]) for i in range(n_tokens)]
    bad = sum(1 for row in rows for x in row if not math.isfinite(x))
    if bad:
        return f"{bad} non-finite logits"
    if all(row == rows[0] for row in rows[1:]):
        return "logits identical at every position"
    spread = max(rows[-1]) - min(rows[-1])
    if spread <= 0:
        return "constant logits"
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strata", default=os.environ.get("STRATA_BIN", "build/strata"), help="the strata binary")
    ap.add_argument("--archs", nargs="+", default=ARCHS)
    ap.add_argument("--presets", nargs="+", default=["tiny"])
    ap.add_argument("--types", nargs="+", default=["Q8_0"])
    ap.add_argument("--tokenizer-from", default="", help="GGUF whose tokenizer is copied (strata's default if empty)")
    ap.add_argument("--fill", default="auto", choices=["auto", "values", "blocks"],
                    help="weights: quantized values or random blocks (forge --fill)")
    ap.add_argument("--tokens", type=int, default=6, help="tokens to evaluate")
    ap.add_argument("--keep", default="", help="directory to keep the forged files in")
    args = ap.parse_args()

    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print("llama_cpp is not installed: pip install ~/.cache/strata/wheels/llama_cpp_python-*.whl", file=sys.stderr)
        return 2

    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.keep or tmp
        os.makedirs(out_dir, exist_ok=True)
        for preset in args.presets:
            for arch in args.archs:
                for type_ in args.types:
                    name = f"{arch}-{preset}-{type_}"
                    path = os.path.join(out_dir, name + ".gguf")
                    try:
                        forge(args.strata, arch, preset, type_, path, args.tokenizer_from, args.fill)
                        problem = check(path, args.tokens)
                    except Exception as e:  # a load failure is a ValueError from llama_cpp
                        problem = f"{type(e).__name__}: {e}"
                    status = "ok" if problem is None else "FAIL " + problem
                    print(f"{name:32s} {status}", flush=True)
                    failures += problem is not None
    print(f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
