"""`strata tokenize` against llama.cpp's token ids (tests/fixtures/tokenizer, from
scripts/gen_tokenizer_fixtures.py), through the CLI and byte-exact: every text goes in with -f.

The fixture has four modes per corpus line: special_/plain_ (parse_special on/off) x _bos/_nobos
(add_special on/off), which are the CLI's --parse-special and the absence of --no-special. To keep
the runtime low (one process per text), each sampled line is checked in one mode, the modes taken in
turn, so every mode meets a quarter of the sample.
"""
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import zlib

import numpy as np
import pytest

import llama_cpp_tree
from conftest import GEMMA3, ROOT, SMOLLM2, fixtures_dir, model_path, report, run_strata

N_CORPUS = 32  # corpus lines per model
N_RANDOM = 8   # random cases per model (the fixture keeps only special_bos and plain_nobos for them)
MODES = ("special_bos", "plain_nobos", "special_nobos", "plain_bos")


def load_fixture(model_file):
    with open(os.path.join(fixtures_dir(), "tokenizer", os.path.splitext(model_file)[0] + ".json")) as f:
        return json.load(f)


def flags(mode):
    parse, bos = mode.split("_")
    return (["--parse-special"] if parse == "special" else []) + ([] if bos == "bos" else ["--no-special"])


def sample(fixture):
    """[(text bytes, mode, expected ids)] over a fixed spread of corpus and random cases."""
    out = []
    corpus = fixture["cases"]
    for n, k in enumerate(np.linspace(0, len(corpus) - 1, N_CORPUS).astype(int)):
        mode = MODES[n % 4]
        out.append((bytes.fromhex(corpus[k]["input_hex"]), mode, corpus[k]["ids"][mode]))
    randoms = fixture["random_cases"]
    for n, k in enumerate(np.linspace(0, len(randoms) - 1, N_RANDOM).astype(int)):
        mode = MODES[n % 2]
        out.append((bytes.fromhex(randoms[k]["input_hex"]), mode, randoms[k]["ids"][mode]))
    return out


def tokenize_file(model, text, extra, tmp_dir, n):
    path = os.path.join(tmp_dir, f"case{n}.txt")
    with open(path, "wb") as f:
        f.write(text)
    out = run_strata("tokenize", model, "-f", path, *extra).stdout.decode()
    return [int(t) for t in out.split()]


def check_cases(model, cases, tmp_dir):
    """Runs every case (in parallel: each is its own process) and returns the mismatches."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda nc: tokenize_file(model, nc[1][0], flags(nc[1][1]), tmp_dir, nc[0]),
                            enumerate(cases)))
    return [(text, mode, want, ids) for (text, mode, want), ids in zip(cases, got) if ids != want]


@pytest.mark.parametrize("model_file", [SMOLLM2, GEMMA3])
def test_tokenize_matches_llama_cpp(model_file, tmp_path):
    model = model_path(model_file)
    cases = sample(load_fixture(model_file))
    bad = check_cases(model, cases, str(tmp_path))
    report(f"tokenize {model_file}: {len(cases) - len(bad)}/{len(cases)} (text, mode) cases equal llama.cpp's ids")
    assert not bad, "\n".join(f"{mode} {text!r}: want {want} got {ids}" for text, mode, want, ids in bad[:5])


def test_tokenize_prompt_equals_file(tmp_path):
    model = model_path(SMOLLM2)
    text = "<|im_start|>user\nHello there!<|im_end|>\n"
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode())
    for extra in ([], ["--parse-special"], ["--no-special", "--parse-special"]):
        from_p = run_strata("tokenize", model, "-p", text, *extra).stdout
        from_f = run_strata("tokenize", model, "-f", path, *extra).stdout
        assert from_p == from_f


def unescape_piece(s):
    """Inverse of the CLI's --pieces escaping: \\n \\t \\r \\\\ and \\xHH."""
    out = bytearray()
    i = 0
    raw = s.encode("utf-8", errors="surrogateescape")
    while i < len(raw):
        if raw[i:i + 1] == b"\\":
            nxt = raw[i + 1:i + 2]
            if nxt == b"x":
                out.append(int(raw[i + 2:i + 4], 16))
                i += 4
                continue
            out += {b"n": b"\n", b"t": b"\t", b"r": b"\r", b"\\": b"\\"}[nxt]
            i += 2
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


def pieces(model, text, *extra):
    out = run_strata("tokenize", model, "-p", text, "--pieces", *extra).stdout.decode("utf-8", "surrogateescape")
    lines = out.split("\n")
    assert lines[-1] == "", "output ends with a newline"
    rows = []
    for line in lines[:-1]:
        m = re.fullmatch(r"(\d+)\t(.*)", line, re.S)
        assert m, f"--pieces line is not id<TAB>piece: {line!r}"
        rows.append((int(m.group(1)), unescape_piece(m.group(2))))
    return rows


