#!/usr/bin/env python3
"""Regenerates tests/fixtures/models/long_context.json from llama.cpp (PyPI llama-cpp-python).

For SmolLM2 and Gemma 3 and each KV cache type (f16 with llama.cpp's default attention; q8_0,
which llama.cpp only allows with flash attention), the first N_PROMPT tokens of a real text (the
GPL-3, present on every Debian) are evaluated in one prompt, then N_STEPS more one at a time:
the top-10 logits after the prompt and after each step, all at positions beyond 4,096 (Gemma's
sliding window of 512 is long passed). Also the perplexity with a q8_0 cache by llama.cpp's
method (as scripts/gen_fidelity_fixtures.py does for f16). Read by tests/model/long_context_test.cpp
and tests/py/test_fidelity_perplexity.py.

  python3 scripts/gen_long_context_fixtures.py [--out tests/fixtures/models/long_context.json]
"""
import argparse
import json
import os
import sys

import numpy as np
import llama_cpp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_fidelity_fixtures import PERPLEXITY_CHUNKS, PERPLEXITY_CTX, PERPLEXITY_TEXT, perplexity_fixture  # noqa: E402
from llama_plain import no_extra_buffers  # noqa: E402

CACHE = os.path.expanduser(os.environ.get("STRATA_CACHE", "~/.cache/strata"))
MODELS = {"smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf", "gemma3": "gemma-3-270m-q4_k_m.gguf"}
KV_TYPES = {"f16": (llama_cpp.GGML_TYPE_F16, False), "q8_0": (llama_cpp.GGML_TYPE_Q8_0, True)}
N_PROMPT = 4100
N_STEPS = 3
N_CTX = 4160
N_TOP = 10


def top(row, k):
    ids = np.argsort(-row, kind="stable")[:k]
    return [int(i) for i in ids], [float(row[i]) for i in ids]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=os.path.join(CACHE, "models"))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "models",
                                                  "long_context.json"))
    args = ap.parse_args()
    no_extra_buffers(llama_cpp)
    with open(PERPLEXITY_TEXT, "rb") as f:
        text = f.read()
    if text.endswith(b"\n"):
        text = text[:-1]  # llama.cpp's -f drops one trailing newline
    out = {"text": PERPLEXITY_TEXT, "n_ctx": N_CTX, "llama_cpp_python": llama_cpp.__version__, "cases": []}
    for name, file in MODELS.items():
        path = os.path.join(args.models, file)
        for kv, (ggml_type, flash) in KV_TYPES.items():
            llm = llama_cpp.Llama(model_path=path, n_ctx=N_CTX, n_batch=512, n_threads=2, logits_all=False,
                                  flash_attn=flash, type_k=ggml_type, type_v=ggml_type, verbose=False)
            tokens = llm.tokenize(text, add_bos=True, special=False)[:N_PROMPT + N_STEPS]
            assert len(tokens) == N_PROMPT + N_STEPS
            llm.reset()
            n_vocab = llm.n_vocab()

            def last_logits():  # logits_all=False keeps only the last token's row, in the context
                return np.array(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,)), dtype=np.float32)

            llm.eval(tokens[:N_PROMPT])
            rows = [last_logits()]
            for t in tokens[N_PROMPT:]:
                llm.eval([t])
                rows.append(last_logits())
            positions = []
            for row in rows[:N_STEPS]:  # the last step's logits are after the last token: unused
                ids, vals = top(row, N_TOP + 1)
                positions.append({"top_ids": ids[:N_TOP], "top_logits": vals[:N_TOP], "margin": vals[0] - vals[1]})
            case = {"name": name, "model": file, "kv_type": kv, "flash_attn": flash, "tokens": [int(t) for t in tokens],
                    "n_prompt": N_PROMPT, "positions": positions}
            if kv == "q8_0":
                pl = llama_cpp.Llama(model_path=path, n_ctx=max(512, PERPLEXITY_CTX), n_batch=512, n_threads=2,
                                     logits_all=True, flash_attn=True, type_k=ggml_type, type_v=ggml_type,
                                     verbose=False)
                case["perplexity"] = perplexity_fixture(pl, text, PERPLEXITY_CTX, PERPLEXITY_CHUNKS)
                del pl
            out["cases"].append(case)
            print(name, kv, [p["top_ids"][0] for p in positions], case.get("perplexity", {}).get("ppl"),
                  file=sys.stderr)
            del llm
    with open(args.out, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
