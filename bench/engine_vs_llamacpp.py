#!/usr/bin/env python3
"""Strata against llama.cpp (llama-cpp-python) on the same machine, in the same run.

For each model: prompt processing (512 tokens) and generation (128 tokens) with the same thread
count and the same random tokens, the ratios Strata/llama.cpp, and how close Strata's generation
is to the memory-bandwidth bound (weight bytes read per token / measured read bandwidth).
Usage: python3 bench/engine_vs_llamacpp.py --strata build/strata [--threads 2] [--skip-8b]
"""
import argparse
import json
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import llama_plain  # noqa: E402

CACHE = os.path.expanduser(os.environ.get("STRATA_CACHE", "~/.cache/strata"))
MODELS = os.path.join(CACHE, "models")


def bench_strata(strata, model, threads, n_prompt, n_gen):
    out = subprocess.run([strata, "bench", model, "-t", str(threads), "-p", str(n_prompt), "-n", str(n_gen), "--json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def bench_llamacpp(model, threads, n_prompt, n_gen):
    # On its plain CPU buffers: the repacked ones segfault in this llama-cpp-python build (llama_plain.py).
    llm = llama_plain.plain_cpu_llama(model, n_ctx=n_prompt + n_gen + 16, n_batch=512, n_ubatch=512, n_threads=threads,
                                      n_threads_batch=threads, verbose=False)
    return time_llama(llm, n_prompt, n_gen)


def time_llama(llm, n_prompt, n_gen):
    """Prompt and generation tok/s of a loaded llama_cpp.Llama on random tokens, as `strata bench` measures."""
    rng = random.Random(42)
    n_vocab = llm.n_vocab()
    prompt = [rng.randrange(n_vocab) for _ in range(n_prompt)]
    llm.eval(prompt[:1])  # warm-up: pages the weights in, as strata bench does
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    pp = n_prompt / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(n_gen):
        llm.eval([rng.randrange(n_vocab)])
    tg = n_gen / (time.perf_counter() - t0)
    return {"pp_tok_s": pp, "tg_tok_s": tg}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--strata", default="build/strata")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-prompt", type=int, default=512)
    ap.add_argument("--n-gen", type=int, default=128)
    ap.add_argument("--skip-8b", action="store_true", help="leave out the forged llama-3-8b (4.6 GB)")
    args = ap.parse_args()

    models = [("SmolLM2-135M Q4_1", os.path.join(MODELS, "SmolLM2-135M-Instruct.Q4_1.gguf")),
              ("Gemma 3 270M Q4_K_M", os.path.join(MODELS, "gemma-3-270m-q4_k_m.gguf"))]
    if not args.skip_8b:
        forged = os.path.join(MODELS, "forged-llama-3-8b-Q4_K_M.gguf")
        if not os.path.exists(forged):
            subprocess.run([args.strata, "forge", "--arch", "llama", "--preset", "llama-3-8b", "--type", "Q4_K_M",
                            "--out", forged], check=True)
        models.append(("forged llama-3-8b Q4_K_M", forged))

    rows = []
    for name, path in models:
        s = bench_strata(args.strata, path, args.threads, args.n_prompt, args.n_gen)
        l = bench_llamacpp(path, args.threads, args.n_prompt, args.n_gen)
        rows.append((name, s, l))
        print(f"{name}: strata pp {s['pp_tok_s']:.1f} tg {s['tg_tok_s']:.2f} | llama.cpp pp {l['pp_tok_s']:.1f} "
              f"tg {l['tg_tok_s']:.2f}", file=sys.stderr)

    print(f"\n{args.threads} threads, pp{args.n_prompt} / tg{args.n_gen}\n")
    print("| model | strata pp tok/s | llama.cpp pp tok/s | pp ratio | strata tg tok/s | llama.cpp tg tok/s "
          "| tg ratio | weights/token | bandwidth bound tg | strata % of bound |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, s, l in rows:
        print(f"| {name} | {s['pp_tok_s']:.1f} | {l['pp_tok_s']:.1f} | {s['pp_tok_s'] / l['pp_tok_s']:.2f}x "
              f"| {s['tg_tok_s']:.2f} | {l['tg_tok_s']:.2f} | {s['tg_tok_s'] / l['tg_tok_s']:.2f}x "
              f"| {s['weight_bytes_per_token'] / 1e6:.0f} MB | {s['tg_bound_tok_s']:.1f} "
              f"({s['read_bandwidth_gb_s']:.1f} GB/s) | {100 * s['tg_tok_s'] / s['tg_bound_tok_s']:.0f}% |")


if __name__ == "__main__":
    main()