def test_pieces_format():
    model = model_path(SMOLLM2)
    # Escaped characters, a literal backslash-n, UTF-8, an emoji split over byte tokens.
    text = "Hello,\tworld\r\nback\\slash \\n ünï 😀\x01 end"
    rows = pieces(model, text, "--no-special")
    ids = [int(t) for t in run_strata("tokenize", model, "-p", text, "--no-special").stdout.split()]
    assert [i for i, _ in rows] == ids
    assert b"".join(p for _, p in rows) == text.encode(), "pieces must rebuild the text byte for byte"
    # Special tokens print as their text when parsed.
    rows = pieces(model, "<|im_start|>user", "--parse-special")
    assert rows[0] == (1, b"<|im_start|>")


def test_pieces_show_bos():
    model = model_path(GEMMA3)
    fixture = load_fixture(GEMMA3)
    rows = pieces(model, "Hi")
    assert rows[0] == (fixture["bos"], b"<bos>")
    assert b"".join(p for _, p in rows[1:]) == b"Hi"


# --- a vocabulary-only GGUF: the tokenizer.* metadata of SmolLM2 and no tensors ---

@pytest.fixture(scope="module")
def vocab_only_gguf(tmp_path_factory):
    gguf = pytest.importorskip("gguf")
    src = model_path(SMOLLM2)
    reader = gguf.GGUFReader(src)
    dst = str(tmp_path_factory.mktemp("vocab") / "smollm2-vocab-only.gguf")
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch)  # the writer always records general.architecture
    n_copied = 0
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        sub_type = field.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), vtype, sub_type=sub_type)
        n_copied += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    check = gguf.GGUFReader(dst)
    assert len(check.tensors) == 0
    assert n_copied >= 5 and "tokenizer.ggml.tokens" in check.fields
    return dst


def test_vocab_only_gguf_tokenizes_identically(vocab_only_gguf, tmp_path):
    full = model_path(SMOLLM2)
    assert os.path.getsize(vocab_only_gguf) < os.path.getsize(full) // 10
    cases = sample(load_fixture(SMOLLM2))
    bad = check_cases(vocab_only_gguf, cases, str(tmp_path))
    report(f"tokenize vocab-only SmolLM2 GGUF ({os.path.getsize(vocab_only_gguf)} bytes, no tensors): "
           f"{len(cases) - len(bad)}/{len(cases)} cases equal llama.cpp's ids")
    assert not bad, "\n".join(f"{mode} {text!r}: want {want} got {ids}" for text, mode, want, ids in bad[:5])
    text = "<|im_start|>assistant\nThe answer is 42.\n\tDone!"
    assert pieces(vocab_only_gguf, text, "--parse-special") == pieces(full, text, "--parse-special")


# --- every vocabulary of llama.cpp's own test set (models/ggml-vocab-*.gguf) ---
# The vocabularies come from the llama.cpp tree (tests/py/llama_cpp_tree.py fetches it). llama_cpp
# tokenizes their .inp vectors, corpus.txt and random texts in all four modes and detokenizes the
# results; test_tokenizer's LlamaCppVocabs test then checks Strata against the .inp/.out vectors and
# that reference, vocabulary by vocabulary. The .out vectors cover one mode only, and four
# vocabularies (aquila, baichuan, gpt-neox, nomic-bert-moe) have none: the reference fills in.

N_RANDOM_VOCAB = 60  # random texts per vocabulary


def vocab_reference(models_dir):
    llama_cpp = pytest.importorskip("llama_cpp")
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import gen_tokenizer_fixtures as gen

    corpus = gen.read_corpus(os.path.join(fixtures_dir(), "tokenizer", "corpus.txt"))
    randoms = gen.random_cases(seed=16)[:N_RANDOM_VOCAB]
    out = {}
    for name in sorted(os.listdir(models_dir)):
        if not (name.startswith("ggml-vocab-") and name.endswith(".gguf")):
            continue
        path = os.path.join(models_dir, name)
        texts = []
        if os.path.exists(path + ".inp"):
            with open(path + ".inp", "rb") as f:
                texts = f.read().split(b"\n__ggml_vocab_test__\n")
        v = gen.Vocab(path)
        cases = []
        for text in texts + corpus + randoms:
            ids = {("special" if parse else "plain") + ("_bos" if add else "_nobos"): v.tokenize(text, add, parse)
                   for parse in (True, False) for add in (True, False)}
            detok = {f"{'remove' if rm else 'keep'}/{'unparse' if up else 'hide'}":
                     v.detokenize(ids["special_bos"], rm, up).hex() for rm in (False, True) for up in (False, True)}
            cases.append({"input_hex": text.hex(), "ids": ids, "detokenized_hex": detok})
        meta = {"bos": llama_cpp.llama_vocab_bos(v.vocab), "eos": llama_cpp.llama_vocab_eos(v.vocab),
                "eot": llama_cpp.llama_vocab_eot(v.vocab),
                "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(v.vocab)),
                "add_eos": bool(llama_cpp.llama_vocab_get_add_eos(v.vocab)),
                "eog": [t for t in range(v.n) if llama_cpp.llama_vocab_is_eog(v.vocab, t)]}
        # token_to_piece of every id: CRC-32 of (u32 length LE + bytes) over the whole vocabulary.
        pieces = {}
        for special in (True, False):
            crc = 0
            for t in range(v.n):
                p = v.piece(t, special)
                crc = zlib.crc32(len(p).to_bytes(4, "little") + p, crc)
            pieces["special" if special else "plain"] = crc
        llama_cpp.llama_model_free(v.model)
        out[name] = {"cases": cases, "n_vocab": v.n, "meta": meta, "pieces_crc32": pieces}
    return out


