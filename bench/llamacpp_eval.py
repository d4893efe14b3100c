#!/usr/bin/env python3
"""llama.cpp (llama-cpp-python) prompt and generation speed on random tokens, for running beside
`strata bench` inside the same memory cgroup: bench/in_cgroup.sh 2G python3 bench/llamacpp_eval.py MODEL 16 8
"""
import random
import sys
import time

import llama_cpp


def main():
    model, n_prompt, n_gen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    llm = llama_cpp.Llama(model_path=model, n_ctx=n_prompt + n_gen + 16, n_batch=512, n_threads=threads,
                          n_threads_batch=threads, verbose=False)
    rng = random.Random(42)
    n_vocab = llm.n_vocab()
    prompt = [rng.randrange(n_vocab) for _ in range(n_prompt)]
    t0 = time.perf_counter()
    llm.eval(prompt)
    pp = n_prompt / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(n_gen):
        llm.eval([rng.randrange(n_vocab)])
    print(f"llama.cpp: prompt {pp:.2f} tok/s, generation {n_gen / (time.perf_counter() - t0):.3f} tok/s")


if __name__ == "__main__":
    main()
