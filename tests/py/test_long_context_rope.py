"""RoPE scaling at long context against llama.cpp, run live on forged models (tiny: seconds).

A forged llama (random weights, SmolLM2's tokenizer) gets the metadata of a RoPE-scaled model:
context_length 8192 and rope.scaling.{type, factor, original_context_length}; both engines read
~4,550 tokens of real text (the GPL-3), so the last positions lie far beyond the original
context of 1,024 and beyond 4,096. Compared over the whole vocabulary: random weights give
near-tied logits, so the top-1 token is not compared. A two-layer random model barely reacts to
positions (its logits span ~1.25; YaRN against linear moves them by ~1e-3, factor 4 against 2 by
~2e-3), so the tolerance is absolute and tight: the engines agree to ~1e-4 (measured
2026-12-07), and test_rope_changes_exceed_the_tolerance shows the check can tell the scalings apart.
"""
import os
import struct
import sys

import numpy as np
import pytest

from conftest import ROOT, SMOLLM2, model_path, report, run_strata

gguf = pytest.importorskip("gguf")
llama_cpp = pytest.importorskip("llama_cpp")

TEXT = "/usr/share/common-licenses/GPL-3"
N_CHARS = 21500  # ~4,550 tokens
N_CTX = 8192
TOL = 2.5e-4  # max |ours - llama.cpp| over the vocabulary


sys.path.insert(0, os.path.join(ROOT, "scripts"))
import llama_plain  # noqa: E402

llama_plain.no_extra_buffers(llama_cpp)  # every Llama here on the plain CPU buffers (llama_plain says why)


def _kv(key, vtype, payload):
    k = key.encode()
    return struct.pack("<Q", len(k)) + k + struct.pack("<I", vtype) + payload


def with_rope_scaling(src, dst, arch, scaling, factor, n_ctx_orig):
    """Copies GGUF src to dst with context_length = N_CTX and rope.scaling.* keys added."""
    r = gguf.GGUFReader(src)
    data = bytearray(open(src, "rb").read())

    def end(field):
        return int(field.offset) + sum(int(p.nbytes) for p in field.parts)

    ctx = r.fields[f"{arch}.context_length"]
    value_at = int(ctx.offset) + sum(int(p.nbytes) for p in ctx.parts[:-1])
    data[value_at:value_at + 4] = struct.pack("<I", N_CTX)
    kv_fields = [f for name, f in r.fields.items() if not name.startswith("GGUF.")]
    kv_end = max(end(f) for f in kv_fields)
    ti_end = max(end(t.field) for t in r.tensors)
    extra = (_kv(f"{arch}.rope.scaling.type", 8, struct.pack("<Q", len(scaling)) + scaling.encode()) +
             _kv(f"{arch}.rope.scaling.factor", 6, struct.pack("<f", factor)) +
             _kv(f"{arch}.rope.scaling.original_context_length", 4, struct.pack("<I", n_ctx_orig)))
    n_kv = struct.unpack_from("<Q", data, 16)[0]
    struct.pack_into("<Q", data, 16, n_kv + 3)
    head = bytes(data[:kv_end]) + extra + bytes(data[kv_end:ti_end])
    pad = (-len(head)) % int(r.alignment)
    with open(dst, "wb") as f:
        f.write(head + b"\0" * pad + bytes(data[int(r.data_offset):]))


@pytest.mark.parametrize("arch,scaling,factor,kv_type", [("llama", "yarn", 4.0, "f16"), ("llama", "linear", 4.0, "f16"),
                                                         ("qwen3", "yarn", 8.0, "q8_0")])
def test_rope_scaled_forged_model_matches_llama_cpp(tmp_path, arch, scaling, factor, kv_type):
    tokenizer = model_path(SMOLLM2)
    if not os.path.isfile(TEXT):
        pytest.skip(f"{TEXT} not present")
    with open(TEXT, encoding="utf-8") as f:
        text = f.read()[:N_CHARS]
    forged = tmp_path / "forged.gguf"
    scaled = tmp_path / "scaled.gguf"
    run_strata("forge", "--arch", arch, "--preset", "tiny", "--type", "F16", "--seed", 7, "--tokenizer-from",
               tokenizer, "--out", forged)
    with_rope_scaling(str(forged), str(scaled), arch, scaling, factor, 1024)

    ggml_type = {"f16": llama_cpp.GGML_TYPE_F16, "q8_0": llama_cpp.GGML_TYPE_Q8_0}[kv_type]
    llm = llama_cpp.Llama(model_path=str(scaled), n_ctx=N_CTX, n_batch=512, n_threads=2, logits_all=False,
                          flash_attn=kv_type != "f16", type_k=ggml_type, type_v=ggml_type, verbose=False)
    tokens = llm.tokenize(text.encode(), add_bos=True, special=True)
    assert len(tokens) > 4200
    llm.eval(tokens)
    ref = np.array(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)), dtype=np.float32)
    del llm

    ids = run_strata("tokenize", scaled, "-p", text, "--parse-special").stdout.split()
    assert [int(t) for t in ids] == list(tokens)
    out = tmp_path / "logits.bin"
    run_strata("logits", scaled, "-c", N_CTX, "--kv-type", kv_type, "-p", text, "--top", 0, "--out", out)
    ours = np.fromfile(out, dtype="<f4")
    assert ours.shape == ref.shape
    worst = float(np.max(np.abs(ours - ref)))
    report(f"rope {scaling} x{factor} {arch} kv {kv_type}, position {len(tokens) - 1}: max |diff| {worst:.6f} "
           f"(tol {TOL}; logit range {float(ref.max() - ref.min()):.3f})")
    assert worst <= TOL


def test_rope_changes_exceed_the_tolerance(tmp_path):
    """The check above can fail: YaRN against linear, and factor 4 against 2, move the logits by
    several tolerances."""
    tokenizer = model_path(SMOLLM2)
    if not os.path.isfile(TEXT):
        pytest.skip(f"{TEXT} not present")
    with open(TEXT, encoding="utf-8") as f:
        text = f.read()[:N_CHARS]
    forged = tmp_path / "forged.gguf"
    run_strata("forge", "--arch", "llama", "--preset", "tiny", "--type", "F16", "--seed", 7, "--tokenizer-from",
               tokenizer, "--out", forged)
    runs = {}
    for scaling, factor in (("yarn", 4.0), ("linear", 4.0), ("yarn", 2.0)):
        scaled = tmp_path / f"{scaling}{factor}.gguf"
        with_rope_scaling(str(forged), str(scaled), "llama", scaling, factor, 1024)
        out = tmp_path / f"{scaling}{factor}.bin"
        run_strata("logits", scaled, "-c", N_CTX, "-p", text, "--top", 0, "--out", out)
        runs[(scaling, factor)] = np.fromfile(out, dtype="<f4")
    assert float(np.max(np.abs(runs[("yarn", 4.0)] - runs[("linear", 4.0)]))) > 2 * TOL
    assert float(np.max(np.abs(runs[("yarn", 4.0)] - runs[("yarn", 2.0)]))) > 4 * TOL
