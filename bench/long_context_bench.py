#!/usr/bin/env python3
"""Prompt and generation speed as the context grows: Strata against llama.cpp (llama-cpp-python)
in the same run, interleaved (every repeat runs every engine at every length before the next
repeat), medians reported. llama.cpp runs with its flash attention off and on; its better median
of the two is the one compared (issue 19's rule).

For each model and context N: a prompt of N random tokens, then --n-gen generated tokens (each
engine in a fresh process). Reports tok/s, the ratios Strata / llama.cpp, and each engine's
generation slowdown from the shortest to the longest context.

  python3 bench/long_context_bench.py --strata build/strata [--threads 2] [--repeats 3]
      [--contexts 512,2048,4000,8000] [--n-gen 32] [--kv-type f16] [--models smollm2,gemma3] [--no-repack]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import engine_vs_llamacpp  # noqa: E402  (time_llama: the same timing as make bench)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import llama_plain  # noqa: E402

CACHE = os.path.expanduser(os.environ.get("STRATA_CACHE", "~/.cache/strata"))
MODELS = {
    "smollm2": ("SmolLM2-135M Q4_1", os.path.join(CACHE, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")),
    "gemma3": ("Gemma 3 270M Q4_K_M", os.path.join(CACHE, "models", "gemma-3-270m-q4_k_m.gguf")),
    "llama8b": ("forged llama-3-8b Q4_K_M", os.path.join(CACHE, "models", "forged-llama-3-8b-Q4_K_M.gguf")),
}
KV_GGML = {"f16": 1, "q8_0": 8, "q4_0": 2}


def llama_worker(model, threads, n_prompt, n_gen, flash, kv_type, no_repack):
    """Runs in a child process: one llama.cpp measurement, printed as JSON."""
    import llama_cpp
    # --no-repack: llama.cpp's repacked weight buffers off (scripts/llama_plain.py says why).
    if no_repack:
        llama_plain.no_extra_buffers(llama_cpp)
    t = KV_GGML[kv_type]
    llm = llama_cpp.Llama(model_path=model, n_ctx=n_prompt + n_gen + 16, n_batch=512, n_ubatch=512,
                          n_threads=threads, n_threads_batch=threads, flash_attn=flash, type_k=t, type_v=t,
                          verbose=False)
    print(json.dumps(engine_vs_llamacpp.time_llama(llm, n_prompt, n_gen)))


def run_llama(model, threads, n_prompt, n_gen, flash, kv_type, no_repack):
    out = subprocess.run([sys.executable, __file__, "--llama-worker", model, str(threads), str(n_prompt), str(n_gen),
                          "1" if flash else "0", kv_type, "1" if no_repack else "0"], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_strata(strata, model, threads, n_prompt, n_gen, kv_type):
    out = subprocess.run([strata, "bench", model, "-t", str(threads), "-p", str(n_prompt), "-n", str(n_gen),
                          "--kv-type", kv_type, "--json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--llama-worker":
        m, th, p, g, fa, kv, nr = sys.argv[2:9]
        return llama_worker(m, int(th), int(p), int(g), fa == "1", kv, nr == "1")
    ap = argparse.ArgumentParser()
    ap.add_argument("--strata", default="build/strata")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--contexts", default="512,2048,4000,8000")
    ap.add_argument("--n-gen", type=int, default=32)
    ap.add_argument("--kv-type", default="f16", choices=sorted(KV_GGML))
    ap.add_argument("--models", default="smollm2,gemma3", help="of " + ",".join(MODELS))
    ap.add_argument("--no-repack", action="store_true",
                    help="llama.cpp without its repacked AMX/interleaved weight buffers (use_extra_bufts=False)")
    args = ap.parse_args()
    contexts = [int(c) for c in args.contexts.split(",")]
    engines = ["strata", "llama.cpp", "llama.cpp fa"]
    if args.kv_type != "f16":
        engines.remove("llama.cpp")  # llama.cpp quantizes its V cache only with flash attention
    runs = {}  # (model, ctx, engine) -> list of results
    for rep in range(args.repeats):
        for key in args.models.split(","):
            name, path = MODELS[key]
            if not os.path.exists(path):
                print(f"skip {name}: {path} not found", file=sys.stderr)
                continue
            for n in contexts:
                for engine in engines:
                    if engine == "strata":
                        r = run_strata(args.strata, path, args.threads, n, args.n_gen, args.kv_type)
                    else:
                        r = run_llama(path, args.threads, n, args.n_gen, engine.endswith("fa"), args.kv_type, args.no_repack)
                    runs.setdefault((key, n, engine), []).append(r)
                    print(f"[{rep + 1}/{args.repeats}] {name} ctx {n} {engine}: pp {r['pp_tok_s']:.1f} "
                          f"tg {r['tg_tok_s']:.2f}", file=sys.stderr)

    def med(key, n, engine, field):
        return statistics.median(r[field] for r in runs[(key, n, engine)])

    print(f"\n{args.threads} threads, prompt of N random tokens then {args.n_gen} generated, KV {args.kv_type}, "
          f"medians of {args.repeats} interleaved runs; llama.cpp: the better of flash attention off/on\n")
    print("| model | context | strata pp | llama.cpp pp (off / on) | pp ratio | strata tg | llama.cpp tg (off / on) "
          "| tg ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for key in args.models.split(","):
        if not any(k[0] == key for k in runs):
            continue
        name = MODELS[key][0]
        slow = {}
        for n in contexts:
            llama = [e for e in engines if e != "strata"]
            pp = {e: med(key, n, e, "pp_tok_s") for e in engines}
            tg = {e: med(key, n, e, "tg_tok_s") for e in engines}
            best_pp, best_tg = max(pp[e] for e in llama), max(tg[e] for e in llama)
            slow[n] = (tg["strata"], best_tg)
            fmt = lambda d: " / ".join(f"{d[e]:.1f}" for e in llama)  # noqa: E731
            print(f"| {name} | {n} | {pp['strata']:.1f} | {fmt(pp)} | {pp['strata'] / best_pp:.2f}x | "
                  f"{tg['strata']:.2f} | {fmt(tg)} | {tg['strata'] / best_tg:.2f}x |")
        lo, hi = contexts[0], contexts[-1]
        print(f"| {name} | tg slowdown {lo} -> {hi} | | | | {slow[lo][0] / slow[hi][0]:.2f}x | "
              f"{slow[lo][1] / slow[hi][1]:.2f}x | |")


if __name__ == "__main__":
    main()
