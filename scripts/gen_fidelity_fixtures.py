#!/usr/bin/env python3
"""Fixtures for the fidelity commands (`strata logits`, `strata perplexity`) from llama.cpp.

For each real model:
  - logits: 3 prompts tokenized as `strata logits` does (BOS as the model's metadata asks, special
    tokens parsed); llama.cpp's top-10 ids and logits after the prompt, the top-1 margin, and the
    logits at a fixed spread of 64 ids (to check `--out`).
  - perplexity of PERPLEXITY_TEXT at context PERPLEXITY_CTX over PERPLEXITY_CHUNKS chunks, by
    llama-perplexity's method (tools/perplexity/perplexity.cpp, perplexity()):
      * the file is read whole and one trailing '\\n' dropped (common/arg.cpp, -f);
      * tokenized once with add_special=true, parse_special=false (common_tokenize(ctx, text, true));
      * n_chunks = min(--chunks, n_tokens / n_ctx); the KV cache is cleared before every chunk;
      * the chunk's first token is replaced by BOS only when the vocabulary's add_bos is set
        (SmolLM2: add_bos_token=false, so no BOS anywhere; Gemma 3: BOS);
      * positions first = n_ctx/2 .. n_ctx-2 are scored, each predicting the next token, with
        -log_softmax = -(logit[tok] - max - log(sum expf(logit - max))) summed in double;
      * PPL = exp(mean), error = sqrt((mean(nll^2) - mean^2) / (count - 1)) * PPL.
    llama-perplexity batches several chunks as parallel sequences; here each chunk is evaluated on
    its own, which changes only the summation order inside the kernels.

Run: scripts/setup_reference.sh && python3 scripts/gen_fidelity_fixtures.py [--models DIR] [--out DIR]
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import llama_cpp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.expanduser(os.environ.get("STRATA_CACHE", "~/.cache/strata"))

PERPLEXITY_TEXT = "/usr/share/common-licenses/GPL-3"  # present on every Debian
PERPLEXITY_CTX = 256
PERPLEXITY_CHUNKS = 4

MODELS = {
    "smollm2": ("SmolLM2-135M-Instruct.Q4_1.gguf", [
        "The capital of France is",
        "<|im_start|>user\nWhat is the largest planet in the solar system?<|im_end|>\n<|im_start|>assistant\n",
        "import numpy as np\n\ndef mean(xs):\n    return",
    ]),
    "gemma3": ("gemma-3-270m-q4_k_m.gguf", [
        "The capital of France is",
        "<start_of_turn>user\nWhat is the largest planet in the solar system?<end_of_turn>\n<start_of_turn>model\n",
        "import numpy as np\n\ndef mean(xs):\n    return",
    ]),
}
N_TOP = 10
N_SPREAD = 64


def top(row, k):
    ids = np.argsort(-row, kind="stable")[:k]
    return [int(i) for i in ids], [float(row[i]) for i in ids]


def logits_fixture(llm, prompts):
    n_vocab = llm.n_vocab()
    spread = [int(i) for i in np.linspace(0, n_vocab - 1, N_SPREAD).astype(np.int64)]
    out = []
    for prompt in prompts:
        tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
        llm.reset()
        llm.eval(tokens)
        row = np.array(llm.scores[len(tokens) - 1], dtype=np.float32)
        ids, vals = top(row, N_TOP + 1)  # one more, to know how separated the 10th is
        out.append({
            "prompt": prompt,
            "tokens": [int(t) for t in tokens],
            "top_ids": ids[:N_TOP],
            "top_logits": vals[:N_TOP],
            "next_logit": vals[N_TOP],  # the 11th, for the margin of the top-10 set
            "spread_ids": spread,
            "spread_logits": [float(row[i]) for i in spread],
        })
    return out


def log_softmax(row, tok):
    # As llama.cpp's log_softmax: float max, expf of float differences, double sum.
    mx = np.float32(row.max())
    sum_exp = float(np.exp(row - mx, dtype=np.float32).astype(np.float64).sum())
    return float(row[tok] - mx) - math.log(sum_exp)


def perplexity_fixture(llm, text, n_ctx, max_chunks):
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
    bos = llama_cpp.llama_vocab_bos(vocab)
    assert not llama_cpp.llama_vocab_get_add_eos(vocab)
    tokens = llm.tokenize(text, add_bos=True, special=False)
    assert len(tokens) >= 2 * n_ctx
    n_chunks = min(max_chunks, len(tokens) // n_ctx)
    first = n_ctx // 2
    nll = nll2 = 0.0
    count = 0
    running = []
    for c in range(n_chunks):
        chunk = list(tokens[c * n_ctx:(c + 1) * n_ctx])
        if add_bos:
            chunk[0] = bos
        llm.reset()
        llm.eval(chunk)
        scores = np.array(llm.scores[:n_ctx], dtype=np.float32)
        for i in range(first, n_ctx - 1):
            # The target is the original token: only the fed first token is replaced by BOS.
            v = -log_softmax(scores[i], tokens[c * n_ctx + i + 1])
            nll += v
            nll2 += v * v
            count += 1
        running.append(math.exp(nll / count))
    mean = nll / count
    ppl = math.exp(mean)
    var = nll2 / count - mean * mean
    return {
        "text": PERPLEXITY_TEXT,
        "n_ctx": n_ctx,
        "chunks": n_chunks,
        "n_tokens": len(tokens),
        "add_bos": add_bos,
        "first_tokens": [int(t) for t in tokens[:16]],
        "n_scored": count,
        "running_ppl": running,
        "ppl": ppl,
        "ppl_error": math.sqrt(var / (count - 1)) * ppl,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=os.path.join(CACHE, "models"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "fidelity"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    with open(PERPLEXITY_TEXT, "rb") as f:
        text = f.read()
    if text.endswith(b"\n"):
        text = text[:-1]  # llama.cpp's -f drops one trailing newline
    for name, (file, prompts) in MODELS.items():
        path = os.path.join(args.models, file)
        if not os.path.exists(path):
            print(f"skip {name}: {path} not found", file=sys.stderr)
            continue
        llm = llama_cpp.Llama(model_path=path, n_ctx=max(512, PERPLEXITY_CTX), n_batch=512, n_threads=2,
                              logits_all=True, flash_attn=False, verbose=False)
        data = {
            "model": file,
            "n_vocab": llm.n_vocab(),
            "llama_cpp_python": llama_cpp.__version__,
            "logits": logits_fixture(llm, prompts),
            "perplexity": perplexity_fixture(llm, text, PERPLEXITY_CTX, PERPLEXITY_CHUNKS),
        }
        with open(os.path.join(args.out, f"{name}.json"), "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        p = data["perplexity"]
        print(f"{name}: PPL {p['ppl']:.4f} +/- {p['ppl_error']:.5f} ({p['chunks']} chunks of {p['n_ctx']}, "
              f"{p['n_tokens']} tokens); top-1 {[l['top_ids'][0] for l in data['logits']]}", file=sys.stderr)


if __name__ == "__main__":
    main()
