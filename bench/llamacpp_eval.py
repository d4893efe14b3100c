#!/usr/bin/env python3
"""llama.cpp (llama-cpp-python, default mmap) prompt and generation speed on random tokens, for
running beside `strata bench` inside the same memory cgroup:
    bench/in_cgroup.sh 2G python3 bench/llamacpp_eval.py MODEL 16 8 [THREADS] [--json]
--no-repack turns off llama.cpp's repacked CPU weight buffers (use_extra_bufts): by default
llama.cpp copies Q4_0/Q4_K weights into interleaved anonymous memory on AVX2/AVX-512 machines,
which is no longer the mmap'd file and cannot stay under a limit smaller than the model.
Bytes read from storage come from /proc/self/io (read_bytes: what this process made the kernel
fetch from the disk, page faults on the mapped model included).
"""
import json
import os
import random
import sys
import time

import llama_cpp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import llama_plain  # noqa: E402


def read_bytes():
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    return 0


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    as_json = "--json" in sys.argv
    if "--no-repack" in sys.argv:
        llama_plain.no_extra_buffers(llama_cpp)
    model, n_prompt, n_gen = args[0], int(args[1]), int(args[2])
    threads = int(args[3]) if len(args) > 3 else 2
    llm = llama_cpp.Llama(model_path=model, n_ctx=n_prompt + n_gen + 16, n_batch=512, n_threads=threads,
                          n_threads_batch=threads, verbose=False)
    rng = random.Random(42)
    n_vocab = llm.n_vocab()
    prompt = [rng.randrange(n_vocab) for _ in range(n_prompt)]
    t0 = time.perf_counter()
    llm.eval(prompt)
    pp = n_prompt / (time.perf_counter() - t0)
    io0 = read_bytes()
    t0 = time.perf_counter()
    for _ in range(n_gen):
        llm.eval([rng.randrange(n_vocab)])
    tg = n_gen / (time.perf_counter() - t0)
    per_token = (read_bytes() - io0) / max(1, n_gen)
    if as_json:
        print(json.dumps({"pp_tok_s": pp, "tg_tok_s": tg, "read_bytes_per_token": per_token}), flush=True)
    else:
        print(f"llama.cpp: prompt {pp:.2f} tok/s, generation {tg:.3f} tok/s, {per_token / 1e6:.1f} MB read per token")


if __name__ == "__main__":
    main()
