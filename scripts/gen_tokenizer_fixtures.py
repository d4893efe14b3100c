#!/usr/bin/env python3
"""Tokenizer fixtures from the reference (llama.cpp through the llama-cpp-python wheel).

Reads tests/fixtures/tokenizer/corpus.txt (one case per line; escapes \\n \\t \\r \\\\ \\xHH \\uHHHH
so a case can hold control characters and invalid UTF-8), tokenizes every case with each model
(parse_special on/off x add_special on/off), detokenizes, and hashes token_to_piece over the
whole vocabulary. Writes tests/fixtures/tokenizer/<model stem>.json.

Byte strings are stored as hex because they need not be valid UTF-8.

usage: scripts/gen_tokenizer_fixtures.py [--models DIR] [--out DIR]
"""
import argparse
import ctypes
import json
import os
import sys

import llama_cpp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ["SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"]
PIECE_BLOCK = 4096  # token ids per FNV-1a hash of token_to_piece output


def unescape(line: str) -> bytes:
    out = bytearray()
    i = 0
    while i < len(line):
        c = line[i]
        if c != "\\" or i + 1 == len(line):
            out += c.encode("utf-8")
            i += 1
            continue
        n = line[i + 1]
        if n == "n":
            out += b"\n"; i += 2
        elif n == "t":
            out += b"\t"; i += 2
        elif n == "r":
            out += b"\r"; i += 2
        elif n == "\\":
            out += b"\\"; i += 2
        elif n == "x":
            out.append(int(line[i + 2:i + 4], 16)); i += 4
        elif n == "u":
            out += chr(int(line[i + 2:i + 6], 16)).encode("utf-8"); i += 6
        else:
            out += b"\\"; i += 1
    return bytes(out)


def read_corpus(path):
    with open(path, encoding="utf-8") as f:
        cases = [unescape(line.rstrip("\n")) for line in f]
    return cases + [b""]  # the empty input is a case of its own


def fnv1a(h, data: bytes):
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


class Vocab:
    def __init__(self, path):
        llama_cpp.llama_backend_init()
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        self.model = llama_cpp.llama_model_load_from_file(path.encode(), params)
        if not self.model:
            sys.exit(f"cannot load {path}")
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n = llama_cpp.llama_vocab_n_tokens(self.vocab)

    def tokenize(self, text: bytes, add_special, parse_special):
        cap = len(text) + 16
        buf = (llama_cpp.llama_token * cap)()
        n = llama_cpp.llama_tokenize(self.vocab, text, len(text), buf, cap, add_special, parse_special)
        assert n >= 0, n
        return list(buf[:n])

    def detokenize(self, ids, remove_special, unparse_special) -> bytes:
        arr = (llama_cpp.llama_token * max(1, len(ids)))(*ids)
        cap = 64 + 64 * len(ids)
        buf = ctypes.create_string_buffer(cap)
        n = llama_cpp.llama_detokenize(self.vocab, arr, len(ids), buf, cap, remove_special, unparse_special)
        assert n >= 0, n
        return buf.raw[:n]

    def piece(self, tok, special) -> bytes:
        buf = ctypes.create_string_buffer(512)
        n = llama_cpp.llama_token_to_piece(self.vocab, tok, buf, 512, 0, special)
        assert n >= 0, n
        return buf.raw[:n]


def fixture(model_path, cases):
    v = Vocab(model_path)
    out = {
        "model": os.path.basename(model_path),
        "n_vocab": v.n,
        "bos": llama_cpp.llama_vocab_bos(v.vocab),
        "eos": llama_cpp.llama_vocab_eos(v.vocab),
        "eot": llama_cpp.llama_vocab_eot(v.vocab),
        "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(v.vocab)),
        "add_eos": bool(llama_cpp.llama_vocab_get_add_eos(v.vocab)),
        "eog": [t for t in range(v.n) if llama_cpp.llama_vocab_is_eog(v.vocab, t)],
        "cases": [],
    }
    for text in cases:
        ids = {}
        for parse_special in (True, False):
            for add_special in (True, False):
                key = ("special" if parse_special else "plain") + ("_bos" if add_special else "_nobos")
                ids[key] = v.tokenize(text, add_special, parse_special)
        decoded = {}
        for src in ("special_bos", "plain_nobos"):
            for remove_special in (False, True):
                for unparse_special in (False, True):
                    key = f"{src}/remove={int(remove_special)}/unparse={int(unparse_special)}"
                    decoded[key] = v.detokenize(ids[src], remove_special, unparse_special).hex()
        out["cases"].append({"input_hex": text.hex(), "ids": ids, "decoded_hex": decoded})

    # token_to_piece over the whole vocabulary, hashed per block of ids: (u32 length LE, bytes)...
    pieces = {"block": PIECE_BLOCK, "fnv_special": [], "fnv_plain": []}
    for special, key in ((True, "fnv_special"), (False, "fnv_plain")):
        h = 0xCBF29CE484222325
        for t in range(v.n):
            p = v.piece(t, special)
            h = fnv1a(h, len(p).to_bytes(4, "little") + p)
            if (t + 1) % PIECE_BLOCK == 0 or t + 1 == v.n:
                pieces[key].append(f"{h:016x}")
                h = 0xCBF29CE484222325
    out["pieces"] = pieces
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=os.path.expanduser("~/.cache/strata/models"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests/fixtures/tokenizer"))
    args = ap.parse_args()
    cases = read_corpus(os.path.join(ROOT, "tests/fixtures/tokenizer/corpus.txt"))
    for name in MODELS:
        path = os.path.join(args.models, name)
        if not os.path.exists(path):
            print(f"skip {name}: not found in {args.models}", file=sys.stderr)
            continue
        data = fixture(path, cases)
        dst = os.path.join(args.out, os.path.splitext(name)[0] + ".json")
        with open(dst, "w") as f:
            json.dump(data, f, separators=(",", ":"))
            f.write("\n")
        print(f"{dst}: {len(data['cases'])} cases, llama-cpp-python {llama_cpp.__version__}")


if __name__ == "__main__":
    main()
