#!/usr/bin/env python3
"""Tokenizer fixtures from the reference (llama.cpp through the llama-cpp-python wheel).

Reads tests/fixtures/tokenizer/corpus.txt (one case per line; escapes \\n \\t \\r \\\\ \\xHH \\uHHHH
so a case can hold control characters and invalid UTF-8), tokenizes every case with each model
(parse_special on/off x add_special on/off), detokenizes, and hashes token_to_piece over the
whole vocabulary. Writes tests/fixtures/tokenizer/<model stem>.json.

Byte strings are stored as hex because they need not be valid UTF-8.

usage: scripts/gen_tokenizer_fixtures.py [--models DIR] [--out DIR]
       scripts/gen_tokenizer_fixtures.py --pre-variants BASE.gguf --names a,b,... --dir DIR --jsonl FILE
The second form (tests/py/test_fidelity_tokenize.py) writes BASE under each tokenizer.ggml.pre name into
DIR and appends llama.cpp's ids and text for the corpus, one JSON line per name, to FILE; a name that
makes llama.cpp abort kills the process, so the caller restarts it after the last line written.
"""
import argparse
import ctypes
import json
import os
import random
import sys
import tempfile
import zlib

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


# Pieces the random cases are glued from: every script and byte class the corpus has, and the
# text of special tokens (whole and cut) so the partition meets them at any offset.
RANDOM_POOL = [
    b"a", b"Z", b"the", b" the", b"ing", b"'s", b"'re", b"'LL", b"don't", b" ", b"  ", b"   ", b"\t", b"\n",
    b"\r\n", b"\n\n", b" \n", b"0", b"7", b"123", b"4567", b"3.14", b",", b".", b"!", b"?", b"...", b"--",
    b"(", b")", b"{", b"}", b"<", b">", b"/", b"#", b"@", b"$", b"_", b"*", b"~", b"`", b'"', b"'",
    "é".encode(), "ñ".encode(), "ü".encode(), "ß".encode(), "Ω".encode(), "ж".encode(), "日".encode(),
    "本語".encode(), "。".encode(), "한".encode(), "ع".encode(), "ह".encode(), "ि".encode(), "ไ".encode(),
    "😀".encode(), "👍🏽".encode(), "\u200d".encode(), "❤️".encode(), "🇺".encode(), "𠀋".encode(),
    "\u00a0".encode(), "\u3000".encode(), "\u2003".encode(), "\u0301".encode(), "²".encode(), "½".encode(),
    "▁".encode(), "Ġ".encode(), b"\xff", b"\x80", b"\xc3", b"\xe2\x82", b"\x00", b"\x1f", b"\x7f",
    b"<|im_start|>", b"<|im_end|>", b"<|endoftext|>", b"<start_of_turn>", b"<end_of_turn>", b"<bos>", b"<eos>",
    b"</s>", b"<unk>", b"<pad>", b"<|im_", b"_start|>", b"<start_of", b"<table>", b"</div>", b"<h1>",
]
N_RANDOM = 300


def random_cases(seed=1234):
    rng = random.Random(seed)
    cases = []
    for _ in range(N_RANDOM):
        n = rng.randint(1, 24)
        cases.append(b"".join(rng.choice(RANDOM_POOL) for _ in range(n)))
    return cases


# --- vocabulary variants: a real vocabulary under another pre-tokenizer / flag ---
# llama.cpp loads them vocab-only, so the reference covers pre-tokenizers we have no model for.
# The C++ test builds the same variant from the same model file (metadata copy + override).
VARIANTS = [
    # (model file, fixture name, key, GGUF type, value)
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm-vocab-pre-" + pre, "tokenizer.ggml.pre", 8, pre)
    for pre in ("llama-bpe", "qwen2", "gpt-2", "default", "starcoder", "gpt-4o", "tekken", "deepseek-coder",
                "falcon", "poro-chat")
] + [
    ("gemma-3-270m-q4_k_m.gguf", "gemma3-vocab-space-prefix", "tokenizer.ggml.add_space_prefix", 7, True),
]
N_RANDOM_VARIANT = 150

_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def _skip_value(buf, off, vtype):
    if vtype in _SCALAR:
        return off + _SCALAR[vtype]
    if vtype == 8:
        n = int.from_bytes(buf[off:off + 8], "little")
        return off + 8 + n
    if vtype == 9:
        etype = int.from_bytes(buf[off:off + 4], "little")
        n = int.from_bytes(buf[off + 4:off + 12], "little")
        off += 12
        if etype in _SCALAR:
            return off + n * _SCALAR[etype]
        for _ in range(n):
            off = _skip_value(buf, off, etype)
        return off
    raise ValueError(f"GGUF value type {vtype}")


def _encode_kv(key, vtype, value):
    k = key.encode()
    out = len(k).to_bytes(8, "little") + k + vtype.to_bytes(4, "little")
    if vtype == 8:
        v = value.encode()
        return out + len(v).to_bytes(8, "little") + v
    if vtype == 7:
        return out + bytes([1 if value else 0])
    raise ValueError(vtype)


