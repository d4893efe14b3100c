#!/usr/bin/env python3
"""Regenerates the model reference fixtures from llama.cpp (PyPI llama-cpp-python).

For each real model and prompt it stores the prompt's token ids (as llama.cpp tokenizes them),
llama.cpp's greedy continuation, and its logits: top-10 at every prompt position and, for the
last position, the top 100 plus a fixed spread of 256 ids. Run: scripts/setup_reference.sh &&
python3 scripts/gen_model_fixtures.py [--models DIR] [--out DIR]
"""
import argparse
import json
import os
import sys

import numpy as np
import llama_cpp

CACHE = os.path.expanduser(os.environ.get("STRATA_CACHE", "~/.cache/strata"))

LONG_TEXT = " ".join(
    f"Paragraph {i}: the solid state drive streams weights into a small pool while the processor "
    f"computes the previous layer, and the cache keeps the experts that fire most often."
    for i in range(20))

MODELS = {
    "smollm2": ("SmolLM2-135M-Instruct.Q4_1.gguf", [
        "The capital of France is",
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
        "def fibonacci(n):",
        "Once upon a time, in a small village,",
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nName three colors.<|im_end|>\n<|im_start|>assistant\n",
    ]),
    "gemma3": ("gemma-3-270m-q4_k_m.gguf", [
        "The capital of France is",
        "<start_of_turn>user\nWrite a short poem about the sea.<end_of_turn>\n<start_of_turn>model\n",
        "def fibonacci(n):",
        "<start_of_turn>user\nWhat is the boiling point of water?<end_of_turn>\n<start_of_turn>model\n",
        LONG_TEXT,  # longer than gemma's 512-token sliding window
    ]),
}
N_GREEDY = 32
N_CTX = 1024


def spread_ids(n_vocab, count=256):
    return [int(i) for i in np.linspace(0, n_vocab - 1, count).astype(np.int64)]


def top(row, k):
    ids = np.argsort(-row, kind="stable")[:k]
    return [int(i) for i in ids], [float(row[i]) for i in ids]


def run_model(path, prompts):
    llm = llama_cpp.Llama(model_path=path, n_ctx=N_CTX, n_batch=512, n_threads=2, logits_all=True,
                          flash_attn=False, verbose=False)
    n_vocab = llm.n_vocab()
    out = []
    for prompt in prompts:
        tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
        llm.reset()
        llm.eval(tokens)
        scores = np.array(llm.scores[: len(tokens)], dtype=np.float32)
        positions = []
        for p in range(len(tokens)):
            ids, vals = top(scores[p], 10)
            second = float(np.sort(scores[p])[-2])
            positions.append({"top_ids": ids, "top_logits": vals, "margin": vals[0] - second})
        last = scores[-1]
        ids, vals = top(last, 100)
        spread = spread_ids(n_vocab)
        # Greedy continuation.
        generated, margins = [], []
        for _ in range(N_GREEDY):
            row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            best2 = np.sort(row)[-2:]
            tok = int(np.argmax(row))
            if llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llm.model), tok):
                break
            generated.append(tok)
            margins.append(float(best2[1] - best2[0]))  # how decisive llama.cpp's choice was
            llm.eval([tok])
        out.append({
            "prompt": prompt,
            "tokens": [int(t) for t in tokens],
            "positions": positions if len(tokens) <= 64 else positions[-16:],
            "positions_from": 0 if len(tokens) <= 64 else len(tokens) - 16,
            "last_top_ids": ids, "last_top_logits": vals,
            "spread_ids": spread, "spread_logits": [float(last[i]) for i in spread],
            "greedy": generated,
            "greedy_margins": margins,
            "greedy_text": llm.detokenize(generated).decode("utf-8", errors="replace"),
        })
    return {"n_vocab": n_vocab, "n_ctx": N_CTX, "llama_cpp_python": llama_cpp.__version__, "prompts": out}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=os.path.join(CACHE, "models"))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "models"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name, (file, prompts) in MODELS.items():
        data = run_model(os.path.join(args.models, file), prompts)
        data["model"] = file
        with open(os.path.join(args.out, f"{name}.json"), "w") as f:
            json.dump(data, f, indent=None, separators=(",", ":"))
        print(f"{name}: {[len(p['tokens']) for p in data['prompts']]} prompt tokens;",
              [p["greedy_text"][:40] for p in data["prompts"]], file=sys.stderr)


if __name__ == "__main__":
    main()
