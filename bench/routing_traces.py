#!/usr/bin/env python3
"""Routing traces of the trained MoE model (tests/models/strata-moe-pystd.gguf) on three kinds of
text, for bench/routing_replay.py: each kind's prompts run greedily one token a pass
(`strata run -b 1 -n TOKENS --greedy -c 512 --fresh --trace-routing`), and their traces are joined
into one file per kind (one header; each prompt's records follow the last one's, as a server's
cache would see the prompts one after another).

    python3 bench/routing_traces.py [--strata build/strata] [--out DIR] [--tokens 96]
    python3 bench/routing_replay.py DIR/code.txt DIR/prose.txt DIR/chat.txt

Prompts (text a Debian machine has; the model's domain is Python's standard library and licence
texts, its held-out text GPL-3):
  code   the first 1,200 characters of posixpath.py, shlex.py, warnings.py and types.py
         (/usr/lib/python3.11)
  prose  four pieces of 1,200 characters of the GPL-3's terms (/usr/share/common-licenses/GPL-3,
         held out of training), from characters 3,000, 12,000, 20,000 and 28,000
  chat   four ChatML questions (CHAT below), out of the model's domain
"""
import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(HERE, "..", "tests", "models", "strata-moe-pystd.gguf")
PROMPT_CHARS = 1200  # about 300 tokens: within the model's 512 context with the generated tokens
CODE = ["posixpath.py", "shlex.py", "warnings.py", "types.py"]
PROSE_AT = [3000, 12000, 20000, 28000]
CHAT = [
    "How do I read a file line by line in Python?",
    "What is the difference between a list and a tuple, and when should I use each one?",
    "Write a function that returns the n-th Fibonacci number without recursion.",
    "Can I use software under the GPL in a commercial product? Explain briefly.",
]
HEADER_TAGS = ("strata-routing-trace", "model", "n_layer", "expert_bytes")


def prompts(kind):
    if kind == "code":
        out = []
        for name in CODE:
            with open(os.path.join("/usr/lib/python3.11", name), encoding="utf-8") as f:
                out.append(f.read()[:PROMPT_CHARS])
        return out
    if kind == "prose":
        with open("/usr/share/common-licenses/GPL-3", encoding="utf-8") as f:
            text = f.read()
        return [text[at:at + PROMPT_CHARS] for at in PROSE_AT]
    if kind == "chat":
        return [f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n" for q in CHAT]
    raise ValueError(kind)


def trace_one(strata, prompt, tokens, path):
    cmd = [strata, "run", MODEL, "-b", "1", "-n", str(tokens), "--greedy", "-c", "512", "--fresh", "-t", "2",
           "--trace-routing", path, "-p", prompt]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:8])} ... failed: {p.stderr[-1500:]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strata", default=os.path.join(HERE, "..", "build", "strata"))
    ap.add_argument("--out", required=True, help="folder for code.txt, prose.txt, chat.txt")
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--kinds", default="code,prose,chat")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for kind in a.kinds.split(","):
        lines = []
        with tempfile.TemporaryDirectory() as tmp:
            for n, text in enumerate(prompts(kind)):
                part = os.path.join(tmp, f"{n}.txt")
                trace_one(a.strata, text, a.tokens, part)
                with open(part) as f:
                    body = f.read().splitlines()
                if not lines:
                    lines += [ln for ln in body if ln.split(" ", 1)[0] in HEADER_TAGS]
                lines += [ln for ln in body if ln.split(" ", 1)[0] not in HEADER_TAGS]
        dst = os.path.join(a.out, f"{kind}.txt")
        with open(dst, "w") as f:
            f.write("\n".join(lines) + "\n")
        n_tokens = sum(1 for ln in lines if ln.startswith("r 0 "))
        print(f"{dst}: {len(prompts(kind))} prompts, {n_tokens} tokens", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