# Every tokenizer.ggml.pre name llama.cpp knows, put on one byte-level vocabulary (llama.cpp loads such
# variants vocab-only): each must tokenize the corpus as llama.cpp does or be refused by name.
VARIANT_BASE = "ggml-vocab-gpt-2.gguf"


def pre_variant_reference(tree, work):
    """{variant file: reference} and [(name, why)] for names llama.cpp itself cannot run."""
    with open(os.path.join(tree, "src", "llama-vocab.cpp"), encoding="utf-8") as f:
        names = sorted(set(re.findall(r'tokenizer_pre == "([^"]+)"', f.read())))
    assert len(names) > 50, "pre-tokenizer names not found in llama-vocab.cpp"
    script = os.path.join(ROOT, "scripts", "gen_tokenizer_fixtures.py")
    jsonl = os.path.join(work, "variants.jsonl")
    out, skipped = {}, []
    remaining = names
    while remaining:
        subprocess.run([sys.executable, script, "--pre-variants", os.path.join(tree, "models", VARIANT_BASE),
                        "--names", ",".join(remaining), "--dir", work, "--jsonl", jsonl],
                       capture_output=True, timeout=600)
        started, seen = None, set()
        with open(jsonl) as f:
            for line in f:
                row = json.loads(line)
                seen.add(row["name"])
                if row.get("started"):
                    started = row["name"]
                    continue
                started = None
                if row.get("aborted"):
                    continue
                if "cases" in row:
                    out[row["file"]] = {"cases": row["cases"]}
                else:
                    skipped.append((row["name"], "llama.cpp refuses it: " + row["llama_cpp_refuses"]))
        if started is not None:  # llama.cpp aborted on this one
            skipped.append((started, "llama.cpp aborts on it"))
            os.remove(os.path.join(work, f"ggml-vocab-variant-pre-{started}.gguf"))
            with open(jsonl, "a") as f:
                f.write(json.dumps({"name": started, "aborted": True}) + "\n")
        remaining = [n for n in names if n not in seen]
    return out, skipped


def test_llama_cpp_vocabularies(tmp_path):
    """Every ggml-vocab-*.gguf, and every pre-tokenizer name on one of them: Strata's ids and text
    equal llama.cpp's, or the vocabulary is refused by its type."""
    tree = llama_cpp_tree.fetch()
    models_dir = os.path.join(tree, "models")
    binary = llama_cpp_tree.gtest_binary("test_tokenizer")
    work = tmp_path / "vocabs"
    work.mkdir()
    for name in os.listdir(models_dir):
        os.symlink(os.path.join(models_dir, name), work / name)
    reference = vocab_reference(models_dir)
    variants, skipped = pre_variant_reference(tree, str(work))
    reference.update(variants)
    ref_path = tmp_path / "vocab-reference.json"
    ref_path.write_text(json.dumps(reference))
    env = dict(os.environ, STRATA_LLAMA_CPP_VOCABS=str(work), STRATA_VOCAB_REFERENCE=str(ref_path))
    proc = subprocess.run([binary, "--gtest_filter=LlamaCppVocabs.*"], env=env, capture_output=True, text=True,
                          timeout=600)
    lines = [line[len("[ vocab    ] "):] for line in proc.stdout.splitlines() if line.startswith("[ vocab    ] ")]
    for line in lines:
        if "-variant-pre-" not in line or "pass" not in line.split(":")[1]:
            report("vocab " + line.split(" (supported:")[0])
    for name, why in skipped:
        report(f"vocab pre-tokenizer '{name}' not compared: {why}")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert lines and "0 fail" in lines[-1]