def write_variant(src, dst, key, vtype, value):
    """Copies src's metadata (no tensors) with `key` set to `value`."""
    with open(src, "rb") as f:
        buf = f.read()
    assert buf[:4] == b"GGUF"
    version = int.from_bytes(buf[4:8], "little")
    n_kv = int.from_bytes(buf[16:24], "little")
    off = 24
    kvs = []
    for _ in range(n_kv):
        start = off
        klen = int.from_bytes(buf[off:off + 8], "little")
        k = buf[off + 8:off + 8 + klen].decode()
        off += 8 + klen
        t = int.from_bytes(buf[off:off + 4], "little")
        off = _skip_value(buf, off + 4, t)
        kvs.append((k, buf[start:off]))
    new_kv = _encode_kv(key, vtype, value)
    kvs = [(k, new_kv if k == key else raw) for k, raw in kvs]
    if key not in [k for k, _ in kvs]:
        kvs.append((key, new_kv))
    body = b"GGUF" + version.to_bytes(4, "little") + (0).to_bytes(8, "little") + len(kvs).to_bytes(8, "little")
    body += b"".join(raw for _, raw in kvs)
    body += b"\0" * (-len(body) % 32)
    with open(dst, "wb") as f:
        f.write(body)


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
            raise RuntimeError(f"llama.cpp cannot load {path}")
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


def fixture(model_path, cases, randoms, full=True):
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
    for text in (cases if full else []):
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

    # Random cases (and, for variants, the corpus too): fewer modes, to keep the fixture small.
    out["random_cases"] = []
    for text in (randoms if full else cases + randoms):
        ids = {"special_bos": v.tokenize(text, True, True), "plain_nobos": v.tokenize(text, False, False)}
        decoded = {
            "special_bos/remove=0/unparse=1": v.detokenize(ids["special_bos"], False, True).hex(),
            "special_bos/remove=1/unparse=0": v.detokenize(ids["special_bos"], True, False).hex(),
            "plain_nobos/remove=0/unparse=0": v.detokenize(ids["plain_nobos"], False, False).hex(),
        }
        out["random_cases"].append({"input_hex": text.hex(), "ids": ids, "decoded_hex": decoded})

    if not full:
        return out
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


def pre_variants(base, names, out_dir, jsonl):
    corpus = read_corpus(os.path.join(ROOT, "tests/fixtures/tokenizer/corpus.txt"))
    for name in names:
        dst = os.path.join(out_dir, f"ggml-vocab-variant-pre-{name}.gguf")
        write_variant(base, dst, "tokenizer.ggml.pre", 8, name)
        with open(jsonl, "a") as f:  # mark the start, so an abort is attributed to this name
            f.write(json.dumps({"name": name, "started": True}) + "\n")
        try:
            v = Vocab(dst)
        except RuntimeError as e:
            with open(jsonl, "a") as f:
                f.write(json.dumps({"name": name, "llama_cpp_refuses": str(e)}) + "\n")
            continue
        cases = []
        for text in corpus:
            ids = {"special_bos": v.tokenize(text, True, True), "plain_nobos": v.tokenize(text, False, False)}
            detok = {"keep/unparse": v.detokenize(ids["special_bos"], False, True).hex(),
                     "remove/hide": v.detokenize(ids["special_bos"], True, False).hex()}
            cases.append({"input_hex": text.hex(), "ids": ids, "detokenized_hex": detok})
        llama_cpp.llama_model_free(v.model)
        with open(jsonl, "a") as f:
            f.write(json.dumps({"name": name, "file": os.path.basename(dst), "cases": cases}) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=os.path.expanduser("~/.cache/strata/models"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests/fixtures/tokenizer"))
    ap.add_argument("--pre-variants", metavar="BASE")
    ap.add_argument("--names")
    ap.add_argument("--dir")
    ap.add_argument("--jsonl")
    args = ap.parse_args()
    if args.pre_variants:
        pre_variants(args.pre_variants, args.names.split(","), args.dir, args.jsonl)
        return
    cases = read_corpus(os.path.join(ROOT, "tests/fixtures/tokenizer/corpus.txt"))
    for name in MODELS:
        path = os.path.join(args.models, name)
        if not os.path.exists(path):
            print(f"skip {name}: not found in {args.models}", file=sys.stderr)
            continue
        data = fixture(path, cases, random_cases())
        dst = os.path.join(args.out, os.path.splitext(name)[0] + ".json")
        with open(dst, "w") as f:
            json.dump(data, f, separators=(",", ":"))
            f.write("\n")
        print(f"{dst}: {len(data['cases'])} corpus + {len(data['random_cases'])} random cases, llama-cpp-python {llama_cpp.__version__}")
    for name, stem, key, vtype, value in VARIANTS:
        path = os.path.join(args.models, name)
        if not os.path.exists(path):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            variant = os.path.join(tmp, stem + ".gguf")
            write_variant(path, variant, key, vtype, value)
            data = fixture(variant, cases, random_cases(seed=zlib.crc32(stem.encode()))[:N_RANDOM_VARIANT], full=False)
        data.update({"base_model": name, "override": {"key": key, "value": value}})
        dst = os.path.join(args.out, stem + ".json")
        with open(dst, "w") as f:
            json.dump(data, f, separators=(",", ":"))
            f.write("\n")
        print(f"{dst}: {len(data['random_cases'])} cases")


if __name__ == "__main__":
    main()
